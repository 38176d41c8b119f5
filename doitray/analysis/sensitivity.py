"""Per-ability sensitivity to data and to model size, saturation, construction gap, ranking, transfer.

Every slope and difference comes with a 95% CI and a p-value, and with a Benjamini–Hochberg q-value across
the abilities tested together (``FAMILY_RULE``); a label ("responsive", "saturates at N") is only given when
its test says so (``RESPONSIVE_RULE``, ``SATURATION_RULE``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as st

from doitray.analysis.curves import point_estimate, scaling_grid
from doitray.analysis.stats import ALPHA, SATURATION_FORM, Z95, bh, fe_slope, fit_saturation, fmt_p

FAMILY_RULE = ("q: Benjamini–Hochberg (statsmodels multipletests, fdr_bh) over the in-domain abilities; "
               "out-of-domain panels are corrected as their own family, the overall score on its own")
RESPONSIVE_RULE = ("responsive: the data slope (OLS of the score on log2 of the data quantity, one intercept per "
                   "model size, statsmodels; the score gained per doubling of data) is > 0 by a one-sided t-test "
                   "with Benjamini–Hochberg q < {alpha:g} across the in-domain abilities; otherwise 'not "
                   "significant' (no evidence of a gain, which is not evidence that there is none)")
SIZE_RULE = ("size gain: OLS of the score on log2(parameters), one intercept per data quantity; two-sided t-test, "
             "q across abilities")
SATURATION_RULE = ("saturation (largest model): " + SATURATION_FORM + ", fitted by scipy.optimize.curve_fit; "
                   "'saturates at N' only when the extra-sum-of-squares F-test against the straight line gives "
                   "q < {alpha:g} across abilities and N (where the fit reaches 95% of its plateau gain) lies "
                   "within the tested volumes; otherwise 'no saturation detected'")
GAP_RULE = ("curated − synthetic: mean paired difference over the (model, data quantity) points both have; "
            "paired t-test (scipy.stats.ttest_rel) CI and p, q across abilities")


def rules(alpha: float = ALPHA) -> list[str]:
    """The tests behind the sensitivity table, in words (for captions and the text summary)."""
    return [r.format(alpha=alpha) for r in (RESPONSIVE_RULE, SIZE_RULE, SATURATION_RULE, GAP_RULE, FAMILY_RULE)]


def reference_construction(df: pd.DataFrame) -> str | None:
    """'curated' when the table has it, else its most common construction."""
    if "construction" not in df or df["construction"].dropna().empty:
        return None
    cons = df["construction"].dropna()
    return "curated" if (cons == "curated").any() else str(cons.value_counts().index[0])


def _family(panel: str, ood: bool) -> str:
    return "overall" if panel == "overall" else ("ood" if ood else "in-domain")


def _ood_panels(df: pd.DataFrame) -> set:
    return set(df.loc[df["ood"].astype(bool), "panel"]) if "ood" in df and len(df) else set()


def add_q(frame: pd.DataFrame, p_col: str, q_col: str, ood: set, by: str | None = None) -> pd.DataFrame:
    """Add Benjamini–Hochberg q-values of ``p_col`` per family (``FAMILY_RULE``), within each ``by`` level."""
    frame = frame.copy()
    frame[q_col] = np.nan
    if frame.empty:
        return frame
    key = frame["panel"].map(lambda p: _family(p, p in ood))
    if by is not None:
        key = key + "\x00" + frame[by].astype(str)
    for fam in key.unique():
        idx = frame.index[key == fam]
        frame.loc[idx, q_col] = bh(frame.loc[idx, p_col].to_numpy(float))
    return frame


def _reference(df: pd.DataFrame, construction: str | None) -> pd.DataFrame:
    d = scaling_grid(df)
    construction = construction or reference_construction(d)
    return d[d["construction"] == construction] if construction is not None else d


SLOPE_COLUMNS = ["panel", "slope", "ci_low", "ci_high", "p", "p_greater", "q", "df", "n_points"]


def _slopes(d: pd.DataFrame, slope_col: str, group_col: str, q_on: str) -> pd.DataFrame:
    rows = []
    for panel, g in d.groupby("panel"):
        g = g[g[slope_col].notna() & (g[slope_col] > 0) & g["value"].notna()]
        s = fe_slope(g["value"], np.log2(g[slope_col].to_numpy(float)), g[group_col].astype(str))
        rows.append({"panel": panel, "slope": s.slope, "ci_low": s.ci_low, "ci_high": s.ci_high, "p": s.p,
                     "p_greater": s.p_greater, "df": s.df,
                     "n_points": int(g[[group_col, slope_col]].drop_duplicates().shape[0])})
    out = pd.DataFrame(rows, columns=[c for c in SLOPE_COLUMNS if c != "q"])
    return add_q(out, q_on, "q", _ood_panels(d))[SLOPE_COLUMNS]


def data_sensitivity(df: pd.DataFrame, x: str = "volume", construction: str | None = None) -> pd.DataFrame:
    """Per panel: score gained per doubling of ``x`` (OLS on log2 x over every cell, one intercept per model),
    its 95% CI, the two-sided p, the one-sided p for a gain (``p_greater``) and its q-value."""
    return _slopes(_reference(df, construction), x, "model", "p_greater")


def size_sensitivity(df: pd.DataFrame, x: str = "volume", construction: str | None = None) -> pd.DataFrame:
    """Per panel: score gained per doubling of parameters (one intercept per data quantity), 95% CI, p, q."""
    d = _reference(df, construction)
    return _slopes(d.assign(_x=d[x].astype(str)), "model_params", "_x", "p")


SATURATION_COLUMNS = ["panel", "model", "model_params", "saturation_x", "in_range", "saturation_c",
                      "saturation_c_ci_low", "saturation_c_ci_high", "saturation_f", "saturation_p", "saturation_q",
                      "saturated", "saturation_n", "saturation_note", "best"]


def saturation_points(df: pd.DataFrame, x: str = "volume", construction: str | None = None,
                      alpha: float = ALPHA) -> pd.DataFrame:
    """Per panel and model: the saturating fit of the reference-construction cells (``SATURATION_RULE``).

    ``saturation_x`` is where the fitted curve reaches 95% of its plateau gain; ``saturated`` is True only
    when the F-test's q (across the panels of that model) is below ``alpha``, the curve rises, and
    ``saturation_x`` is within the tested range.
    """
    d = _reference(df, construction)
    d = d[d[x].notna() & (pd.to_numeric(d[x], errors="coerce") > 0) & d["value"].notna()]
    rows = []
    for (panel, model), g in d.groupby(["panel", "model"], sort=False):
        f = fit_saturation(g[x].to_numpy(float), g["value"].to_numpy(float))
        rows.append({"panel": panel, "model": model, "model_params": g["model_params"].iloc[0],
                     "saturation_x": f.x95, "in_range": f.in_range and f.s > 0, "saturation_c": f.c,
                     "saturation_c_ci_low": f.c_ci_low, "saturation_c_ci_high": f.c_ci_high,
                     "saturation_f": f.f, "saturation_p": f.p, "saturation_n": f.n, "saturation_note": f.note,
                     "best": float(g.groupby(x)["value"].mean().max())})
    out = pd.DataFrame(rows, columns=[c for c in SATURATION_COLUMNS if c not in ("saturation_q", "saturated")])
    out = add_q(out, "saturation_p", "saturation_q", _ood_panels(d), by="model")
    out["saturated"] = (out["saturation_q"] < alpha) & out["in_range"].astype(bool)
    out["saturation_note"] = [saturation_text(r, alpha) for r in out.to_dict("records")]
    return out[SATURATION_COLUMNS]


def saturation_text(r: dict, alpha: float = ALPHA) -> str:
    """'saturates at 640 (F-test q = 0.003)', 'no saturation detected (F-test q = 0.41)', …"""
    if not np.isfinite(r.get("saturation_p", np.nan)):
        return f"untested: {r.get('saturation_note') or 'no fit'}"
    q = f"F-test q = {fmt_p(r['saturation_q'])}"
    if r["saturated"]:
        return f"saturates at {r['saturation_x']:.4g} ({q})"
    if r["saturation_q"] < alpha and r["saturation_c"] > 0 and np.isfinite(r["saturation_x"]):
        return f"no saturation detected in range: curving ({q}), 95% of the plateau only at ≈{r['saturation_x']:.3g}"
    return f"no saturation detected ({q})"


GAP_POINT_COLUMNS = ["panel", "model", "x", "gap", "ci_low", "ci_high"]
GAP_COLUMNS = ["panel", "gap", "ci_low", "ci_high", "p", "q", "n_points"]


def construction_gap(df: pd.DataFrame, x: str = "volume", a: str = "curated", b: str = "synthetic",
                     n_boot: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score of construction ``a`` minus ``b`` at equal ``x`` and model: (per-point table, per-panel summary).

    A point's CI combines the two scores' standard errors (``curves.point_estimate``); a panel's gap is the
    mean over its shared points with a paired t-test (``scipy.stats.ttest_rel``) CI and p, and q across panels
    (``GAP_RULE``). A panel with a single shared point uses that point's CI and a z-test.
    """
    d = scaling_grid(df)
    d = d[d["construction"].isin([a, b]) & d[x].notna()]
    points, summary = [], []
    i = 0
    for panel, g in d.groupby("panel"):
        key = list(zip(g["model"].astype(str), g[x].astype(float)))
        g = g.assign(_key=key)
        shared = sorted(set(g.loc[g["construction"] == a, "_key"]) & set(g.loc[g["construction"] == b, "_key"]))
        if not shared:
            continue
        va, vb, ses = [], [], []
        for k in shared:
            pa = point_estimate(g[(g["_key"] == k) & (g["construction"] == a)], n_boot, seed + i)
            pb = point_estimate(g[(g["_key"] == k) & (g["construction"] == b)], n_boot, seed + i + 1)
            i += 2
            gap, se = pa["value"] - pb["value"], float(np.hypot(pa["se"], pb["se"]))
            points.append({"panel": panel, "model": k[0], "x": k[1], "gap": gap,
                           "ci_low": gap - Z95 * se, "ci_high": gap + Z95 * se})
            va.append(pa["value"]), vb.append(pb["value"]), ses.append(se)
        summary.append({"panel": panel, **_paired_gap(np.array(va), np.array(vb), ses[0]), "n_points": len(shared)})
    pts = pd.DataFrame(points, columns=GAP_POINT_COLUMNS)
    summ = pd.DataFrame(summary, columns=[c for c in GAP_COLUMNS if c != "q"])
    return pts, add_q(summ, "p", "q", _ood_panels(d))[GAP_COLUMNS]


def _paired_gap(va: np.ndarray, vb: np.ndarray, se_one: float) -> dict:
    diff = va - vb
    gap = float(diff.mean())
    if len(diff) == 1:
        p = float(2 * st.norm.sf(abs(gap) / se_one)) if se_one > 0 else (0.0 if gap != 0 else 1.0)
        return {"gap": gap, "ci_low": gap - Z95 * se_one, "ci_high": gap + Z95 * se_one, "p": p}
    if np.allclose(diff, diff[0], rtol=0, atol=1e-12):  # no spread to test against
        return {"gap": gap, "ci_low": gap, "ci_high": gap, "p": 0.0 if abs(gap) > 1e-12 else 1.0}
    res = st.ttest_rel(va, vb)
    ci = res.confidence_interval(0.95)
    return {"gap": gap, "ci_low": float(ci.low), "ci_high": float(ci.high), "p": float(res.pvalue)}


LABELS = ("responsive", "not significant", "n/a")


def sensitivity_table(df: pd.DataFrame, x: str = "volume", n_boot: int = 1000, seed: int = 0,
                      alpha: float = ALPHA) -> pd.DataFrame:
    """All sensitivity measures per panel with CIs, p and q; abilities ranked by data slope and labelled
    (``RESPONSIVE_RULE``); saturation from the largest model (``SATURATION_RULE``)."""
    ds = data_sensitivity(df, x).rename(columns={
        "slope": "data_slope", "ci_low": "data_ci_low", "ci_high": "data_ci_high", "p": "data_p_two_sided",
        "p_greater": "data_p", "q": "data_q", "df": "data_df", "n_points": "data_points"})
    ss = size_sensitivity(df, x).drop(columns=["p_greater"]).rename(columns={
        "slope": "size_gain", "ci_low": "size_ci_low", "ci_high": "size_ci_high", "p": "size_p", "q": "size_q",
        "df": "size_df", "n_points": "size_points"})
    sat = saturation_points(df, x, alpha=alpha)
    sat_cols = ["saturation_x", "saturated", "saturation_p", "saturation_q", "saturation_c", "saturation_note"]
    if len(sat):
        sat = sat.sort_values("model_params").groupby("panel").tail(1)[["panel", *sat_cols]]
    _, gap = construction_gap(df, x, n_boot=n_boot, seed=seed)
    gap = gap.rename(columns={"ci_low": "gap_ci_low", "ci_high": "gap_ci_high", "p": "gap_p", "q": "gap_q",
                              "n_points": "gap_points"})
    out = ds.merge(ss, on="panel", how="outer")
    out = out.merge(sat, on="panel", how="left") if len(sat) else out.assign(
        saturation_x=np.nan, saturated=False, saturation_p=np.nan, saturation_q=np.nan, saturation_c=np.nan,
        saturation_note="untested: no curve")
    out["saturated"] = out["saturated"].fillna(False).astype(bool)
    out["saturation_note"] = out["saturation_note"].fillna("untested: no curve")
    out = out.merge(gap, on="panel", how="left") if len(gap) else out.assign(
        gap=np.nan, gap_ci_low=np.nan, gap_ci_high=np.nan, gap_p=np.nan, gap_q=np.nan, gap_points=0)
    out["ood"] = out["panel"].isin(_ood_panels(df))
    out["label"] = np.where((out["data_q"] < alpha) & (out["data_slope"] > 0), "responsive", "not significant")
    out.loc[out["data_slope"].isna() | out["data_p"].isna(), "label"] = "n/a"
    out["alpha"] = alpha
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
