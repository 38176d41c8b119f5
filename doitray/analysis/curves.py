"""Growth curves: score vs data volume per ability, score vs model size, score vs checkpoint."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter1d

from doitray.analysis.stats import Z95, item_se, mean_ci

X_AXES = ("volume", "per_ability", "frac")
CURVE_COLUMNS = ["panel", "model", "model_params", "construction", "x", "value", "ci_low", "ci_high", "n",
                 "n_seeds", "chance", "metric", "cells", "checkpoints", "smoothed"]


def scaling_grid(df: pd.DataFrame) -> pd.DataFrame:
    """The cells of the plain scaling grid: balanced composition, one-stage multi-task, no replay.

    Returns ``df`` unchanged when none of its cells are plain (e.g. a study of compositions only).
    """
    if df.empty:
        return df
    mask = pd.Series(True, index=df.index)
    if "composition" in df:
        mask &= df["composition"].isna() | df["composition"].isin(["balanced", "all"])
    if "strategy" in df:
        mask &= df["strategy"].isna() | (df["strategy"] == "multitask")
    if "replay_frac" in df:
        mask &= df["replay_frac"].isna() | (df["replay_frac"] == 0)
    return df[mask] if mask.any() else df


def point_estimate(g: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """Score of one design point (its rows are seeds): value, se and 95% CI.

    One row: the evaluator's CI (else a binomial one from ``n``). Several: ``stats.mean_ci`` (a seeded
    ``scipy.stats.bootstrap`` over the seeds plus the item noise they share).
    """
    vals = g["value"].to_numpy(float)
    ses = [item_se(v, n, lo, hi) for v, n, lo, hi in zip(vals, g["n"], g["ci_low"], g["ci_high"])]
    if len(g) == 1:
        r = g.iloc[0]
        lo, hi = r.get("ci_low"), r.get("ci_high")
        if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
            lo, hi = vals[0] - Z95 * ses[0], vals[0] + Z95 * ses[0]
        return {"value": float(vals[0]), "se": float(ses[0]), "ci_low": float(lo), "ci_high": float(hi)}
    m, se, lo, hi = mean_ci(vals, ses, n_boot=n_boot, seed=seed)
    return {"value": m, "se": se, "ci_low": lo, "ci_high": hi}


def growth_curves(df: pd.DataFrame, x: str = "volume", panels: list[str] | None = None,
                  by: tuple[str, ...] = ("model", "construction"), smooth_sigma: float = 0.0,
                  n_boot: int = 400, seed: int = 0) -> pd.DataFrame:
    """Score vs data quantity, one curve per ``by`` group and panel (ability), seeds averaged.

    ``x`` is the total volume, the per-ability count, or the source fraction. Bands (``point_estimate``):
    with one seed the evaluator's item-bootstrap CI; with several, mean ± 1.96·√(SE²(seeds) + SE²(items)),
    SE(seeds) from a seeded ``scipy.stats.bootstrap`` over the seeds. With
    ``smooth_sigma`` > 0 the ``smoothed`` column holds a Gaussian-smoothed copy of ``value`` (over the
    ordered points of the curve, as the DoIT plots do with σ = 0.8; ``scipy.ndimage.gaussian_filter1d``
    with reflected edges); ``value`` stays raw.
    """
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    if df.empty or x not in df:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    d = df[df[x].notna() & (pd.to_numeric(df[x], errors="coerce") > 0)]  # log axis: the base points apart
    if panels is not None:
        d = d[d["panel"].isin(panels)]
    out = _points(d, ["panel", *by, x], x, n_boot, seed)
    out["smoothed"] = out["value"]
    if smooth_sigma > 0 and len(out):
        gk = ["panel", *by]
        for _, idx in out.groupby(gk, sort=False, dropna=False).groups.items():
            sub = out.loc[idx].sort_values("x")
            out.loc[sub.index, "smoothed"] = smooth(sub["value"].to_numpy(), smooth_sigma)
    return out.sort_values(["panel", "model_params", "construction", "x"], na_position="last").reset_index(drop=True)


def _points(d: pd.DataFrame, keys: list[str], x: str, n_boot: int, seed: int) -> pd.DataFrame:
    """One curve point (``point_estimate``) per ``keys`` group of ``d``, in ``CURVE_COLUMNS`` but ``smoothed``."""
    rows = []
    for i, (key, g) in enumerate(d.groupby(keys, sort=True, dropna=False)):
        k = dict(zip(keys, key))
        p = point_estimate(g, n_boot, seed + i)
        p.pop("se")
        rows.append({
            "panel": k["panel"], "model": k.get("model", g["model"].iloc[0] if "model" in g else None),
            "model_params": g["model_params"].iloc[0] if "model_params" in g else np.nan,
            "construction": k.get("construction", g["construction"].iloc[0] if "construction" in g else None),
            "x": float(k[x]), **p, "n": int(g["n"].fillna(0).sum()) if "n" in g else 0,
            "n_seeds": int(len(g)), "chance": float(g["chance"].mean()) if g["chance"].notna().any() else np.nan,
            "metric": str(g["metric"].iloc[0]), "cells": ";".join(g["cell_id"].astype(str)),
            "checkpoints": ";".join(g["checkpoint"].astype(str)),
        })
    return pd.DataFrame(rows, columns=CURVE_COLUMNS[:-1])


def base_points(df: pd.DataFrame, x: str = "volume", n_boot: int = 400, seed: int = 0) -> pd.DataFrame:
    """The base models' scores, the curves' volume-0 point: cells of data quantity 0 (not instruction-tuned;
    ``study.cells.is_base``), one point per (panel, model) with ``construction`` None (it belongs to every
    construction's curve of its model)."""
    if df.empty or x not in df:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    out = _points(df[pd.to_numeric(df[x], errors="coerce") == 0], ["panel", "model", x], x, n_boot, seed)
    out["construction"] = None
    out["smoothed"] = out["value"]
    return out.sort_values(["panel", "model_params"]).reset_index(drop=True)


def smooth(y, sigma: float) -> np.ndarray:
    """Gaussian smoothing of an ordered curve (``scipy.ndimage.gaussian_filter1d``, reflected edges, 4σ)."""
    y = np.asarray(y, float)
    if sigma <= 0 or len(y) < 2:
        return y.copy()
    return gaussian_filter1d(y, sigma, mode="reflect", truncate=4.0)


def size_curves(df: pd.DataFrame, x: str = "volume", panels: list[str] | None = None) -> pd.DataFrame:
    """Score vs model size (parameters) at each fixed data quantity: one curve per (construction, x)."""
    curves = growth_curves(df, x=x, panels=panels)
    if curves.empty:
        return curves
    return curves.sort_values(["panel", "construction", "x", "model_params"]).reset_index(drop=True)


def checkpoint_dynamics(all_ckpts: pd.DataFrame, split: str = "valid", panels: list[str] | None = None
                        ) -> pd.DataFrame:
    """Score vs epoch/step for every evaluated checkpoint of every cell, on ``split`` (fallback: any)."""
    if all_ckpts.empty:
        return all_ckpts
    d = all_ckpts[all_ckpts["split"] == split]
    if d.empty:
        d = all_ckpts
    if panels is not None:
        d = d[d["ability"].isin(panels)]
    d = d.drop_duplicates(["cell_id", "checkpoint", "suite", "ability", "split"])
    cols = [c for c in ("cell_id", "model", "model_params", "construction", "volume", "composition", "strategy",
                        "replay_frac", "seed", "checkpoint", "stage", "step", "epoch", "suite", "split", "ability",
                        "value", "n", "ci_low", "ci_high", "chance", "selected") if c in d]
    return d[cols].sort_values(["ability", "cell_id", "stage", "step"]).reset_index(drop=True)
