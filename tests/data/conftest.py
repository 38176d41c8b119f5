"""Fixtures of the data tests: small source files written here, a small generated suite and its pool."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

SMALL_SUITE = {"seed": 3, "train": 60, "valid": 8, "test": 8, "synthetic": 30}


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def doit_row(ability: str, idx, user: str = "Q?\nA. x\nB. y", reply: str = "A", **extra) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}], "type": ability,
            "idx": idx, "question_format": 0, **extra}


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data_cache")


@pytest.fixture(scope="session")
def small_pool(data_cache):
    """The generated suite at small sizes, loaded as a pool (shared by the sampling/pipeline tests)."""
    from doitray.data.sources import SourceSpec, load_pool

    return load_pool([SourceSpec(name="suite", format="synthetic", options=SMALL_SUITE)], data_cache)
