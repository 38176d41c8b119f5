"""Forecast expensive cells from cheap ones: fit per-ability curves on small cells, predict the large ones."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from doitray.analysis.curves import scaling_grid
from doitray.analysis.stats import spearman_rho

FORECAST_RULE = ("fit per (ability, construction): score = a + b·log2(volume) + c·log2(parameters) on the cheap "
                 "cells; held out (the expensive corner): the largest model at volumes above the median volume")


@dataclass
class Forecast:
    points: pd.DataFrame = field(repr=False)  # panel, model, model_params, construction, x, actual, predicted, error, role
    mae: float
    rmse: float
    ability_decisions: float  # pairwise agreement of ability orderings in held-out cells
    recipe_decisions: float  # pairwise agreement of construction orderings in held-out cells
    ability_spearman: float  # mean Spearman ρ of predicted vs actual ability ranking per held-out cell
    n_train: int
    n_heldout: int
    rule: str = FORECAST_RULE

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("mae", "rmse", "ability_decisions", "recipe_decisions",
                                               "ability_spearman", "n_train", "n_heldout", "rule")}


def default_holdout(points: pd.DataFrame) -> pd.Series:
    """The expensive corner: largest model, volumes above the median volume level."""
    top = points["model_params"].max()
    levels = np.sort(points["x"].unique())
    cut = np.median(levels)
    return (points["model_params"] == top) & (points["x"] > cut)


def pairwise_agreement(actual, predicted) -> tuple[int, int]:
    """(agreeing pairs, comparable pairs): pairs ordered the same way by prediction as by truth."""
    a, p = np.asarray(actual, float), np.asarray(predicted, float)
    agree = total = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            if a[i] == a[j]:
                continue
            total += 1
            agree += int(np.sign(p[i] - p[j]) == np.sign(a[i] - a[j]))
    return agree, total


def forecast(df: pd.DataFrame, x: str = "volume",
             holdout: Callable[[pd.DataFrame], pd.Series] | None = None) -> Forecast:
    """Fit on the cheap cells and predict the held-out ones; report the error and decision accuracy.

    The fit is statsmodels OLS; ``ability_spearman`` is a descriptive rank agreement (mean ρ over held-out
    cells), not a test.
    """
    import statsmodels.api as sm

    d = scaling_grid(df)
    d = d[d[x].notna() & (d[x] > 0) & d["model_params"].notna() & (d["model_params"] > 0)]
    cols = ["panel", "model", "model_params", "construction", "x", "actual", "predicted", "error", "role"]
    if d.empty:
        return Forecast(pd.DataFrame(columns=cols), np.nan, np.nan, np.nan, np.nan, np.nan, 0, 0)
    pts = (d.groupby(["panel", "model", "model_params", "construction", x], dropna=False)["value"].mean()
           .reset_index().rename(columns={x: "x", "value": "actual"}))
    held = (holdout or default_holdout)(pts).to_numpy(bool)
    pts["role"] = np.where(held, "heldout", "train")
    pts["predicted"] = np.nan
    for _, g in pts.groupby(["panel", "construction"], dropna=False):
        tr = g[g["role"] == "train"]
        if len(tr) < 2:
            continue
        cols_x = [np.ones(len(tr)), np.log2(tr["x"].to_numpy(float))]
        use_size = tr["model_params"].nunique() >= 2
        if use_size:
            cols_x.append(np.log2(tr["model_params"].to_numpy(float)))
        beta = np.asarray(sm.OLS(tr["actual"].to_numpy(float), np.column_stack(cols_x)).fit().params, float)
        Xall = [np.ones(len(g)), np.log2(g["x"].to_numpy(float))]
        if use_size:
            Xall.append(np.log2(g["model_params"].to_numpy(float)))
        pts.loc[g.index, "predicted"] = np.column_stack(Xall) @ beta
    pts["error"] = pts["predicted"] - pts["actual"]
    h = pts[(pts["role"] == "heldout") & pts["predicted"].notna()]
    ab_agree = ab_total = rc_agree = rc_total = 0
    rhos = []
    for _, g in h[h["panel"] != "overall"].groupby(["model", "construction", "x"], dropna=False):
        a, t = pairwise_agreement(g["actual"], g["predicted"])
        ab_agree, ab_total = ab_agree + a, ab_total + t
        if len(g) >= 3:
            rhos.append(spearman_rho(g["actual"], g["predicted"]))
    for _, g in h.groupby(["panel", "model", "x"], dropna=False):
        a, t = pairwise_agreement(g["actual"], g["predicted"])
        rc_agree, rc_total = rc_agree + a, rc_total + t
    err = h["error"].to_numpy(float)
    return Forecast(
        points=pts[cols].sort_values(["panel", "model_params", "construction", "x"]).reset_index(drop=True),
        mae=float(np.mean(np.abs(err))) if len(err) else np.nan,
        rmse=float(np.sqrt(np.mean(err ** 2))) if len(err) else np.nan,
        ability_decisions=ab_agree / ab_total if ab_total else np.nan,
        recipe_decisions=rc_agree / rc_total if rc_total else np.nan,
        ability_spearman=float(np.nanmean(rhos)) if rhos and not np.all(np.isnan(rhos)) else np.nan,
        n_train=int((pts["role"] == "train").sum()), n_heldout=int(len(h)))
