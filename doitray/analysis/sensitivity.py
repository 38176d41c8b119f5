"""Per-ability sensitivity to data and to model size, saturation, construction gap, ranking, transfer."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from doitray.analysis.curves import growth_curves, scaling_grid
from doitray.analysis.stats import binary_n, bootstrap_draws, item_se, percentile_ci

DEFAULT_TAU = 0.01
RESPONSIVE_RULE = ("responsive: the data slope (score gained per doubling of the training volume, pooled over "
                   "model sizes) is at least tau = {tau:g} and its 95% CI lies above 0; otherwise resistant")
SATURATION_RULE = ("saturation point: the smallest volume whose score reaches 95% of the best gain over the "
                   "chance level on that curve (largest model); 'not reached' when only the largest volume does")


def reference_construction(df: pd.DataFrame) -> str | None:
    """'curated' when the table has it, else its most common construction."""
    if "construction" not in df or df["construction"].dropna().empty:
        return None
    cons = df["construction"].dropna()
    return "curated" if (cons == "curated").any() else str(cons.value_counts().index[0])


def _se(d: pd.DataFrame) -> np.ndarray:
    return np.array([item_se(v, n, lo, hi) for v, n, lo, hi in zip(d["value"], d["n"], d["ci_low"], d["ci_high"])])


def _draws(g: pd.DataFrame, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return bootstrap_draws(g["value"].to_numpy(float), _se(g), np.zeros(len(g), int), n_boot, rng,
                           binary_n(g))[:, 0]


def _fixed_effect_slope(d: pd.DataFrame, slope_col: str, fe_col: str, n_boot: int,
                        rng: np.random.Generator) -> dict:
    """Slope of value on log2(slope_col) with one intercept per level of ``fe_col``; bootstrap CI."""
    d = d[d[slope_col].notna() & (d[slope_col] > 0)]
    if d.empty:
        return {"slope": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n_points": 0}
    keys = list(zip(d[fe_col].astype(str), d[slope_col].astype(float)))
    uniq = sorted(set(keys))
    if len({k[1] for k in uniq}) < 2:
        return {"slope": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n_points": len(uniq)}
    gid = np.array([uniq.index(k) for k in keys])
    levels = sorted({k[0] for k in uniq})
    X = np.zeros((len(uniq), len(levels) + 1))
    for i, (lev, xv) in enumerate(uniq):
        X[i, levels.index(lev)] = 1.0
        X[i, -1] = np.log2(xv)
    vals = d["value"].to_numpy(float)
    means = np.array([vals[gid == g].mean() for g in range(len(uniq))])
    pinv = np.linalg.pinv(X)
    slope = float((pinv @ means)[-1])
    draws = bootstrap_draws(vals, _se(d), gid, n_boot, rng, binary_n(d))  # (B, G) in uniq order
    lo, hi = percentile_ci(draws @ pinv[-1])
    return {"slope": slope, "ci_low": lo, "ci_high": hi, "n_points": len(uniq)}


def data_sensitivity(df: pd.DataFrame, x: str = "volume", construction: str | None = None,
                     n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per panel: score gained per doubling of ``x`` (OLS on log2 x, one intercept per model), 95% CI."""
    d = scaling_grid(df)
    construction = construction or reference_construction(d)
    if construction is not None:
        d = d[d["construction"] == construction]
    rng = np.random.default_rng(seed)
    rows = [{"panel": p, **_fixed_effect_slope(g, x, "model", n_boot, rng)} for p, g in d.groupby("panel")]
    return pd.DataFrame(rows, columns=["panel", "slope", "ci_low", "ci_high", "n_points"])


def size_sensitivity(df: pd.DataFrame, x: str = "volume", construction: str | None = None,
                     n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per panel: score gained per doubling of parameters (one intercept per data quantity), 95% CI."""
    d = scaling_grid(df)
    construction = construction or reference_construction(d)
    if construction is not None:
        d = d[d["construction"] == construction]
    d = d.assign(_x=d[x].astype(str))
    rng = np.random.default_rng(seed)
    rows = [{"panel": p, **_fixed_effect_slope(g, "model_params", "_x", n_boot, rng)} for p, g in d.groupby("panel")]
    return pd.DataFrame(rows, columns=["panel", "slope", "ci_low", "ci_high", "n_points"])


def saturation(curve_x: np.ndarray, curve_y: np.ndarray, floor: float = 0.0, frac: float = 0.95) -> tuple[float, bool]:
    """(smallest x reaching ``frac`` of the best gain over ``floor``, whether that is below the largest x)."""
    order = np.argsort(curve_x)
    xs, ys = np.asarray(curve_x, float)[order], np.asarray(curve_y, float)[order]
    if len(xs) == 0:
        return np.nan, False
    floor = 0.0 if floor is None or np.isnan(floor) else floor
    best = ys.max()
    if best <= floor:
        return np.nan, False
    target = floor + frac * (best - floor)
    x_sat = float(xs[np.argmax(ys >= target - 1e-12)])
    return x_sat, bool(x_sat < xs.max())


def saturation_points(df: pd.DataFrame, x: str = "volume", construction: str | None = None,
                      frac: float = 0.95) -> pd.DataFrame:
    """Per panel and model: the saturation point of the reference-construction curve."""
    d = scaling_grid(df)
    construction = construction or reference_construction(d)
    if construction is not None:
        d = d[d["construction"] == construction]
    curves = growth_curves(d, x=x, n_boot=1)
    rows = []
    for (panel, model), c in curves.groupby(["panel", "model"], sort=False):
        xs, reached = saturation(c["x"].to_numpy(), c["value"].to_numpy(), c["chance"].mean(), frac)
        rows.append({"panel": panel, "model": model, "model_params": c["model_params"].iloc[0],
                     "saturation_x": xs, "saturated": reached, "best": float(c["value"].max())})
    return pd.DataFrame(rows, columns=["panel", "model", "model_params", "saturation_x", "saturated", "best"])


def construction_gap(df: pd.DataFrame, x: str = "volume", a: str = "curated", b: str = "synthetic",
                     n_boot: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score of construction ``a`` minus ``b`` at equal ``x`` and model: (per-point table, per-panel mean with CI)."""
    d = scaling_grid(df)
    d = d[d["construction"].isin([a, b]) & d[x].notna()]
    rng = np.random.default_rng(seed)
    points, summary = [], []
    for panel, g in d.groupby("panel"):
        key = list(zip(g["model"].astype(str), g[x].astype(float)))
        g = g.assign(_key=key)
        shared = sorted(set(g.loc[g["construction"] == a, "_key"]) & set(g.loc[g["construction"] == b, "_key"]))
        if not shared:
            continue
        diffs = []
        for k in shared:
            ga, gb = g[(g["_key"] == k) & (g["construction"] == a)], g[(g["_key"] == k) & (g["construction"] == b)]
            da = _draws(ga, n_boot, rng)
            db = _draws(gb, n_boot, rng)
            gap = float(ga["value"].mean() - gb["value"].mean())
            lo, hi = percentile_ci(da - db)
            points.append({"panel": panel, "model": k[0], "x": k[1], "gap": gap, "ci_low": lo, "ci_high": hi})
            diffs.append(da - db)
        mean_draws = np.mean(diffs, axis=0)
        lo, hi = percentile_ci(mean_draws)
        summary.append({"panel": panel, "gap": float(np.mean([p["gap"] for p in points if p["panel"] == panel])),
                        "ci_low": lo, "ci_high": hi, "n_points": len(shared)})
    return (pd.DataFrame(points, columns=["panel", "model", "x", "gap", "ci_low", "ci_high"]),
            pd.DataFrame(summary, columns=["panel", "gap", "ci_low", "ci_high", "n_points"]))


def sensitivity_table(df: pd.DataFrame, x: str = "volume", tau: float = DEFAULT_TAU, n_boot: int = 1000,
                      seed: int = 0) -> pd.DataFrame:
    """All sensitivity measures per panel, abilities ranked by data slope and labelled (``RESPONSIVE_RULE``)."""
    ds = data_sensitivity(df, x, n_boot=n_boot, seed=seed).rename(
        columns={"slope": "data_slope", "ci_low": "data_ci_low", "ci_high": "data_ci_high", "n_points": "data_points"})
    ss = size_sensitivity(df, x, n_boot=n_boot, seed=seed).rename(
        columns={"slope": "size_gain", "ci_low": "size_ci_low", "ci_high": "size_ci_high", "n_points": "size_points"})
    sat = saturation_points(df, x)
    if len(sat):
        sat = sat.sort_values("model_params").groupby("panel").tail(1)[["panel", "saturation_x", "saturated"]]
    _, gap = construction_gap(df, x, n_boot=n_boot, seed=seed)
    gap = gap.rename(columns={"ci_low": "gap_ci_low", "ci_high": "gap_ci_high", "n_points": "gap_points"})
    out = ds.merge(ss, on="panel", how="outer")
    out = out.merge(sat, on="panel", how="left") if len(sat) else out.assign(saturation_x=np.nan, saturated=False)
    out = out.merge(gap, on="panel", how="left") if len(gap) else out.assign(gap=np.nan, gap_ci_low=np.nan,
                                                                              gap_ci_high=np.nan, gap_points=0)
    ood = set(df.loc[df["ood"], "panel"]) if "ood" in df else set()
    out["ood"] = out["panel"].isin(ood)
    out["label"] = np.where((out["data_slope"] >= tau) & (out["data_ci_low"] > 0), "responsive", "resistant")
    out.loc[out["data_slope"].isna(), "label"] = "n/a"
    rankable = (out["panel"] != "overall") & ~out["ood"] & out["data_slope"].notna()
    out["rank"] = np.nan
    out.loc[rankable, "rank"] = out.loc[rankable, "data_slope"].rank(ascending=False, method="min")
    return out.sort_values(["rank", "panel"], na_position="last").reset_index(drop=True)


@dataclass
class Transfer:
    """Leave-one-ability-out results: per left-out ability, and the full matrix over evaluated abilities."""

    per_ability: pd.DataFrame  # model, ability, full, loo, base, gain_from_others, share_of_full_gain
    matrix: pd.DataFrame  # model, left_out, ability, full, loo, delta (= loo - full)


def transfer(df: pd.DataFrame, base: dict[str, float] | None = None) -> Transfer:
    """How much each ability gains from the other abilities' data, from ``loo:<ability>`` cells.

    Each loo cell is matched with the balanced cell of the same model and construction with the same
    per-ability count (else the same volume, else the largest). The base score of ability *a* (what the
    model scores with no data of *a* and no other data) comes from ``base`` when given, else from cells of
    volume 0, else the chance level. ``gain_from_others`` = loo − base; ``share_of_full_gain`` =
    (loo − base) / (full − base).
    """
    cols_a = ["model", "ability", "full", "loo", "base", "gain_from_others", "share_of_full_gain"]
    cols_m = ["model", "left_out", "ability", "full", "loo", "delta"]
    if df.empty or "composition" not in df:
        return Transfer(pd.DataFrame(columns=cols_a), pd.DataFrame(columns=cols_m))
    loo = df[df["composition"].fillna("").str.startswith("loo:")]
    full_pool = df[df["composition"].isin(["balanced", "all"]) & (df["volume"].fillna(0) > 0)]
    zero = df[df["volume"].fillna(-1) == 0]
    per, mat = [], []
    for (model, cons, comp), g in loo.groupby(["model", "construction", "composition"], dropna=False):
        left = comp.split(":", 1)[1]
        cand = full_pool[(full_pool["model"] == model) & (full_pool["construction"] == cons)]
        if cand.empty:
            continue
        pa = g["per_ability"].dropna()
        if len(pa) and (cand["per_ability"] == pa.iloc[0]).any():
            cand = cand[cand["per_ability"] == pa.iloc[0]]
        elif (cand["volume"] == g["volume"].iloc[0]).any():
            cand = cand[cand["volume"] == g["volume"].iloc[0]]
        else:
            cand = cand[cand["volume"] == cand["volume"].max()]
        full_m = cand.groupby("ability")["value"].mean()
        loo_m = g.groupby("ability")["value"].mean()
        for ab in sorted(set(full_m.index) & set(loo_m.index)):
            mat.append({"model": model, "left_out": left, "ability": ab, "full": full_m[ab], "loo": loo_m[ab],
                        "delta": loo_m[ab] - full_m[ab]})
        if left in loo_m.index and left in full_m.index:
            if base and left in base:
                b = float(base[left])
            elif ((zero["model"] == model) & (zero["ability"] == left)).any():
                b = float(zero[(zero["model"] == model) & (zero["ability"] == left)]["value"].mean())
            else:
                b = float(g.loc[g["ability"] == left, "chance"].mean())
                b = 0.0 if np.isnan(b) else b
            gain = loo_m[left] - b
            denom = full_m[left] - b
            per.append({"model": model, "ability": left, "full": full_m[left], "loo": loo_m[left], "base": b,
                        "gain_from_others": gain, "share_of_full_gain": gain / denom if denom > 1e-9 else np.nan})
    return Transfer(pd.DataFrame(per, columns=cols_a), pd.DataFrame(mat, columns=cols_m))
