"""Aggregation: per-group means with seeded bootstrap intervals, and checkpoint selection."""
from __future__ import annotations

import zlib
from typing import Any, Iterable, Mapping

import numpy as np

SELECT_RULES = ("valid_avg", "valid_loss", "last")


def bootstrap_ci(groups: Mapping[str, Iterable[float]], *, seed: int = 0, resamples: int = 1000,
                 level: float = 0.95) -> tuple[dict[str, tuple[float, float]], tuple[float, float]]:
    """Percentile bootstrap CIs of each group's mean and of the mean over groups (items resampled per group)."""
    rng = np.random.default_rng(seed)
    lo_q, hi_q = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    per: dict[str, tuple[float, float]] = {}
    means = []
    for g in sorted(groups):
        x = np.asarray(list(groups[g]), dtype=float)
        if x.size == 0:
            continue
        idx = rng.integers(0, x.size, size=(resamples, x.size))
        m = x[idx].mean(axis=1)
        means.append(m)
        per[g] = (float(np.percentile(m, lo_q)), float(np.percentile(m, hi_q)))
    if not means:
        return per, (float("nan"), float("nan"))
    overall = np.mean(np.stack(means), axis=0)
    return per, (float(np.percentile(overall, lo_q)), float(np.percentile(overall, hi_q)))


def stable_seed(*parts: Any) -> int:
    return zlib.crc32("\x1f".join(map(str, parts)).encode()) & 0x7FFFFFFF


def _rows(x: Any) -> list[dict]:
    if hasattr(x, "to_dict") and hasattr(x, "columns"):  # a DataFrame
        return x.to_dict("records")
    return list(x)


def select_checkpoint(data: Any, rule: str = "valid_avg") -> str:
    """The checkpoint a study keeps: best valid ability average, lowest valid loss, or the last one.

    ``data``: score rows (list of dicts or a DataFrame with checkpoint, step, split, ability, value) for
    ``valid_avg``; ``{checkpoint: valid_loss}`` or rows with ``checkpoint, valid_loss`` for ``valid_loss``;
    rows with ``checkpoint, step`` (or a list of names in order) for ``last``. Ties go to the earlier step.
    """
    if rule not in SELECT_RULES:
        raise ValueError(f"unknown checkpoint selection rule {rule!r}; allowed: {', '.join(SELECT_RULES)}")
    if rule == "valid_loss":
        if isinstance(data, Mapping):
            losses = {k: float(v) for k, v in data.items() if v is not None}
            order = list(data)
        else:
            rows = [r for r in _rows(data) if r.get("valid_loss") is not None]
            rows.sort(key=lambda r: (r.get("step") or 0))
            losses = {r["checkpoint"]: float(r["valid_loss"]) for r in rows}
            order = [r["checkpoint"] for r in rows]
        if not losses:
            raise ValueError("select_checkpoint(rule='valid_loss'): no checkpoint has a valid loss")
        return min(order, key=lambda c: (losses.get(c, float("inf")), order.index(c)))
    if rule == "last":
        if isinstance(data, (list, tuple)) and data and isinstance(data[0], str):
            return data[-1]
        rows = _rows(data)
        if not rows:
            raise ValueError("select_checkpoint(rule='last'): no checkpoints")
        return max(rows, key=lambda r: (r.get("step") or 0, r.get("epoch") or 0))["checkpoint"]
    rows = [r for r in _rows(data) if r.get("split") == "valid"]
    if not rows:
        raise ValueError("select_checkpoint(rule='valid_avg'): no valid-split score rows")
    step = {r["checkpoint"]: r.get("step") or 0 for r in rows}
    by_ck: dict[str, list[float]] = {}
    overall = [r for r in rows if r.get("ability") == "overall"]
    for r in overall or [r for r in rows if r.get("ability") != "overall"]:
        by_ck.setdefault(r["checkpoint"], []).append(float(r["value"]))
    avg = {c: sum(v) / len(v) for c, v in by_ck.items()}
    return max(avg, key=lambda c: (avg[c], -step[c]))
