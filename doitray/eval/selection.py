"""The checkpoint a cell keeps: ``select_checkpoint`` (the study's ``evaluation.select`` rule)."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

SELECT_RULES = ("valid_avg", "valid_loss", "last")


def select_checkpoint(checkpoints: Sequence[Mapping], rule: str,
                      valid_scores: Callable[[str], list[dict]]) -> str:
    """The name of the checkpoint to keep among ``checkpoints`` (rows with ``checkpoint``, ``step``, ``valid_loss``,
    in export order).

    ``last``: the last one. ``valid_loss``: the lowest valid loss when every checkpoint has one, else as
    ``valid_avg``. ``valid_avg``: the best mean of the ``overall`` rows of ``valid_scores(name)`` (the
    checkpoint's valid-split score rows; called only for this rule, it may evaluate the checkpoint), or the
    last checkpoint when none has any. Ties go to the earlier step: the first checkpoint that reached the best.
    """
    if rule not in SELECT_RULES:
        raise ValueError(f"unknown checkpoint selection rule {rule!r}; allowed: {', '.join(SELECT_RULES)}")
    if not checkpoints:
        raise ValueError("select_checkpoint: no checkpoints to select from")
    if rule == "last":
        return checkpoints[-1]["checkpoint"]
    if rule == "valid_loss" and all(c.get("valid_loss") is not None for c in checkpoints):
        return min(checkpoints, key=lambda c: (float(c["valid_loss"]), c["step"]))["checkpoint"]
    avg: dict[str, float] = {}
    for c in checkpoints:
        vals = [float(r["value"]) for r in valid_scores(c["checkpoint"]) if r["ability"] == "overall"]
        if vals:
            avg[c["checkpoint"]] = sum(vals) / len(vals)
    if not avg:
        return checkpoints[-1]["checkpoint"]
    return max((c for c in checkpoints if c["checkpoint"] in avg),
               key=lambda c: (avg[c["checkpoint"]], -c["step"]))["checkpoint"]
