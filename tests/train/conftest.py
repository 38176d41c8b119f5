"""Train fixtures: packed Parquet of a learnable task (written to the data contract) and one shared
2-worker reference run reused by the shard / checkpoint / export / recovery tests."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from trainkit import SEQ, arithmetic_messages, make_spec, write_packed  # noqa: E402,F401



@pytest.fixture(scope="session")
def tok(tiny_tokenizer_dir):
    from doitray.data.templates import get_template
    from doitray.data.tokenizer import load_tokenizer

    return load_tokenizer(tiny_tokenizer_dir, get_template("doit"))


@pytest.fixture(scope="session")
def packed(tmp_path_factory, tok):
    """train (list columns) / valid (Ray tensor-extension columns) packed directories."""
    root = tmp_path_factory.mktemp("packed")
    return {"train": write_packed(root / "train", tok, arithmetic_messages(240, seed=0), SEQ),
            "valid": write_packed(root / "valid", tok, arithmetic_messages(48, seed=1), SEQ, tensor_columns=True)}


@pytest.fixture(scope="session")
def train_root(tmp_path_factory):
    return tmp_path_factory.mktemp("train_runs")


@pytest.fixture(scope="session")
def ref_run(ray_local, train_root, tiny_tokenizer_dir, packed):
    """The uninterrupted reference: tiny-s, 2 workers (gloo, FSDP2), 4 epochs, a checkpoint per epoch."""
    from doitray.train.stage import run_stage

    spec = make_spec(train_root, tiny_tokenizer_dir, packed, run_name="reference")
    return spec, run_stage(spec)
