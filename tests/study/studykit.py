"""Helpers of the study tests: a tiny real study document, the grid command, a clean child env."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
GRID = REPO / "experiments" / "grid.py"


def tiny_study(storage: Path, volumes=(40, 80), **over) -> dict:
    doc = {
        "name": "e2e",
        "storage": str(storage),
        "sources": [{"name": "suite", "format": "synthetic",
                     "options": {"seed": 0, "train": 200, "valid": 8, "test": 6, "synthetic": 50}}],
        "template": "doit",
        "tokenizer": {"train_vocab_size": 512},
        "models": {"xs": {"preset": "tiny-xs", "init": "scratch"}},
        "factors": {"model": ["xs"], "volume": list(volumes)},
        "training": {"preset": "tiny", "epochs": 2, "seq_len": 128, "global_batch": 8, "micro_batch": 8},
        "checkpoints": {"every": "epoch"},
        "evaluation": {"select": "valid_loss", "evaluate": "selected", "max_new_tokens": 8},
        "resources": {"default": {"workers": 1, "cpus_per_worker": 1}},
        "concurrency": 1,
        "max_retries": 0,
    }
    doc.update(over)
    return doc


def grid_cmd(study: Path, *extra: str) -> list[str]:
    return [sys.executable, str(GRID), "--study", str(study), *extra]


def child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false",
           "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    # the venv first on PATH, as on a cluster image: a job's `python` entrypoint is this interpreter
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
