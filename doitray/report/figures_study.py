"""Figures of the study-level analyses: sensitivity, transfer, predictors, forecast, strategy, k sweep."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from scipy import stats as st

from doitray.analysis.composition import K_TREND_RULE, k_label
from doitray.analysis.sensitivity import rules
from doitray.analysis.stats import ALPHA, fmt_p
from doitray.report.figures_curves import Figure, _custom, _layout
from doitray.report.style import Palette, display_name, log_ticks, order_panels, value_scale

LABEL_COLOURS = {"responsive": "#1f77b4", "not significant": "#bbbbbb", "n/a": "#eeeeee"}


def sensitivity_figure(sens: pd.DataFrame) -> Figure | None:
    s = sens[(sens["panel"] != "overall") & sens["data_slope"].notna()].sort_values("data_slope")
    if s.empty:
        return None
    alpha = float(s["alpha"].iloc[0]) if "alpha" in s else ALPHA
    has_size = s["size_gain"].notna().any()
    fig = make_subplots(rows=1, cols=2 if has_size else 1, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=["data: points gained per doubling of volume",
                                        "size: points gained per doubling of parameters"][:2 if has_size else 1])
    names = [display_name(p) + (" (OOD)" if o else "") for p, o in zip(s["panel"], s["ood"])]
    fig.add_trace(go.Bar(
        y=names, x=s["data_slope"] * 100, orientation="h",
        marker_color=[LABEL_COLOURS.get(l, "#eeeeee") for l in s["label"]],
        error_x=dict(type="data", symmetric=False, array=(s["data_ci_high"] - s["data_slope"]) * 100,
                     arrayminus=(s["data_slope"] - s["data_ci_low"]) * 100),
        customdata=_custom(s["label"], s["rank"].fillna(0), s["data_points"], s["data_ci_low"] * 100,
                           s["data_ci_high"] * 100, [fmt_p(v) for v in s["data_p"]], [fmt_p(v) for v in s["data_q"]],
                           s["saturation_note"].fillna("")),
        hovertemplate="%{y}: %{x:.2f} points / doubling, 95% CI [%{customdata[3]:.2f}, %{customdata[4]:.2f}]<br>"
                      "one-sided p %{customdata[5]}, BH q %{customdata[6]} → %{customdata[0]} (rank %{customdata[1]})"
                      "<br>%{customdata[7]}<br>%{customdata[2]} design points<extra></extra>",
        name="data slope", showlegend=False), 1, 1)
    if has_size:
        fig.add_trace(go.Bar(
            y=names, x=s["size_gain"] * 100, orientation="h", marker_color="#2ca02c",
            error_x=dict(type="data", symmetric=False, array=(s["size_ci_high"] - s["size_gain"]) * 100,
                         arrayminus=(s["size_gain"] - s["size_ci_low"]) * 100),
            customdata=_custom(s["size_ci_low"] * 100, s["size_ci_high"] * 100, [fmt_p(v) for v in s["size_p"]],
                               [fmt_p(v) for v in s["size_q"]]),
            hovertemplate="%{y}: %{x:.2f} points / doubling of parameters, 95% CI [%{customdata[0]:.2f}, "
                          "%{customdata[1]:.2f}]<br>two-sided p %{customdata[2]}, BH q %{customdata[3]}<extra></extra>",
            showlegend=False), 1, 2)
    fig.add_vline(x=0, line_color="#888", row=1, col=1)
    _layout(fig, max(380, 230 + 30 * len(s)),
            f"Sensitivity ranking (blue = responsive: slope > 0 at BH q < {alpha:g}; grey = not significant)")
    fig.update_xaxes(title="score points (of 100) per doubling")
    return Figure("sensitivity", "Sensitivity ranking", fig, sens,
                  "Bars: OLS slopes with 95% t-based CIs; hover for p and q.\n" + "\n".join(f"• {r}." for r in rules(alpha)))


def gap_figure(points: pd.DataFrame, pal: Palette) -> Figure | None:
    if points is None or points.empty:
        return None
    fig = go.Figure()
    order = {m: i for i, m in enumerate(pal.models)}
    rank = {p: i for i, p in enumerate(order_panels(points["panel"]))}
    points = points.assign(_o=points["model"].map(order), _p=points["panel"].map(rank)).sort_values(["_o", "_p"])
    for model, g in points.groupby("model", sort=False):
        fig.add_trace(go.Box(x=[display_name(p) for p in g["panel"]], y=g["gap"] * 100, name=str(model),
                             boxpoints="all", marker_color=pal.model_colour(model),
                             hovertemplate="%{x}: %{y:.2f} points<extra>" + str(model) + "</extra>"))
    fig.add_hline(y=0, line_color="#888")
    _layout(fig, 560, "Curated − synthetic score at equal volume (points; one dot per volume)", legend="top",
            bottom=170)
    fig.update_layout(boxmode="group")
    fig.update_yaxes(title="curated − synthetic (points)")
    return Figure("gap", "Curated vs synthetic gap", fig, points.drop(columns=["_o", "_p"]),
                  "One dot per (model, volume); its 95% CI (the two scores' standard errors combined) is in the "
                  "table. The per-ability mean gap, its paired t-test CI and q are in the sensitivity table.")


def transfer_figure(matrix: pd.DataFrame, per_ability: pd.DataFrame) -> Figure | None:
    if matrix.empty:
        return None
    m = matrix.groupby(["left_out", "ability"])["delta"].mean().unstack()
    m = m.loc[order_panels(m.index)[::-1], order_panels(m.columns)]
    fig = go.Figure(go.Heatmap(z=m.to_numpy() * 100, x=[display_name(c) for c in m.columns],
                               y=["without " + display_name(r) for r in m.index], colorscale="RdBu", zmid=0,
                               colorbar=dict(title="points"),
                               hovertemplate="%{y} → %{x}: %{z:.2f} points vs full mix<extra></extra>"))
    _layout(fig, 260 + 40 * len(m), "Leave-one-ability-out: score change vs the full mix (points)", legend="top",
            bottom=150)
    fig.update_xaxes(title="evaluated ability")
    return Figure("transfer", "Transfer (leave-one-ability-out)", fig,
                  per_ability if len(per_ability) else matrix,
                  "Diagonal: what an ability loses without its own data; gain_from_others = loo − base score.")


def predictor_figure(fit) -> Figure | None:
    if fit is None:
        return None
    t = fit.table
    feats = fit.features
    fig = make_subplots(rows=1, cols=len(feats) + 1, subplot_titles=[
        *(f"{f} (ρ = {fit.spearman[f].r:+.2f}, p = {fmt_p(fit.spearman[f].p)})" for f in feats),
        f"fitted vs actual (R² = {fit.r2:.2f}, F-test p = {fmt_p(fit.f_pvalue)})"])
    for i, f in enumerate(feats, start=1):
        fig.add_trace(go.Scatter(x=t[f], y=t["target"] * 100, mode="markers+text", text=t["ability"],
                                 textposition="top center", showlegend=False, marker=dict(size=9),
                                 hovertemplate="%{text}: " + f + " %{x:.3g}, slope %{y:.2f}<extra></extra>"), 1, i)
        if t[f].nunique() >= 2 and len(t) >= 3:
            lr = st.linregress(t[f].to_numpy(float), t["target"].to_numpy(float) * 100)
            xs = np.linspace(t[f].min(), t[f].max(), 20)
            half = st.t.ppf(0.975, len(t) - 2) * lr.stderr
            fig.add_trace(go.Scatter(
                x=xs, y=lr.intercept + lr.slope * xs, mode="lines", showlegend=False,
                line=dict(color="#888", dash="dash"),
                hovertemplate=f"simple OLS line: {lr.slope:+.3g} [{lr.slope - half:+.3g}, {lr.slope + half:+.3g}] "
                              f"per unit of {f}, p = {fmt_p(lr.pvalue)}<extra></extra>"), 1, i)
        fig.update_xaxes(title=f, row=1, col=i)
    j = len(feats) + 1
    lim = [min(t["fitted"].min(), t["target"].min()) * 100, max(t["fitted"].max(), t["target"].max()) * 100]
    fig.add_trace(go.Scatter(x=t["fitted"] * 100, y=t["target"] * 100, mode="markers+text", text=t["ability"],
                             textposition="top center", showlegend=False,
                             hovertemplate="%{text}: fitted %{x:.2f}, actual %{y:.2f}<extra></extra>"), 1, j)
    fig.add_trace(go.Scatter(x=lim, y=lim, mode="lines", line=dict(color="#888", dash="dot"), showlegend=False,
                             hoverinfo="skip"), 1, j)
    fig.update_xaxes(title="fitted slope (points / doubling)", row=1, col=j)
    fig.update_yaxes(title="data slope (points / doubling)", row=1, col=1)
    _layout(fig, 460, f"Predictors of data sensitivity (leave-one-ability-out MAE {fit.loo_mae * 100:.2f} points)")
    corr = "; ".join(f"{f}: Spearman {fit.spearman[f].text('ρ')}, Pearson {fit.pearson[f].text('r')}" for f in feats)
    loo = fit.loo_spearman.text("ρ") if fit.loo_spearman is not None else "–"
    return Figure("predictors", "Complexity and Transference as predictors", fig, t,
                  f"OLS (statsmodels) of the data slope on {', '.join(feats)}: {fit.fit_text()}. Coefficients with "
                  f"95% CIs and t-test p: {fit.coef_text()}.\nCorrelations with the data slope: {corr} (Spearman: "
                  "permutation p, Fisher-z CI with the Bonett–Wright variance; Pearson: t-test p, Fisher-z CI; "
                  f"uncorrected).\nLeave-one-ability-out predictions vs actual: {loo}.")


def forecast_figure(fc, pal: Palette) -> Figure | None:
    if fc is None or fc.points.empty:
        return None
    p = fc.points[fc.points["predicted"].notna()]
    factor, unit = value_scale(p["actual"])
    fig = go.Figure()
    for role, sym in (("train", "circle-open"), ("heldout", "diamond")):
        g = p[p["role"] == role]
        fig.add_trace(go.Scatter(
            x=g["predicted"] * factor, y=g["actual"] * factor, mode="markers", name=role,
            marker=dict(symbol=sym, size=9 if role == "heldout" else 6,
                        color=[pal.model_colour(m) for m in g["model"]]),
            customdata=_custom(g["panel"], g["model"], g["construction"], g["x"]),
            hovertemplate="%{customdata[0]} · %{customdata[1]} · %{customdata[2]} · N=%{customdata[3]}<br>"
                          "predicted %{x:.2f}, actual %{y:.2f}<extra>" + role + "</extra>"))
    lim = [min(p["predicted"].min(), p["actual"].min()) * factor, max(p["predicted"].max(), p["actual"].max()) * factor]
    fig.add_trace(go.Scatter(x=lim, y=lim, mode="lines", name="perfect forecast",
                             line=dict(color="#888", dash="dot"), hoverinfo="skip"))
    _layout(fig, 480, f"Forecast from cheap runs vs actual (held-out MAE {fc.mae * factor:.2f}, "
                      f"ability-order agreement {fc.ability_decisions:.0%})")
    fig.update_xaxes(title=f"forecast {unit}")
    fig.update_yaxes(title=f"actual {unit}")
    return Figure("forecast", "Forecast vs actual", fig, fc.points, fc.rule + ".")


def _facet(n: int, ncols: int = 3) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def strategy_figure(strat: pd.DataFrame, pal: Palette) -> Figure | None:
    if strat is None or strat.empty:
        return None
    panels = order_panels(strat["panel"])
    nrows, ncols = _facet(len(panels))
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=[display_name(p) for p in panels])
    for i, p in enumerate(panels):
        r, c = i // ncols + 1, i % ncols + 1
        sub = strat[strat["panel"] == p]
        factor, unit = value_scale(sub["value"], "judge" if p == "general" and sub["value"].max() > 1 else None)
        for model, g in sub.groupby("model", sort=False):
            fig.add_trace(go.Bar(x=g["strategy_label"], y=g["value"] * factor, name=str(model), legendgroup=str(model),
                                 showlegend=(i == 0), marker_color=pal.model_colour(model),
                                 hovertemplate="%{x}: %{y:.2f}<extra>" + str(model) + "</extra>"), r, c)
        fig.update_yaxes(title=unit, row=r, col=c)
    _layout(fig, 340 * nrows + 160, "Scores by SFT strategy")
    fig.update_layout(barmode="group")
    return Figure("strategy", "Strategy comparison", fig, strat)


def k_sweep_figure(ks, pal: Palette) -> Figure | None:
    t = ks.table
    if t is None or t.empty:
        return None
    panels = list(dict.fromkeys(t["panel"]))
    order = [k_label(k) for k in sorted(t["k"].unique())]
    fig = make_subplots(rows=2, cols=len(panels), specs=[[{}] * len(panels), [{"colspan": len(panels)}] +
                                                          [None] * (len(panels) - 1)],
                        subplot_titles=[*(f"{display_name(p)} ({t[t['panel'] == p]['role'].iloc[0]})" for p in panels),
                                        "trade-off: each ability min–max normalised over the sweep"],
                        vertical_spacing=0.16)
    for i, p in enumerate(panels, start=1):
        sub = t[t["panel"] == p]
        factor, unit = value_scale(sub["value"], "judge" if sub["value"].max() > 1 else None)
        for model, g in sub.groupby("model", sort=False):
            fig.add_trace(go.Scatter(x=g["k_label"], y=g["value"] * factor, mode="lines+markers",
                                     name=str(model), legendgroup=str(model), showlegend=(i == 1),
                                     line=dict(color=pal.model_colour(model)),
                                     hovertemplate="k=%{x}: %{y:.2f}<extra>" + f"{model} {p}</extra>"), 1, i)
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=order, title="k (replay fraction)",
                         row=1, col=i)
        fig.update_yaxes(title=unit, row=1, col=i)
    dashes = {"specialist": "solid", "general": "dash", "other": "dot"}
    for (model, p), g in t.groupby(["model", "panel"], sort=False):
        fig.add_trace(go.Scatter(x=g["k_label"], y=g["norm"], mode="lines+markers", name=f"{model} {p}",
                                 line=dict(dash=dashes[g["role"].iloc[0]]),
                                 hovertemplate="k=%{x}: %{y:.2f} of range<extra>" + f"{model} {p}</extra>"), 2, 1)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=order, title="k (replay fraction; 0 = mixed "
                     "sequential)", row=2, col=1)
    fig.update_yaxes(title="normalised score (0 = worst, 1 = best in sweep)", row=2, col=1)
    _layout(fig, 860, "DMT: specialist vs general ability against the replay fraction k")
    rule = K_TREND_RULE.format(alpha=ALPHA)
    return Figure("k_sweep", "DMT k sweep", fig, t, "\n".join(ks.reading) + "\n" + rule[0].upper() + rule[1:] + ".")


def single_mixed_figure(pts: pd.DataFrame, cross: pd.DataFrame, pal: Palette, x_axis: str) -> Figure | None:
    if pts is None or pts.empty:
        return None
    panels = list(dict.fromkeys(pts["panel"]))
    nrows, ncols = _facet(len(panels))
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=[display_name(p) for p in panels])
    for i, p in enumerate(panels):
        r, c = i // ncols + 1, i % ncols + 1
        sub = pts[pts["panel"] == p]
        factor, unit = value_scale(pd.concat([sub["single"], sub["mixed"]]))
        for model, g in sub.groupby("model", sort=False):
            g = g.sort_values("x")
            for col, dash in (("single", "solid"), ("mixed", "dot")):
                fig.add_trace(go.Scatter(x=g["x"], y=g[col] * factor, mode="lines+markers", name=f"{model} {col}",
                                         legendgroup=f"{model} {col}", showlegend=(i == 0),
                                         line=dict(color=pal.model_colour(model), dash=dash),
                                         hovertemplate="%{x}: %{y:.2f}<extra>" + f"{model} {col}</extra>"), r, c)
        fig.update_xaxes(row=r, col=c, **log_ticks(sub["x"], x_axis))
        fig.update_yaxes(row=r, col=c, title=unit if c == 1 else None)
    _layout(fig, 340 * nrows + 160, "Single source (solid) vs mixed sources (dotted) at equal data quantity")
    return Figure("single_mixed", "Single vs mixed sources", fig, cross if len(cross) else pts,
                  "Crossover: where mixing stops helping (mixed − single turns negative).")


def ratio_figure(arms: pd.DataFrame) -> Figure | None:
    if arms is None or arms.empty:
        return None
    panels = list(dict.fromkeys(arms["panel"]))
    nrows, ncols = _facet(len(panels))
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=[display_name(p) for p in panels])
    for i, p in enumerate(panels):
        r, c = i // ncols + 1, i % ncols + 1
        sub = arms[arms["panel"] == p]
        factor, unit = value_scale(sub["value"])
        for (arm, model), g in sub.groupby(["arm", "model"], sort=False):
            g = g.sort_values("x")
            fig.add_trace(go.Scatter(x=g["x"], y=g["value"] * factor, mode="lines+markers", name=f"{model}: {arm}",
                                     legendgroup=f"{model}{arm}", showlegend=(i == 0),
                                     hovertemplate="%{x}: %{y:.2f}<extra>" + arm + "</extra>"), r, c)
        fig.update_xaxes(row=r, col=c, **log_ticks(sub["x"], "frac"))
        fig.update_yaxes(row=r, col=c, title=unit if c == 1 else None)
    _layout(fig, 340 * nrows + 160, "Composition ratio arms")
    return Figure("ratio", "Ratio arms", fig, arms)


def forgetting_figure(fg: pd.DataFrame) -> Figure | None:
    if fg is None or fg.empty:
        return None
    g = fg.groupby(["strategy", "ability"])["drop"].mean().reset_index()
    fig = go.Figure()
    for ab, s in g.groupby("ability", sort=False):
        factor, _ = value_scale(fg.loc[fg["ability"] == ab, ["before", "final"]].stack())
        fig.add_trace(go.Bar(x=s["strategy"], y=s["drop"] * factor, name=display_name(ab),
                             hovertemplate="%{x}: drop %{y:.2f}<extra>" + ab + "</extra>"))
    fig.add_hline(y=0, line_color="#888")
    _layout(fig, 420, "Forgetting: reference score (best before the last stage, or the single-source run) minus "
                      "the final score")
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="drop (points; > 0 = forgotten)")
    return Figure("forgetting", "Forgetting across stages", fig, fg)


def recipe_figure(deltas: pd.DataFrame) -> Figure | None:
    if deltas is None or deltas.empty:
        return None
    d = deltas.assign(row=deltas["model"].astype(str) + " · " + deltas["composition"].astype(str))
    m = d.pivot_table(index="row", columns="panel", values="delta")
    m = m[order_panels(m.columns)]
    fig = go.Figure(go.Heatmap(z=m.to_numpy() * 100, x=[display_name(c) for c in m.columns], y=list(m.index),
                               colorscale="RdBu", zmid=0, colorbar=dict(title="points"),
                               hovertemplate="%{y} → %{x}: %{z:+.2f} points vs baseline<extra></extra>"))
    _layout(fig, max(380, 260 + 40 * len(m)), "Targeted recipes minus the balanced baseline (largest volume), points",
            legend="top", bottom=150)
    return Figure("recipes", "Targeted recipes vs baseline", fig, deltas)


STATE_COLOURS = {"done": "#2ca02c", "running": "#1f77b4", "pending": "#bbbbbb", "failed": "#d62728"}


def completion_figure(cells: pd.DataFrame, models: list[str]) -> Figure | None:
    """Cells by state for each model: how far the study has come."""
    if cells is None or cells.empty:
        return None
    counts = cells.groupby(["model", "state"]).size().rename("cells").reset_index()
    order = [m for m in models if m in set(counts["model"])] + sorted(set(counts["model"]) - set(models))
    fig = go.Figure()
    for state in [s for s in STATE_COLOURS if s in set(counts["state"])] + sorted(set(counts["state"]) - set(STATE_COLOURS)):
        g = counts[counts["state"] == state].set_index("model")["cells"].reindex(order).fillna(0)
        fig.add_trace(go.Bar(y=order, x=g, name=state, orientation="h",
                             marker_color=STATE_COLOURS.get(state, "#9467bd"),
                             hovertemplate="%{y}: %{x} cells " + state + "<extra></extra>"))
    _layout(fig, max(260, 200 + 40 * len(order)), "Cells by state per model", legend="top", bottom=60)
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title="cells")
    return Figure("completion", "Completion", fig, counts)
