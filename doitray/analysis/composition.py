"""Composition and strategy (the DMT paper's questions): single vs mixed sources, ratio arms, SFT
strategies, the DMT replay-fraction (k) trade-off, and forgetting across stages.

Scores may be on their metric's own scale (e.g. MT-Bench 1–10); views that put several abilities on
one axis normalise per ability (min–max over the compared runs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pandas as pd

from doitray.analysis.stats import ALPHA, fmt_p, spearman

STAGED = ("sequential", "mixed_sequential", "dmt")
_STRATEGY_ORDER = {"multitask": 0, "sequential": 1, "mixed_sequential": 2, "dmt": 3}


def full_data(d: pd.DataFrame) -> pd.DataFrame:
    """Rows at the largest source fraction when the study varies ``frac`` (rows without one are kept)."""
    if "frac" not in d or d["frac"].dropna().nunique() < 2:
        return d
    f = pd.to_numeric(d["frac"], errors="coerce")
    return d[f.isna() | (f == f.max())]


def k_label(k: float) -> str:
    """1/256-style label of a replay fraction."""
    if k is None or pd.isna(k) or k == 0:
        return "0"
    f = Fraction(float(k)).limit_denominator(4096)
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def strategy_label(row) -> str:
    """'dmt (k=1/256)', 'mixed_sequential', 'multitask', 'multitask [recipe:math_only]', …"""
    s = row.get("strategy") or "multitask"
    if s == "dmt":
        return f"dmt (k={k_label(row.get('replay_frac'))})"
    comp = row.get("composition")
    if isinstance(comp, str) and _single_ability(comp):
        return f"{s} [{comp}]"
    return str(s)


def strategy_comparison(df: pd.DataFrame, panels: list[str] | None = None) -> pd.DataFrame:
    """Mean score per (model, strategy label, panel), seeds averaged; one row each."""
    if df.empty:
        return pd.DataFrame(columns=["model", "model_params", "strategy_label", "panel", "value", "n_seeds"])
    d = df if panels is None else df[df["panel"].isin(panels)]
    if "composition" in d:  # strategies and single-source baselines, not composition variants
        comp = d["composition"].fillna("balanced")
        d = d[comp.isin(["balanced", "all"]) | comp.map(lambda c: _single_ability(c) is not None)]
    d = full_data(d)
    d = d.assign(strategy_label=[strategy_label(r) for r in d.to_dict("records")])
    d["_order"] = [(_STRATEGY_ORDER.get(r.get("strategy") or "multitask", 9), float(r.get("replay_frac") or 0))
                   for r in d.to_dict("records")]
    out = (d.groupby(["model", "model_params", "strategy_label", "panel"], dropna=False)
           .agg(value=("value", "mean"), n_seeds=("value", "count"), _order=("_order", "first")).reset_index())
    return out.sort_values(["model_params", "_order", "panel"]).drop(columns="_order").reset_index(drop=True)


def roles_from_study(study: dict | None, panels: list[str]) -> tuple[list[str], list[str]]:
    """(specialist, general) abilities: the study's ``roles`` when given, else DMT's (general = 'general')."""
    roles = (study or {}).get("roles") or {}
    general = [p for p in roles.get("general", []) if p in panels] or [p for p in panels if p == "general"]
    specialist = [p for p in roles.get("specialist", []) if p in panels] or [
        p for p in panels if p not in general and p != "overall"]
    return specialist, general


@dataclass
class KSweep:
    """The DMT k sweep: scores against the stage-2 replay fraction k (k = 0 is mixed sequential)."""

    table: pd.DataFrame = field(repr=False)  # model, k, k_label, panel, role, value, norm
    summary: list[dict]  # per model and panel: best k, value at k=0, at the smallest k>0, at k=1, ρ with k (CI, p)
    reading: list[str]  # plain-language lines


K_TREND_RULE = ("trend in k: Spearman ρ of the score with k over the DMT cells (k > 0), permutation p "
                "(scipy.stats.permutation_test; exact up to 7 levels), Fisher-z 95% CI (Bonett–Wright); 'rises' / 'falls' only when "
                "p < {alpha:g} (per ability, uncorrected), otherwise 'no significant trend'")


def k_sweep(df: pd.DataFrame, specialist: list[str] | None = None, general: list[str] | None = None,
            alpha: float = ALPHA) -> KSweep:
    """Scores of DMT cells (and mixed-sequential as k = 0) against k, raw and min–max normalised per panel;
    the trend with k is tested as ``K_TREND_RULE`` says."""
    cols = ["model", "model_params", "k", "k_label", "panel", "role", "value", "norm"]
    if df.empty or "strategy" not in df:
        return KSweep(pd.DataFrame(columns=cols), [], [])
    d = df[df["strategy"].isin(["dmt", "mixed_sequential"])].copy()
    d = full_data(d[d["panel"] != "overall"])
    if "composition" in d:
        d = d[d["composition"].fillna("balanced").isin(["balanced", "all"])]
    if d.empty or not (d["strategy"] == "dmt").any():
        return KSweep(pd.DataFrame(columns=cols), [], [])
    d["k"] = np.where(d["strategy"] == "mixed_sequential", 0.0, d["replay_frac"].fillna(0.0))
    panels = list(dict.fromkeys(d["panel"]))
    if specialist is None or general is None:
        sp, ge = roles_from_study(None, panels)
        specialist, general = specialist or sp, general or ge
    t = d.groupby(["model", "model_params", "k", "panel"], dropna=False)["value"].mean().reset_index()
    t["k_label"] = t["k"].map(k_label)
    t["role"] = np.where(t["panel"].isin(general), "general",
                         np.where(t["panel"].isin(specialist), "specialist", "other"))
    span = t.groupby(["model", "panel"])["value"].transform(lambda v: v.max() - v.min())
    lo = t.groupby(["model", "panel"])["value"].transform("min")
    t["norm"] = np.where(span > 0, (t["value"] - lo) / span.replace(0, np.nan), 0.5)
    t = t.sort_values(["model_params", "panel", "k"]).reset_index(drop=True)[cols]
    summary, reading = [], []
    for (model, panel), g in t.groupby(["model", "panel"], sort=False):
        g = g.sort_values("k")
        pos = g[g["k"] > 0]
        best = g.loc[g["value"].idxmax()]
        row = {"model": model, "panel": panel, "role": g["role"].iloc[0], "best_k": float(best["k"]),
               "best_k_label": best["k_label"], "best_value": float(best["value"]),
               "value_k0": float(g.loc[g["k"] == 0, "value"].mean()) if (g["k"] == 0).any() else np.nan,
               "value_min_k": float(pos["value"].iloc[0]) if len(pos) else np.nan,
               "value_max_k": float(pos["value"].iloc[-1]) if len(pos) else np.nan,
               "alpha": alpha}
        for key, sub in (("rho_k", pos), ("rho_k_with_0", g)):
            c = spearman(sub["k"], sub["value"])
            row.update({key: c.r, f"{key}_ci_low": c.ci_low, f"{key}_ci_high": c.ci_high, f"{key}_p": c.p,
                        f"{key}_n": c.n})
        row["trend"] = _trend(row["rho_k"], row["rho_k_p"], alpha)
        summary.append(row)
        reading.append(_read_k(row, pos))
    return KSweep(t, summary, _headlines(summary) + reading)


def _trend(rho: float, p: float, alpha: float) -> str:
    """'rises' / 'falls' when the permutation test rejects no trend at ``alpha``; 'flat' otherwise; 'n/a'."""
    if not np.isfinite(rho) or not np.isfinite(p):
        return "n/a"
    if p < alpha:
        return "rises" if rho > 0 else "falls"
    return "flat"


def _rho_text(row: dict) -> str:
    ci = (f"95% CI [{row['rho_k_ci_low']:+.2f}, {row['rho_k_ci_high']:+.2f}]" if np.isfinite(row["rho_k_ci_low"])
          else "95% CI undefined at |ρ| = 1" if abs(row["rho_k"]) == 1 else "95% CI undefined")
    return (f"Spearman ρ = {row['rho_k']:+.2f} over {row['rho_k_n']} levels k > 0, {ci}, "
            f"permutation p = {fmt_p(row['rho_k_p'])}")


_TREND_WORDS = {"rises": "rises with k", "falls": "falls with k", "flat": "shows no significant trend in k"}


def _headlines(summary: list[dict]) -> list[str]:
    """One trade-off sentence per model: where general ability peaks, how specialist abilities move with k."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in summary):
        rows = [r for r in summary if r["model"] == model]
        gen = [r for r in rows if r["role"] == "general"]
        spec = [r for r in rows if r["role"] == "specialist"]
        parts = []
        for r in gen:
            parts.append(f"general ability {r['panel']} is highest at k={r['best_k_label']} "
                         f"({'small' if r['best_k'] <= 1 / 16 else 'large'} k)")
        for r in gen + spec:
            if r["trend"] != "n/a":
                parts.append(f"{'general ability' if r['role'] == 'general' else 'specialist'} {r['panel']} "
                             f"{_TREND_WORDS[r['trend']]} (ρ = {r['rho_k']:+.2f}, p = {fmt_p(r['rho_k_p'])})")
        if parts:
            lines.append(f"Trade-off ({model}): " + "; ".join(parts) + ".")
    return lines


def _read_k(row: dict, pos: pd.DataFrame) -> str:
    ks = pos["k"].to_numpy()
    small = pos["k_label"].iloc[0] if len(pos) else "?"
    large = pos["k_label"].iloc[-1] if len(pos) else "?"
    if row["trend"] == "n/a":
        trend = "has too few k levels for a trend test (k > 0)"
    else:
        trend = (f"{_TREND_WORDS[row['trend']]} ({_rho_text(row)} {'<' if row['trend'] != 'flat' else '≥'} "
                 f"α = {row['alpha']:g})")
    where = ("at small k" if len(ks) and row["best_k"] <= np.median(ks) else "at large k")
    return (f"{row['model']} {row['panel']} ({row['role']}): {trend}; "
            f"k={small}: {row['value_min_k']:.4g} → k={large}: {row['value_max_k']:.4g}; highest at "
            f"k={row['best_k_label']} ({row['best_value']:.4g}, {where}); k=0: {row['value_k0']:.4g}")


def _single_ability(comp: str) -> str | None:
    if not isinstance(comp, str):
        return None
    kind, _, arg = comp.partition(":")
    if kind in ("single", "only"):
        return arg
    if kind == "recipe":
        return arg[:-5] if arg.endswith("_only") else arg
    return None


def single_vs_mixed(df: pd.DataFrame, x: str = "volume") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Single-source vs mixed-source scores at equal ``x``: (points, crossover per model and panel).

    A single-source cell has composition ``single:<a>``, ``only:<a>`` or ``recipe:<a>[_only]`` and is
    compared on ability *a*; mixed cells are the balanced/all ones. The crossover is where mixed − single
    changes sign from positive (mixing helps at low volume) to negative, interpolated on log x.
    """
    cols = ["panel", "model", "model_params", "x", "single", "mixed", "diff"]
    if df.empty or "composition" not in df:
        return pd.DataFrame(columns=cols), pd.DataFrame(columns=["panel", "model", "crossover_x", "between"])
    d = df[df[x].notna()].copy()
    d["single_of"] = d["composition"].map(_single_ability)
    single = d[d["single_of"].notna() & (d["single_of"] == d["panel"])]
    mixed = d[d["composition"].isin(["balanced", "all"])]
    if "strategy" in d:
        mixed = mixed[mixed["strategy"].fillna("multitask") == "multitask"]
    s = single.groupby(["panel", "model", "model_params", x])["value"].mean().rename("single")
    m = mixed.groupby(["panel", "model", "model_params", x])["value"].mean().rename("mixed")
    pts = pd.concat([s, m], axis=1, join="inner").reset_index().rename(columns={x: "x"})
    pts["diff"] = pts["mixed"] - pts["single"]
    cross = []
    for (panel, model), g in pts.groupby(["panel", "model"]):
        g = g.sort_values("x")
        xs, ds = g["x"].to_numpy(float), g["diff"].to_numpy(float)
        found = None
        for i in range(len(xs) - 1):
            if ds[i] > 0 >= ds[i + 1]:
                lx0, lx1 = np.log(xs[i]), np.log(xs[i + 1])
                t = ds[i] / (ds[i] - ds[i + 1])
                found = (float(np.exp(lx0 + t * (lx1 - lx0))), f"{xs[i]:g}–{xs[i + 1]:g}")
                break
        cross.append({"panel": panel, "model": model, "crossover_x": found[0] if found else np.nan,
                      "between": found[1] if found else ("mixed better throughout" if (ds > 0).all()
                                                         else "single better throughout" if (ds <= 0).all()
                                                         else "no single crossover")})
    return pts[cols], pd.DataFrame(cross, columns=["panel", "model", "crossover_x", "between"])


def ratio_arms(df: pd.DataFrame) -> pd.DataFrame:
    """``ratio:<specialist frac>:<general frac>`` cells arranged as arms: one fraction fixed, the other varied."""
    cols = ["arm", "model", "panel", "x", "value"]
    if df.empty or "composition" not in df:
        return pd.DataFrame(columns=cols)
    d = df[df["composition"].fillna("").str.startswith("ratio:")]
    if "strategy" in d:
        d = d[d["strategy"].fillna("multitask") == "multitask"]
    d = full_data(d).copy()
    if d.empty:
        return pd.DataFrame(columns=cols)
    parts = d["composition"].str.split(":", expand=True)
    d["spec"], d["gen"] = parts[1].astype(float), parts[2].astype(float)
    rows = []
    for fixed, vary, name in (("gen", "spec", "general fixed at {}; specialist varies"),
                              ("spec", "gen", "specialist fixed at {}; general varies")):
        for level, g in d.groupby(fixed):
            if g[vary].nunique() < 2:
                continue
            agg = g.groupby(["model", "panel", vary])["value"].mean().reset_index()
            for r in agg.to_dict("records"):
                rows.append({"arm": name.format(k_label(level)), "model": r["model"], "panel": r["panel"],
                             "x": r[vary], "value": r["value"]})
    return pd.DataFrame(rows, columns=cols)


def forgetting_vs_single(df: pd.DataFrame) -> pd.DataFrame:
    """Per staged cell and specialist ability: the single-source score (``only:<a>``, one stage, full data)
    minus the staged strategy's final score (the DMT paper's reading, e.g. math only 49.1 → sequential 31.4)."""
    cols = ["cell_id", "model", "strategy", "replay_frac", "ability", "before", "before_stage", "final", "drop"]
    if df.empty or "strategy" not in df or "composition" not in df:
        return pd.DataFrame(columns=cols)
    d = full_data(df[df["panel"] != "overall"])
    single = d[d["composition"].map(_single_ability).eq(d["panel"]) & (d["strategy"].fillna("multitask") == "multitask")]
    base = single.groupby(["model", "panel"])["value"].mean()
    staged = d[d["strategy"].isin(STAGED) & d["composition"].fillna("balanced").isin(["balanced", "all"])]
    rows = []
    for r in staged.to_dict("records"):
        key = (r["model"], r["panel"])
        if key in base.index:
            label = strategy_label(r)
            rows.append({"cell_id": r["cell_id"], "model": r["model"], "strategy": label,
                         "replay_frac": r.get("replay_frac"), "ability": r["panel"], "before": float(base[key]),
                         "before_stage": 0, "final": float(r["value"]), "drop": float(base[key] - r["value"])})
    return pd.DataFrame(rows, columns=cols)


def forgetting(all_ckpts: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Per staged cell and ability: best score before the final stage, final score, and the drop."""
    cols = ["cell_id", "model", "strategy", "replay_frac", "ability", "before", "before_stage", "final", "drop"]
    if all_ckpts.empty or "stage" not in all_ckpts:
        return pd.DataFrame(columns=cols)
    d = all_ckpts[all_ckpts["split"] == split]
    if d.empty:
        d = all_ckpts
    d = d[d["ability"] != "overall"]
    rows = []
    for cid, g in d.groupby("cell_id"):
        last_stage = g["stage"].max()
        if g["stage"].nunique() < 2:
            continue
        fin = g[g["stage"] == last_stage]
        fin_ck = fin[fin["selected"]] if fin["selected"].any() else fin[fin["step"] == fin["step"].max()]
        prev = g[g["stage"] < last_stage]
        for ab, pa in prev.groupby("ability"):
            fa = fin_ck[fin_ck["ability"] == ab]
            if fa.empty:
                continue
            top = pa.loc[pa["value"].idxmax()]
            final = float(fa["value"].mean())
            rows.append({"cell_id": cid, "model": g["model"].iloc[0], "strategy": g["strategy"].iloc[0],
                         "replay_frac": g["replay_frac"].iloc[0], "ability": ab, "before": float(top["value"]),
                         "before_stage": int(top["stage"]), "final": final, "drop": float(top["value"]) - final})
    return pd.DataFrame(rows, columns=cols)


def recipe_deltas(df: pd.DataFrame) -> pd.DataFrame:
    """Targeted recipes (``reconstruct``, ``maximum``, ``recipe:<name>``) minus the balanced baseline.

    The baseline is the balanced cell of the same model and construction at the largest volume (DoIT's
    curated-10000); one row per (model, composition, panel).
    """
    cols = ["model", "construction", "composition", "panel", "value", "baseline", "delta"]
    if df.empty or "composition" not in df:
        return pd.DataFrame(columns=cols)
    comp = df["composition"].fillna("balanced")
    targeted = df[~comp.isin(["balanced", "all"]) & ~comp.str.startswith(("loo:", "ratio:"))
                  & comp.map(lambda c: _single_ability(c) is None or c.startswith("recipe:"))]
    base = df[comp.isin(["balanced", "all"])]
    if "strategy" in df:
        targeted = targeted[targeted["strategy"].fillna("multitask") == "multitask"]
        base = base[base["strategy"].fillna("multitask") == "multitask"]
    rows = []
    for (model, cons, c), g in targeted.groupby(["model", "construction", "composition"], dropna=False):
        b = base[(base["model"] == model) & (base["construction"] == cons)]
        if b.empty:
            continue
        b = b[b["volume"] == b["volume"].max()].groupby("panel")["value"].mean()
        for panel, v in g.groupby("panel")["value"].mean().items():
            if panel in b.index:
                rows.append({"model": model, "construction": cons, "composition": c, "panel": panel,
                             "value": v, "baseline": b[panel], "delta": v - b[panel]})
    return pd.DataFrame(rows, columns=cols)
