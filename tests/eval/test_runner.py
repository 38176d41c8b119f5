"""Aggregation into store rows, bootstrap intervals, checkpoint selection (no engine needed)."""
from __future__ import annotations

import pytest

from doitray.eval.runner import items_of, score
from doitray.eval.scorers import ModelOutput
from doitray.eval.stats import bootstrap_ci, select_checkpoint
from doitray.eval.suites import from_records
from doitray.records import make_record

PRED_COLS = {"cell_id", "checkpoint", "suite", "split", "item_id", "ability", "metric", "prediction", "parsed", "gold",
             "score", "chance", "error"}
SCORE_COLS = {"cell_id", "checkpoint", "stage", "step", "epoch", "suite", "split", "ability", "metric", "value", "n",
              "chance", "ci_low", "ci_high"}
Q = "题\nA. 甲\nB. 乙\nC. 丙\nD. 丁"


def mc(i, ability, gold):
    return make_record(id=f"{ability}{i}", ability=ability, source="t", split="valid",
                       messages=[{"role": "user", "content": Q}, {"role": "assistant", "content": gold}])


def test_score_rows_true_mean_chance_ci_and_overall():
    recs = [mc(i, "biology", "A") for i in range(4)] + [mc(i, "reasoning", "B") for i in range(2)]
    suite = from_records("doit", recs, "valid")
    items = items_of([suite])
    outs = [ModelOutput(text=t) for t in ["A", "A", "A", "C", "B", None]]
    outs[-1].error = "engine: timeout"
    res = score(items, outs, cell_id="c1", checkpoint="ck1", stage=1, step=10, epoch=2.0, seed=3)
    assert len(res.predictions) == 6 and all(set(p) == PRED_COLS for p in res.predictions)
    failed = [p for p in res.predictions if p["error"]]
    assert len(failed) == 1 and failed[0]["score"] == 0.0  # kept, scored 0, with its error
    rows = {r["ability"]: r for r in res.scores}
    assert set(rows) == {"biology", "reasoning", "overall"} and all(set(r) == SCORE_COLS for r in res.scores)
    assert rows["biology"]["value"] == pytest.approx(0.75) and rows["biology"]["n"] == 4
    assert rows["biology"]["chance"] == pytest.approx(0.25)
    assert rows["reasoning"]["value"] == pytest.approx(0.5)
    # the true mean over abilities, not DoIT's halved average
    assert rows["overall"]["value"] == pytest.approx((0.75 + 0.5) / 2) and rows["overall"]["n"] == 6
    for r in res.scores:
        assert 0.0 <= r["ci_low"] <= r["value"] <= r["ci_high"] <= 1.0
        assert (r["stage"], r["step"], r["epoch"], r["split"]) == (1, 10, 2.0, "valid")
    again = score(items, outs, cell_id="c1", checkpoint="ck1", seed=3)
    assert [r["ci_low"] for r in again.scores] == [r["ci_low"] for r in res.scores]  # seeded


def test_bootstrap_ci_narrows_with_more_items():
    small, _ = bootstrap_ci({"a": [1, 0] * 5}, seed=0)
    big, _ = bootstrap_ci({"a": [1, 0] * 500}, seed=0)
    assert small["a"][1] - small["a"][0] > big["a"][1] - big["a"][0] > 0
    const, overall = bootstrap_ci({"a": [1.0] * 7, "b": [0.0] * 3}, seed=1)
    assert const["a"] == (1.0, 1.0) and overall == (0.5, 0.5)


def test_select_checkpoint_rules():
    rows = [
        {"checkpoint": "e1", "step": 10, "split": "valid", "ability": "overall", "value": 0.4},
        {"checkpoint": "e2", "step": 20, "split": "valid", "ability": "overall", "value": 0.6},
        {"checkpoint": "e3", "step": 30, "split": "valid", "ability": "overall", "value": 0.6},
        {"checkpoint": "e3", "step": 30, "split": "test", "ability": "overall", "value": 0.9},
    ]
    assert select_checkpoint(rows, "valid_avg") == "e2"  # tie -> earlier step; test split ignored
    assert select_checkpoint(rows, "last") == "e3"
    assert select_checkpoint({"e1": 1.2, "e2": 0.9, "e3": 1.0}, "valid_loss") == "e2"
    no_overall = [{"checkpoint": c, "step": s, "split": "valid", "ability": a, "value": v}
                  for c, s, a, v in [("a", 1, "x", 0.2), ("a", 1, "y", 0.8), ("b", 2, "x", 0.4), ("b", 2, "y", 0.4)]]
    assert select_checkpoint(no_overall, "valid_avg") == "a"
    with pytest.raises(ValueError, match="allowed: valid_avg, valid_loss, last"):
        select_checkpoint(rows, "best")
    with pytest.raises(ValueError, match="no valid-split"):
        select_checkpoint([r for r in rows if r["split"] == "test"], "valid_avg")
