"""Small numeric helpers (numpy only): least squares, rank correlation, smoothing, bootstrap draws."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

Z95 = 1.959963984540054


def ols(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares coefficients of ``y ~ X`` (X already holds an intercept column) and R²."""
    X = np.asarray(X, float)
    y = np.asarray(y, float)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    return beta, r2


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when undefined."""
    a = pd.Series(np.asarray(a, float)).rank().to_numpy()
    b = pd.Series(np.asarray(b, float)).rank().to_numpy()
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def pearson(a, b) -> float:
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def gaussian_smooth(y, sigma: float) -> np.ndarray:
    """1-D Gaussian smoothing with reflected edges (as ``scipy.ndimage.gaussian_filter1d``, truncate=4)."""
    y = np.asarray(y, float)
    if sigma <= 0 or len(y) < 2:
        return y.copy()
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    w /= w.sum()
    padded = np.pad(y, radius, mode="symmetric")
    return np.convolve(padded, w, mode="valid")


def item_se(value: float, n: float | None, ci_low: float | None, ci_high: float | None) -> float:
    """Standard error of one score: from its CI when given, else binomial from ``n``, else 0."""
    if ci_low is not None and ci_high is not None and not (pd.isna(ci_low) or pd.isna(ci_high)):
        return max(float(ci_high) - float(ci_low), 0.0) / (2 * Z95)
    if n is not None and not pd.isna(n) and n > 0 and 0 <= value <= 1:
        return math.sqrt(max(value * (1 - value), 0.0) / float(n))
    return 0.0


def bootstrap_draws(values: np.ndarray, se: np.ndarray, groups: np.ndarray, n_boot: int,
                    rng: np.random.Generator, n_items: np.ndarray | None = None) -> np.ndarray:
    """``n_boot`` resampled copies of the point means, shape (n_boot, n_groups), groups in sorted order.

    Each group is one design point (e.g. model × volume) holding one row per seed. A draw resamples the
    seeds of each group with replacement, then the test items of each row: for a score that is a mean of
    0/1 item scores over ``n_items`` items, resampling the items with replacement gives exactly
    Binomial(n, value) / n, which is drawn directly; rows without a usable ``n_items`` get Normal noise
    with their standard error ``se``.
    """
    values = np.asarray(values, float)
    se = np.asarray(se, float)
    n = np.zeros(len(values)) if n_items is None else np.nan_to_num(np.asarray(n_items, float))
    binom = (n >= 1) & (values >= 0) & (values <= 1)
    uniq, inv = np.unique(groups, return_inverse=True)
    out = np.empty((n_boot, len(uniq)))
    for g in range(len(uniq)):
        idx = np.flatnonzero(inv == g)
        pick = idx[rng.integers(0, len(idx), size=(n_boot, len(idx)))]
        v, b = values[pick], binom[pick]
        noisy = v + rng.standard_normal(pick.shape) * se[pick]
        if b.any():
            nn = n[pick][b].astype(np.int64)
            noisy[b] = rng.binomial(nn, v[b]) / nn
        out[:, g] = noisy.mean(axis=1)
    return out


def binary_n(df: pd.DataFrame) -> np.ndarray:
    """Item counts to resample binomially; NaN for judge scores (not means of 0/1 items)."""
    n = pd.to_numeric(df["n"], errors="coerce").to_numpy(float)
    if "metric" in df:
        n = np.where(df["metric"].astype(str).to_numpy() == "judge", np.nan, n)
    return n


def percentile_ci(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    draws = np.asarray(draws, float)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(draws, a)), float(np.quantile(draws, 1 - a))
