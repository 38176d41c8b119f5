"""Eval fixtures (helpers are in evalkit.py)."""
from __future__ import annotations

import pytest

from evalkit import build_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_tokenizer_dir, tmp_path_factory) -> str:
    return build_tiny_checkpoint(tiny_tokenizer_dir, tmp_path_factory.mktemp("tiny-llama") / "hf")
