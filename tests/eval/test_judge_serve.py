"""MT-Bench through real deployments: a tiny checkpoint answers both turns (Serve + vLLM on CPU) and a tiny judge
model, served as a second deployment by the same engine code, grades each turn with FastChat's prompts.

The tiny judge is a random model: its "judgments" are noise and carry no ``[[n]]`` rating, so every judgment is
unparsable. What this checks is the plumbing: two turns asked, each turn's grading prompt served by the judge
deployment, unparsable judgments counted and the items not scored, and the part failing visibly (nothing scored
from a judge that cannot be read)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1] / "assets" / "benchmarks" / "mt_bench" / "data"


def test_mt_bench_two_turns_and_a_served_judge(ray_local, tiny_checkpoint, tiny_tokenizer_dir, tmp_path):
    from ray import serve

    from evalkit import build_tiny_checkpoint
    from doitray.eval.benchmarks import JudgeSpec, SuiteSpec, build_benchmark
    from doitray.eval.evaluate import evaluate_checkpoint

    judge_dir = build_tiny_checkpoint(tiny_tokenizer_dir, tmp_path / "judge", seed=7)
    suite = build_benchmark(SuiteSpec(kind="mt_bench", path=str(DATA), judge=JudgeSpec(
        path=judge_dir, template="doit", max_tokens=16, engine={"max_model_len": 1024, "dtype": "float32"})))
    suite.max_tokens = 8
    before = set(serve.status().applications)
    res = evaluate_checkpoint(tiny_checkpoint, [suite], template="doit", cell_id="c", checkpoint="k",
                              engine_options={"max_model_len": 1024, "dtype": "float32"})
    preds = {p["item_id"]: p for p in res.predictions}
    assert set(preds) == {"mt_bench-81", "mt_bench-101", "mt_bench-111", "mt_bench-121"}
    for p in preds.values():
        turns = json.loads(p["prediction"])  # both turns answered, the second after the first
        assert isinstance(turns, list) and len(turns) == 2
        assert p["metric"] == f"judge:{judge_dir}"
        # a random judge: its judgments are counted (none parsable), the item is not scored
        assert p["error"] == "no judge rating could be parsed" or 0 <= p["score"] <= 1
    assert res.failures and res.failures[0].suite == "mt_bench" and res.failures[0].n_engine == 0
    assert set(serve.status().applications) <= before  # both deployments (checkpoint, judge) were torn down
