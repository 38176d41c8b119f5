"""Aggregation: seeded percentile bootstrap intervals of per-group means."""
from __future__ import annotations

import zlib
from typing import Any, Iterable, Mapping

import numpy as np


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
