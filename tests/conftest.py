"""Shared fixtures: the real-data folder, one local Ray for the session, a tiny tokenizer.

Area-specific fixtures live in tests/<area>/conftest.py.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DOITRAY_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real public data); tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits beside the checkout in dev and CI)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray cluster for the whole session (4 logical CPUs, no dashboard)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, runtime_env={"env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}})
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


TOKENIZER_TEXTS = [
    f"<user>What is {a} plus {b}?<eot><assistant>{a} plus {b} is {a + b}.<eot>" for a in range(40) for b in range(0, 40, 3)
] + ["The quick brown fox jumps over the lazy dog. 天地玄黄 宇宙洪荒 def f(x): return x * 2"] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> str:
    """A byte-level BPE tokenizer (vocab 512) with the DoIT template's special tokens."""
    from doitray.data.templates import get_template
    from doitray.data.tokenizer import train_tokenizer

    return train_tokenizer(TOKENIZER_TEXTS, tmp_path_factory.mktemp("tok"), vocab_size=512,
                           template=get_template("doit"))
