"""The shipped mini DMT study (experiments/studies/mini-dmt.yaml) end to end through the real runner
(experiments/grid.py on local Ray, two cells at once): multi-task, sequential, mixed-sequential and DMT at two
replay fractions on a tiny model. Every stage starts from the previous stage's final export; the three cells that
start with the specialist stage train it once (one owner, the others wait: no collision, no retry); the report
draws the strategy comparison, the k trade-off and the forgetting views from the store."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from doitray.store import ResultsStore

from studykit import REPO, child_env, grid_cmd

pytestmark = pytest.mark.slow

MINI_DMT = REPO / "experiments" / "studies" / "mini-dmt.yaml"
SPECIALIST, GENERAL = ["math", "code"], ["understanding"]
STAGES = {("multitask", 0.0): ["multitask"],
          ("sequential", 0.0): ["seq-math", "seq-code", "general"],
          ("mixed_sequential", 0.0): ["specialist", "general"],
          ("dmt", 0.25): ["specialist", "general+replay-0.25"],
          ("dmt", 1.0): ["specialist", "general+replay-1"]}
STAGED = {lv: names for lv, names in STAGES.items() if len(names) > 1}


def test_mini_dmt_study_end_to_end(tmp_path: Path):
    storage = tmp_path / "store"
    p = subprocess.run(grid_cmd(MINI_DMT, "--storage", str(storage)), capture_output=True, text=True, timeout=1200,
                       env=child_env(), start_new_session=True)
    assert p.returncode == 0, f"exit {p.returncode}\nSTDOUT\n{p.stdout[-3000:]}\nSTDERR\n{p.stderr[-6000:]}"
    assert "5/5 cells done, 0 failed" in p.stdout

    store = ResultsStore(str(storage))
    cells = store.read("cells")
    assert (cells["state"] == "done").all() and len(cells) == 5
    assert (cells["attempts"] == 1).all()          # no cell failed on another's half-written stage and retried
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
    sharing = [lv for lv in STAGED if lv[0] != "sequential"]
    shared = [stage(lv, 0) for lv in sharing]
    assert len({(s["path"], s["hf_path"]) for s in shared}) == 1
    assert len(list((storage / "train").glob("specialist-*"))) == 1
    # ... trained by one of them: the others found it complete (waiting for its owner if it was running)
    metrics = store.read("train_metrics")

    def stage_metric(lv, name):
        m = metrics[(metrics["cell_id"] == cid[lv]) & (metrics["stage"] == 0) & (metrics["metric"] == name)]
        return m["value"].item()

    last_step = int(shared[0]["step"])
    assert sorted(stage_metric(lv, "resumed_from_step") for lv in sharing) == [0, last_step, last_step]
    assert sorted(stage_metric(lv, "stage_reused") for lv in sharing) == [0.0, 1.0, 1.0]
    # their second stages differ (different data), each a run of its own
    assert len({stage(lv, 1)["path"] for lv in STAGED}) == 4 and len(list((storage / "train").glob("general*"))) == 4

    # each stage started from the previous stage's weights: its first training loss is below the first
    # stage's first loss (a model from scratch)
    def first_loss(levels, i):
        m = metrics[(metrics["cell_id"] == cid[levels]) & (metrics["stage"] == i) & (metrics["metric"] == "train_loss")]
        return m.sort_values("step")["value"].iloc[0]

    for levels, names in STAGED.items():
        for i in range(1, len(names)):
            assert first_loss(levels, i) < first_loss(levels, 0) - 0.1, (levels, i)

    scores = store.read("scores")
    test = scores[scores["split"] == "test"]
    assert set(test["cell_id"]) == set(cid.values())
    assert set(test["ability"]) - {"overall"} == set(SPECIALIST + GENERAL)
    # evaluate: all: every stage's checkpoint of every cell is scored (forgetting across stages)
    for levels, names in STAGES.items():
        assert set(test[test["cell_id"] == cid[levels]]["stage"]) == set(range(len(names))), levels

    # the report draws the DMT views from this store
    [html] = [line.split("report:", 1)[1].strip() for line in p.stdout.splitlines() if line.startswith("report:")]
    page = Path(html).read_text()
    for key in ("strategy", "k_sweep", "forgetting"):
        assert f"data-figure='{key}'" in page, key
    text = subprocess.run([str(Path(sys.executable).with_name("doitray")), "report", str(storage), "--text"],
                          capture_output=True, text=True, timeout=300, env=child_env())
    assert text.returncode == 0, text.stderr[-3000:]
    for section in ("Scores by strategy", "DMT k sweep", "Forgetting (best before last stage"):
        assert section in text.stdout, section
