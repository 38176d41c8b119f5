"""Analyses over the results tables: pure functions over pandas DataFrames (no Ray needed).

``tables`` joins the store into one tidy table; ``curves``, ``sensitivity``, ``predictors``, ``forecast``
and ``composition`` compute from it; ``analyze`` runs everything a study's tables support.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from doitray.analysis import composition, curves, forecast, predictors, sensitivity, tables
from doitray.analysis.tables import Results, load_results, tidy


@dataclass
class Analysis:
    """Everything the report draws, computed once."""

    results: Results
    tidy: pd.DataFrame
    x: str
    completion: dict
    curves: pd.DataFrame
    sensitivity: pd.DataFrame
    gap_points: pd.DataFrame
    transfer: sensitivity.Transfer
    features: pd.DataFrame
    predictor_fit: predictors.PredictorFit | None
    predictor_note: str
    forecast: forecast.Forecast | None
    dynamics: pd.DataFrame
    strategies: pd.DataFrame
    k_sweep: composition.KSweep
    single_mixed: tuple[pd.DataFrame, pd.DataFrame]
    ratio_arms: pd.DataFrame
    forgetting: pd.DataFrame
    recipes: pd.DataFrame = field(default_factory=pd.DataFrame)
    base: pd.DataFrame = field(default_factory=pd.DataFrame)  # the base models' scores (volume 0, not tuned)
    notes: list[str] = field(default_factory=list)


def study_features(study: dict | None) -> pd.DataFrame | None:
    """Per-ability predictor values a study file supplies under ``analysis.features``:
    ``{ability: {feature: value, ...}, ...}`` (e.g. its own Complexity and Transference)."""
    f = ((study or {}).get("analysis") or {}).get("features")
    if not f:
        return None
    return pd.DataFrame.from_dict(f, orient="index").apply(pd.to_numeric, errors="coerce")


def choose_x(df: pd.DataFrame, study: dict | None = None) -> str:
    """The data-quantity axis: the factor the study file varies (volume / per_ability / frac), else the
    column that varies in the table (total volume first)."""
    factors = (study or {}).get("factors") or {}
    for col in ("volume", "per_ability", "frac"):
        if factors.get(col) and col in df and pd.to_numeric(df[col], errors="coerce").nunique() >= 2:
            return col
    for col in ("volume", "frac", "per_ability"):
        if col in df and pd.to_numeric(df[col], errors="coerce").nunique() >= 2:
            return col
    return "volume"


def analyze(results: Results, x: str | None = None, features: pd.DataFrame | None = None,
            smooth_sigma: float = 0.0, n_boot: int = 500, seed: int = 0) -> Analysis:
    """Run every analysis the tables support; missing inputs give empty frames, never errors."""
    df = tidy(results)
    if "frac" in df:
        df["frac"] = pd.to_numeric(df["frac"], errors="coerce")
    x = x or choose_x(df, results.study)
    notes: list[str] = []
    comp = tables.completion(results.cells, set(results.scores["cell_id"]) if len(results.scores) else set())
    crv = curves.growth_curves(curves.scaling_grid(df), x=x, smooth_sigma=smooth_sigma, n_boot=n_boot, seed=seed) \
        if len(df) and x in df else pd.DataFrame(columns=curves.CURVE_COLUMNS)
    base = curves.base_points(curves.scaling_grid(df), x=x, n_boot=n_boot, seed=seed) if len(df) and x in df \
        else pd.DataFrame(columns=curves.CURVE_COLUMNS)
    varies = bool(len(df)) and x in df and df[x].nunique() >= 2
    sens = sensitivity.sensitivity_table(df, x=x, n_boot=n_boot, seed=seed) if varies else pd.DataFrame()
    if len(sens) and sens["data_slope"].isna().all():
        sens = sens.iloc[0:0]
    gap_pts = sensitivity.construction_gap(df, x=x, n_boot=n_boot, seed=seed)[0] if len(df) and x in df \
        else pd.DataFrame()
    tr = sensitivity.transfer(df)
    # Predictor features: the study's own values when given, else documented operationalisations.
    fit, note = None, ""
    feats = features if features is not None else study_features(results.study)
    if feats is not None:
        notes.append("Complexity/Transference: per-ability values supplied by the study.")
    if feats is None and len(df):
        cols = {}
        kind = ((results.study or {}).get("analysis") or {}).get("complexity", "base_score")
        if kind in ("answer_length", "answer_steps") and len(results.predictions):
            c = predictors.complexity_from_answers(results.predictions, kind)
            notes.append(f"Complexity = {kind} of the gold answers.")
        else:
            c = predictors.complexity_from_scores(df, at="base")
        if c.empty and kind == "base_score":
            c = predictors.complexity_from_scores(df, at="smallest")
            if len(c):
                notes.append("Complexity = 1 − chance-normalised score of the smallest-volume cell (no volume-0 cell).")
        if len(c):
            cols["complexity"] = c
        t = predictors.transference_from_loo(
            tr.per_ability, ((results.study or {}).get("analysis") or {}).get("transference", "share"))
        if len(t):
            cols["transference"] = t
        feats = pd.DataFrame(cols) if cols else None
    if feats is not None and len(sens) and len(feats.columns):
        target = sens[(sens["panel"] != "overall") & ~sens["ood"]].set_index("panel")["data_slope"]
        try:
            fit = predictors.fit_predictors(target, feats)
        except ValueError as e:
            note = f"predictor fit skipped: {e}"
            notes.append(note)
    fc = None
    if len(df) and x in df and df["model_params"].nunique() >= 2:
        fc = forecast.forecast(df, x=x)
        if fc.n_heldout == 0:
            fc = None
    allck = tables.all_checkpoints(results)
    dyn = curves.checkpoint_dynamics(allck) if len(allck) else pd.DataFrame()
    if len(dyn) and dyn.groupby("cell_id")["checkpoint"].nunique().max() < 2:
        dyn = dyn.iloc[0:0]
    strat = composition.strategy_comparison(df[~df["ood"]]) if len(df) and "strategy" in df else pd.DataFrame()
    if len(strat) and strat["strategy_label"].nunique() < 2:
        strat = strat.iloc[0:0]
    panels = list(dict.fromkeys(df["panel"])) if len(df) else []
    spec, gen = composition.roles_from_study(results.study, panels)
    ks = composition.k_sweep(df[~df["ood"]], spec, gen) if len(df) else composition.KSweep(pd.DataFrame(), [], [])
    sm = composition.single_vs_mixed(df, x=x) if len(df) and x in df else (pd.DataFrame(), pd.DataFrame())
    ra = composition.ratio_arms(df)
    fg = composition.forgetting(allck) if len(allck) else pd.DataFrame()
    if fg.empty and len(df):  # only final checkpoints scored: compare with the single-source runs
        fg = composition.forgetting_vs_single(df[~df["ood"]])
    rd = composition.recipe_deltas(df[~df["ood"]]) if len(df) else pd.DataFrame()
    return Analysis(results=results, tidy=df, x=x, completion=comp, curves=crv, sensitivity=sens,
                    gap_points=gap_pts, transfer=tr, features=feats if feats is not None else pd.DataFrame(),
                    predictor_fit=fit, predictor_note=note, forecast=fc, dynamics=dyn, strategies=strat,
                    k_sweep=ks, single_mixed=sm, ratio_arms=ra, forgetting=fg, recipes=rd, base=base, notes=notes)


__all__ = ["Analysis", "Results", "analyze", "choose_x", "composition", "curves", "forecast", "load_results",
           "predictors", "sensitivity", "tables", "tidy"]
