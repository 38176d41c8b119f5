"""A study file with benchmark suites plans, runs and reports them (experiments/grid.py on a local Ray, a tiny
model): the pool suite and CMMLU 5-shot, AGIEval, GSM8K scored per (checkpoint, suite) on the reported checkpoint,
each benchmark its own report panel; adding a suite to a finished study scores only that suite."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from doitray.store import ResultsStore

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "tests" / "assets" / "benchmarks"


def _env() -> dict:
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false",
           "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def _study(tmp_path: Path, suites: list[dict]) -> Path:
    doc = {"name": "bench", "storage": str(tmp_path / "store"),
           "sources": [{"name": "suite", "format": "synthetic",
                        "options": {"seed": 0, "train": 100, "valid": 4, "test": 4, "synthetic": 0}}],
           "template": "doit", "tokenizer": {"train_vocab_size": 512},
           "models": {"xs": {"preset": "tiny-xs", "init": "scratch"}}, "factors": {"model": ["xs"], "volume": [40]},
           "training": {"preset": "tiny", "epochs": 1, "seq_len": 128, "global_batch": 8, "micro_batch": 8},
           "checkpoints": {"every": "epoch"},
           "evaluation": {"select": "last", "evaluate": "selected", "max_new_tokens": 8, "valid_loss_per_ability": 4,
                          "engine": {"shared": True}, "suites": suites},
           "resources": {"default": {"workers": 1, "cpus_per_worker": 1}}, "concurrency": 1, "max_retries": 0}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _grid(study: Path, *extra: str) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, str(REPO / "experiments" / "grid.py"), "--study", str(study), *extra],
                       capture_output=True, text=True, timeout=1200, env=_env(), start_new_session=True)
    assert p.returncode == 0, f"exit {p.returncode}\nSTDOUT\n{p.stdout[-3000:]}\nSTDERR\n{p.stderr[-6000:]}"
    return p


def test_study_with_benchmark_suites_plans_runs_and_reports(tmp_path, capsys):
    from doitray.cli import main

    pool = {"kind": "pool", "limit_per_ability": 1, "ood": False}
    suites = [pool, {"kind": "cmmlu", "path": str(ASSETS / "cmmlu"), "shots": 5},
              {"kind": "gsm8k", "path": str(ASSETS / "gsm8k" / "test.jsonl")}]
    study = _study(tmp_path, suites)
    assert main(["study", "plan", str(study)]) == 0
    out = capsys.readouterr().out
    assert "evaluation suites" in out and "cmmlu_5shot  cmmlu" in out and "gsm8k" in out

    _grid(study)
    store = ResultsStore(str(tmp_path / "store"))
    scores = store.read("scores")
    test = scores[scores["split"] == "test"]
    assert set(test["suite"]) == {"doit", "cmmlu_5shot", "gsm8k"}
    assert set(scores[scores["split"] == "valid"]["suite"]) <= {"doit"}  # benchmarks never select
    cm = test[test["suite"] == "cmmlu_5shot"].set_index("ability")
    assert set(cm.index) == {"China specific", "Humanities", "overall"} and (cm["chance"] == 0.25).all()
    preds = store.read("predictions")
    assert preds[preds["suite"] == "cmmlu_5shot"]["error"].isna().all()
    html = (tmp_path / "store" / "report.html").read_text(encoding="utf-8")
    assert "bench-cmmlu_5shot" in html and "CMMLU — suite cmmlu_5shot" in html and "bench-gsm8k" in html

    # a suite added to the finished study: same cell, only the new suite is scored
    cells_before = set(store.read("cells")["cell_id"])
    n_before = len(scores)
    _grid(_study(tmp_path, [*suites, {"kind": "agieval", "path": str(ASSETS / "agieval")}]), "--no-report")
    after = store.read("scores")
    assert set(store.read("cells")["cell_id"]) == cells_before
    assert set(after["suite"]) == {"doit", "cmmlu_5shot", "gsm8k", "agieval_0shot"}
    assert len(after[after["suite"] != "agieval_0shot"]) == n_before  # the other suites were not scored again
    ckpts = store.read("checkpoints")
    assert len(ckpts) == len(ckpts.drop_duplicates(["cell_id", "checkpoint"]))  # nothing trained again
