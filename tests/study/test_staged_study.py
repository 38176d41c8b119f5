"""A staged study end to end through the real runner (experiments/grid.py on local Ray): sequential,
mixed-sequential and DMT at two replay fractions on a tiny model. Every stage starts from the previous
stage's final export, and the DMT cells (and mixed-sequential, whose first stage is the same) train their
shared stage 1 once."""
from __future__ import annotations

import subprocess

import pytest

from doitray.store import ResultsStore

from studykit import child_env, grid_cmd

pytestmark = pytest.mark.slow

SPECIALIST, GENERAL = ["math", "code"], ["history", "biology"]
STAGES = {("sequential", 0.0): ["seq-math", "seq-code", "general"],
          ("mixed_sequential", 0.0): ["specialist", "general"],
          ("dmt", 0.25): ["specialist", "general+replay-0.25"],
          ("dmt", 1.0): ["specialist", "general+replay-1"]}


def test_staged_strategies_end_to_end(write_study):
    study, storage = write_study(
        abilities=SPECIALIST + GENERAL,
        roles={"specialist": SPECIALIST, "general": GENERAL},
        factors={"model": ["xs"], "per_ability": [16], "strategy": ["sequential", "mixed_sequential", "dmt"],
                 "replay_frac": [0.25, 1.0]},
        training={"preset": "tiny", "epochs": 1, "seq_len": 128, "global_batch": 2, "micro_batch": 2},  # a few steps
        data_preparation="upfront",
        evaluation={"select": "last", "evaluate": "selected", "max_new_tokens": 8, "valid_loss_per_ability": 4,
                    "suites": [{"limit_per_ability": 2, "ood": False}], "engine": {"shared": True}})
    p = subprocess.run(grid_cmd(study, "--no-report"), capture_output=True, text=True, timeout=900, env=child_env(),
                       start_new_session=True)
    assert p.returncode == 0, f"exit {p.returncode}\nSTDOUT\n{p.stdout[-3000:]}\nSTDERR\n{p.stderr[-6000:]}"
    assert "4/4 cells done, 0 failed" in p.stdout

    store = ResultsStore(str(storage))
    cells = store.read("cells")
    assert (cells["state"] == "done").all() and len(cells) == 4
    cid = {(r["strategy"], float(r["replay_frac"])): r["cell_id"] for r in cells.to_dict("records")}
    assert set(cid) == set(STAGES)

    ckpts = store.read("checkpoints")
    for levels, names in STAGES.items():  # one Train stage per strategy stage, in order, under its live name
        mine = ckpts[ckpts["cell_id"] == cid[levels]]
        assert dict(zip(mine["stage"], mine["stage_name"])) == dict(enumerate(names)), levels
        assert mine["hf_path"].notna().all() and mine.groupby("stage").size().eq(1).all()  # 1 epoch, last export

    def stage(levels, i):
        mine = ckpts[(ckpts["cell_id"] == cid[levels]) & (ckpts["stage"] == i)]
        return mine.iloc[0]

    # the specialist stage is one Train run for the three cells that start with it ...
    shared = [stage(lv, 0) for lv in STAGES if lv[0] != "sequential"]
    assert len({(s["path"], s["hf_path"]) for s in shared}) == 1
    assert len(list((storage / "train").glob("specialist-*"))) == 1
    # ... trained by the first of them only: the others found it complete (nothing left to resume)
    metrics = store.read("train_metrics")
    resumed = {lv: metrics[(metrics["cell_id"] == cid[lv]) & (metrics["stage"] == 0)
                           & (metrics["metric"] == "resumed_from_step")]["value"].item() for lv in STAGES}
    last_step = int(shared[0]["step"])
    assert sorted(resumed[lv] for lv in STAGES if lv[0] != "sequential") == [0, last_step, last_step]
    # their second stages differ (different data), each a run of its own
    seconds = {(stage(lv, 1)["path"]) for lv in STAGES}
    assert len(seconds) == 4 and len(list((storage / "train").glob("general*"))) == 4

    # each stage started from the previous stage's weights: its first training loss is below the first
    # stage's first loss (a model from scratch)
    def first_loss(levels, i):
        m = metrics[(metrics["cell_id"] == cid[levels]) & (metrics["stage"] == i) & (metrics["metric"] == "train_loss")]
        return m.sort_values("step")["value"].iloc[0]

    for levels, names in STAGES.items():
        for i in range(1, len(names)):
            assert first_loss(levels, i) < first_loss(levels, 0) - 0.1, (levels, i)

    scores = store.read("scores")
    test = scores[scores["split"] == "test"]
    assert set(test["cell_id"]) == set(cid.values())
    assert set(test["ability"]) - {"overall"} == set(SPECIALIST + GENERAL)
    # a cell is scored at its last stage's checkpoint
    for levels, names in STAGES.items():
        assert set(test[test["cell_id"] == cid[levels]]["stage"]) == {len(names) - 1}
