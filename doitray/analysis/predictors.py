"""Complexity and Transference as predictors of each ability's scaling sensitivity.

The DoIT paper's formulas are not public, so these are documented operationalisations; a study may
also supply its own per-ability values (``features`` is just a DataFrame indexed by ability).

Complexity (higher = harder):
- ``base_score``: 1 − the base model's chance-normalised score, (1 − (s − chance) / (1 − chance)),
  where the base is a volume-0 cell (or, with ``at="smallest"``, the cheapest trained cell).
- ``answer_length``: mean gold answer length in characters (from the predictions table).
- ``answer_steps``: mean number of non-empty lines / sentences in the gold answer (steps to solve).
Transference (higher = learns more from other abilities' data), from leave-one-ability-out cells:
- ``gain``: loo score − base score;  ``share``: (loo − base) / (full − base).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from doitray.analysis.stats import Corr, fmt_p, pearson, spearman

COMPLEXITY_KINDS = ("base_score", "answer_length", "answer_steps")
TRANSFERENCE_KINDS = ("gain", "share")


def complexity_from_scores(df: pd.DataFrame, at: str = "base", model: str | None = None) -> pd.Series:
    """Complexity per ability from a base (volume 0) or the smallest-volume cell's score (see module doc)."""
    if at not in ("base", "smallest"):
        raise ValueError(f"at must be 'base' or 'smallest', got {at!r}")
    d = df[~df["ood"] & (df["panel"] != "overall")] if "ood" in df else df
    if model is not None:
        d = d[d["model"] == model]
    if at == "base":
        d = d[d["volume"].fillna(-1) == 0]
    else:
        d = d[d["volume"].fillna(0) > 0]
        d = d[d["volume"] == d["volume"].min()]
    if d.empty:
        return pd.Series(dtype=float, name="complexity")
    g = d.groupby("ability").agg(value=("value", "mean"), chance=("chance", "mean"))
    ch = g["chance"].fillna(0.0).clip(upper=0.999)
    norm = (g["value"] - ch) / (1 - ch)
    return (1 - norm).rename("complexity")


_STEP_SPLIT = re.compile(r"(?:\n+|(?<=[.!?。！？])\s*)")


def complexity_from_answers(predictions: pd.DataFrame, kind: str = "answer_length") -> pd.Series:
    """Complexity per ability from the gold answers: mean length in characters, or mean number of steps."""
    if kind not in ("answer_length", "answer_steps"):
        raise ValueError(f"kind must be 'answer_length' or 'answer_steps', got {kind!r}")
    if predictions.empty:
        return pd.Series(dtype=float, name="complexity")
    p = predictions.drop_duplicates(["ability", "item_id"])
    gold = p["gold"].fillna("").astype(str)
    if kind == "answer_length":
        vals = gold.str.len()
    else:
        vals = gold.map(lambda t: max(1, sum(1 for s in _STEP_SPLIT.split(t) if s.strip())))
    return vals.groupby(p["ability"]).mean().astype(float).rename("complexity")


def transference_from_loo(per_ability: pd.DataFrame, kind: str = "share", model: str | None = None) -> pd.Series:
    """Transference per ability from ``sensitivity.transfer(...).per_ability`` (averaged over models)."""
    if kind not in TRANSFERENCE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(TRANSFERENCE_KINDS)}, got {kind!r}")
    col = "share_of_full_gain" if kind == "share" else "gain_from_others"
    d = per_ability if model is None else per_ability[per_ability["model"] == model]
    if d.empty:
        return pd.Series(dtype=float, name="transference")
    return d.groupby("ability")[col].mean().astype(float).rename("transference")


@dataclass
class PredictorFit:
    """An OLS fit (statsmodels) of sensitivity on per-ability features, with CIs and p-values.

    ``coef_table``: term, coef, ci_low, ci_high (95%, t), p (two-sided t-test); ``f_pvalue``: the overall
    F-test of the features; ``spearman`` / ``pearson``: each feature's correlation with the target (``Corr``).
    """

    target: str
    features: list[str]
    coefficients: dict[str, float]  # 'intercept' and one per feature
    r2: float
    r2_adj: float
    f_pvalue: float
    coef_table: pd.DataFrame = field(repr=False)
    spearman: dict[str, Corr] = field(default_factory=dict)
    pearson: dict[str, Corr] = field(default_factory=dict)
    loo_mae: float = float("nan")  # leave-one-ability-out mean absolute prediction error
    loo_spearman: Corr | None = None  # rank agreement of the leave-one-out predictions with the truth
    table: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)  # ability, features, target, fitted, loo_pred

    def to_dict(self) -> dict:
        return {"target": self.target, "features": self.features, "coefficients": self.coefficients,
                "coef_table": self.coef_table.to_dict("records"), "r2": self.r2, "r2_adj": self.r2_adj,
                "f_pvalue": self.f_pvalue, "spearman": {k: v.to_dict() for k, v in self.spearman.items()},
                "pearson": {k: v.to_dict() for k, v in self.pearson.items()}, "loo_mae": self.loo_mae,
                "loo_spearman": self.loo_spearman.to_dict() if self.loo_spearman else None,
                "n": int(len(self.table))}

    def coef_text(self) -> str:
        """'complexity +0.0123 [−0.004, 0.029], p = 0.12; …' (intercept left out)."""
        return "; ".join(f"{r['term']} {r['coef']:+.4g} [{r['ci_low']:+.3g}, {r['ci_high']:+.3g}], p = {fmt_p(r['p'])}"
                         for r in self.coef_table.to_dict("records") if r["term"] != "intercept")

    def fit_text(self) -> str:
        """'R² 0.026 (adj. −0.26; F-test p = 0.91, n = 10)'."""
        return (f"R² {self.r2:.3f} (adjusted {self.r2_adj:+.3f}; F-test of the features p = {fmt_p(self.f_pvalue)}, "
                f"n = {len(self.table)})")


def _ols(X: np.ndarray, y: np.ndarray):
    import statsmodels.api as sm

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return sm.OLS(y, X).fit()


def fit_predictors(target: pd.Series, features: pd.DataFrame, target_name: str = "data_slope",
                   seed: int = 0) -> PredictorFit:
    """Fit ``target ~ 1 + features`` (statsmodels OLS) over the abilities they share; report coefficient CIs
    and p-values, R² with its F-test, each feature's Pearson and Spearman correlation with the target (CI, p)
    and the leave-one-ability-out error."""
    feats = features.dropna(axis=1, how="all").copy()
    feats.index = feats.index.astype(str)
    t = target.copy()
    t.index = t.index.astype(str)
    data = feats.join(t.rename("target"), how="inner").dropna()
    names = [c for c in feats.columns]
    if len(data) < len(names) + 2:
        raise ValueError(f"need at least {len(names) + 2} abilities with all of {names} and the target; "
                         f"have {len(data)}")
    X = np.column_stack([np.ones(len(data)), data[names].to_numpy(float)])
    y = data["target"].to_numpy(float)
    res = _ols(X, y)
    beta = np.asarray(res.params, float)
    exact = float(res.ssr) <= 1e-24 * max(1.0, float((y ** 2).sum()))
    ci = np.asarray(res.conf_int(0.05), float) if not exact else np.column_stack([beta, beta])
    pv = np.asarray(res.pvalues, float) if not exact else np.where(np.abs(beta) > 1e-12, 0.0, 1.0)
    terms = ["intercept", *names]
    coef_table = pd.DataFrame({"term": terms, "coef": beta, "ci_low": ci[:, 0], "ci_high": ci[:, 1], "p": pv})
    loo = np.empty(len(y))
    for i in range(len(y)):
        m = np.arange(len(y)) != i
        loo[i] = X[i] @ np.asarray(_ols(X[m], y[m]).params, float)
    table = data.assign(fitted=X @ beta, loo_pred=loo).rename_axis("ability").reset_index()
    return PredictorFit(
        target=target_name, features=names,
        coefficients={n: float(b) for n, b in zip(terms, beta)},
        r2=float(res.rsquared), r2_adj=float(res.rsquared_adj),
        f_pvalue=0.0 if exact else float(res.f_pvalue), coef_table=coef_table,
        spearman={n: spearman(data[n], y, seed=seed) for n in names},
        pearson={n: pearson(data[n], y) for n in names},
        loo_mae=float(np.mean(np.abs(loo - y))), loo_spearman=spearman(loo, y, seed=seed), table=table)
