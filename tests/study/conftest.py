"""Fixtures of the study tests (helpers are in studykit.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from studykit import tiny_study


@pytest.fixture
def write_study(tmp_path):
    """Write a tiny real study (see ``studykit.tiny_study``) and return (study file, storage dir)."""
    def _write(**over) -> tuple[Path, Path]:
        storage = tmp_path / "store"
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump(tiny_study(storage, **over)))
        return path, storage

    return _write
