"""``select_checkpoint``, the rule ``CellRun.evaluate`` applies, with the rows and closure the cell passes."""
from __future__ import annotations

import pytest

from doitray.eval.selection import select_checkpoint


def ckpts(*losses):
    """Checkpoint rows as the cell builds them (export order), with these valid losses."""
    return [{"checkpoint": f"epoch{i + 1}", "step": 10 * (i + 1), "valid_loss": v} for i, v in enumerate(losses)]


def scorer(avgs, calls=None):
    """The cell's ``run(c, stage, "valid")``: a checkpoint's valid-split score rows (suites + overall)."""
    def valid_scores(name):
        if calls is not None:
            calls.append(name)
        v = avgs.get(name)
        if v is None:
            return []
        return [{"checkpoint": name, "split": "valid", "suite": "doit", "ability": "biology", "value": 1 - v},
                {"checkpoint": name, "split": "valid", "suite": "doit", "ability": "overall", "value": v}]
    return valid_scores


def test_last_is_the_last_exported_and_scores_nothing():
    calls = []
    assert select_checkpoint(ckpts(0.5, 0.4, 0.9), "last", scorer({}, calls)) == "epoch3"
    assert calls == []


def test_valid_loss_lowest_ties_to_the_earlier_step():
    calls = []
    assert select_checkpoint(ckpts(1.2, 0.9, 1.0), "valid_loss", scorer({}, calls)) == "epoch2"
    assert select_checkpoint(ckpts(1.2, 0.9, 0.9), "valid_loss", scorer({}, calls)) == "epoch2"
    assert calls == []  # no valid-split evaluation when every checkpoint has a valid loss


def test_valid_loss_without_a_loss_everywhere_falls_back_to_valid_avg():
    calls = []
    pick = select_checkpoint(ckpts(1.0, None, 0.5), "valid_loss", scorer({"epoch1": 0.3, "epoch2": 0.7,
                                                                          "epoch3": 0.5}, calls))
    assert pick == "epoch2" and calls == ["epoch1", "epoch2", "epoch3"]


def test_valid_avg_best_overall_ties_to_the_earlier_step():
    avgs = {"epoch1": 0.4, "epoch2": 0.6, "epoch3": 0.6}
    assert select_checkpoint(ckpts(0.1, 0.2, 0.3), "valid_avg", scorer(avgs)) == "epoch2"  # losses ignored
    two_suites = lambda n: [{"ability": "overall", "value": v} for v in {"epoch1": (0.2, 1.0),
                                                                         "epoch2": (0.5, 0.6)}[n]]
    assert select_checkpoint(ckpts(None, None), "valid_avg", two_suites) == "epoch1"  # mean over suites


def test_valid_avg_without_any_valid_scores_keeps_the_last():
    assert select_checkpoint(ckpts(None, None, None), "valid_avg", scorer({})) == "epoch3"


def test_bad_rule_and_no_checkpoints():
    with pytest.raises(ValueError, match="allowed: valid_avg, valid_loss, last"):
        select_checkpoint(ckpts(1.0), "best", scorer({}))
    with pytest.raises(ValueError, match="no checkpoints"):
        select_checkpoint([], "last", scorer({}))
