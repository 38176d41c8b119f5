"""A frozen step -> train_loss curve of a tiny CPU run (as torchtitan keeps in tests/assets/losses/).

The run goes through the project's own training path: ``doitray.train.stage.run_stage`` on the session's
local Ray, one Ray Train worker (gloo, FSDP2 on CPU), ``tiny-xs`` initialised from ``seed``, the session's
tiny tokenizer (tests/conftest.py) and a fixed packed dataset built the way trainkit builds it. Each step's
``train_loss`` (from ``StageResult.metrics``) must match ``tests/assets/losses/tiny_xs.json`` within
``tolerance``: a refactor of the loop, the step, the model build, the sampling order, the loss masking or
the optimizer that changes the numbers shows up here, step by step.

If a change is meant to change the numbers, regenerate the file (its ``regenerate`` field says how) and say
so in the commit.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pytest

from trainkit import SEQ, arithmetic_messages, write_packed

pytestmark = pytest.mark.slow

GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "losses" / "tiny_xs.json"
REGEN_ENV = "DOITRAY_REGEN_LOSSES"
REGENERATE = (f"{REGEN_ENV}=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/train/test_loss_golden.py "
              f"(rewrites this file instead of comparing)")
# Run-to-run spread seen on one machine: identical to the last bit (0.0) over repeated runs; the tolerance
# leaves room for another CPU's float reduction order, far below what a real change in the path moves.
TOLERANCE = {"rel": 1e-4, "abs": 1e-5}

RUN = {"model": "tiny-xs", "workers": 1, "steps": 10, "examples": 160, "data_seed": 0, "seq_len": SEQ,
       "settings": dict(seq_len=SEQ, max_steps=10, global_batch=8, micro_batch=2, lr=3e-3, end_lr=3e-4,
                        warmup_ratio=0.1, seed=0)}


def _run(ray_local, tok, tiny_tokenizer_dir, root: Path) -> dict[int, float]:
    from doitray.train.settings import CheckpointPolicy, TrainSettings
    from doitray.train.stage import StageSpec, run_stage

    data = write_packed(root / "train", tok, arithmetic_messages(RUN["examples"], seed=RUN["data_seed"]), SEQ)
    spec = StageSpec(name="golden", model=RUN["model"], tokenizer_dir=tiny_tokenizer_dir, train_data=data,
                     settings=TrainSettings.preset("tiny", **RUN["settings"]),
                     checkpoint=CheckpointPolicy(every="last", num_to_keep=1, export="last"),
                     storage_path=str(root / "storage"), cache_dir=str(root / "cache"), num_workers=RUN["workers"])
    res = run_stage(spec)
    assert not res.reused
    return {int(r["step"]): float(r["value"]) for r in res.metrics if r["metric"] == "train_loss"}


def test_tiny_xs_loss_curve_matches_the_frozen_file(ray_local, tok, tiny_tokenizer_dir, tmp_path):
    loss = _run(ray_local, tok, tiny_tokenizer_dir, tmp_path)
    assert sorted(loss) == list(range(1, RUN["steps"] + 1)), sorted(loss)

    if os.environ.get(REGEN_ENV) == "1":
        import torch

        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps({
            "description": "train_loss per optimizer step of a tiny CPU run through doitray.train.stage.run_stage "
                           "(tests/train/test_loss_golden.py compares every step within 'tolerance')",
            "regenerate": REGENERATE,
            "run": RUN,
            "tolerance": TOLERANCE,
            "generated_with": {"torch": torch.__version__, "python": platform.python_version(),
                               "machine": platform.machine()},
            "train_loss": {str(s): loss[s] for s in sorted(loss)},
        }, indent=2) + "\n")
        pytest.skip(f"{REGEN_ENV}=1: rewrote {GOLDEN}")

    golden = json.loads(GOLDEN.read_text())
    assert golden["run"] == json.loads(json.dumps(RUN)), (
        f"the run in {GOLDEN.name} differs from this test's RUN; regenerate: {golden['regenerate']}")
    want = {int(s): v for s, v in golden["train_loss"].items()}
    assert sorted(want) == sorted(loss)
    tol = golden["tolerance"]
    off = [f"  step {s}: {loss[s]:.8f} vs frozen {want[s]:.8f} (diff {loss[s] - want[s]:+.2e})"
           for s in sorted(want) if loss[s] != pytest.approx(want[s], rel=tol["rel"], abs=tol["abs"])]
    assert not off, (f"train_loss left the frozen curve {GOLDEN.name} (rel {tol['rel']}, abs {tol['abs']}):\n"
                     + "\n".join(off) + f"\nIf the change is intended, regenerate: {golden['regenerate']}")
