"""Figures of growth: score vs data volume per ability, vs model size, vs checkpoint."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from doitray.report.style import CHANCE_COLOUR, X_TITLES, Palette, display_name, log_ticks, value_scale


@dataclass
class Figure:
    """One report figure with the numbers behind it."""

    key: str
    title: str
    fig: go.Figure
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    caption: str = ""


HOVER = ("<b>%{customdata[0]}</b><br>%{customdata[6]}: %{x:,}<br>score %{y:.2f} "
         "[CI %{customdata[3]:.2f}, %{customdata[4]:.2f}]<br>n = %{customdata[2]} items, seeds %{customdata[5]}"
         "<br>cells: %{customdata[7]}<br>checkpoint: %{customdata[1]}<extra></extra>")


BASE_STEP = 4  # the base models' point (data quantity 0) sits this factor left of the smallest one on the log axis
BASE_HOVER = ("<b>%{customdata[0]}</b> (not instruction-tuned)<br>score %{y:.2f} [CI %{customdata[2]:.2f}, "
              "%{customdata[3]:.2f}]<br>n = %{customdata[1]} items<br>cell: %{customdata[4]}<extra></extra>")


def base_x(xs) -> float | None:
    """Where the base point is drawn on a log axis of the data quantities ``xs`` (None without any)."""
    pos = [float(x) for x in xs if x is not None and not pd.isna(x) and x > 0]
    return min(pos) / BASE_STEP if pos else None


def _ticks(xs, axis: str, base: pd.DataFrame | None) -> dict:
    ticks = log_ticks(xs, axis)
    bx = base_x(xs)
    if base is not None and len(base) and bx is not None:
        ticks = {**ticks, "tickvals": [bx, *ticks["tickvals"]], "ticktext": ["base", *ticks["ticktext"]]}
    return ticks


def _custom(*cols) -> np.ndarray:
    """Hover data with each column keeping its type (numbers stay numbers for d3 formatting)."""
    return np.array([[v.item() if hasattr(v, "item") else v for v in row] for row in zip(*cols)], dtype=object)


def _layout(fig: go.Figure, height: int, title: str, legend: str = "bottom", bottom: int = 130) -> None:
    """Shared look; the legend sits below the x-axis title (or above the plot), never over the data."""
    top = 80
    plot_h = max(height - top - bottom, 100)
    if legend == "bottom":
        leg = dict(orientation="h", yanchor="top", y=-72 / plot_h, xanchor="left", x=0)
    else:
        leg = dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1)
    fig.update_layout(title=dict(text=title, x=0.01), height=height, template="plotly_white",
                      margin=dict(l=70, r=20, t=top, b=bottom), legend=leg, hoverlabel=dict(namelength=-1))


def _add_base(fig: go.Figure, cur: pd.DataFrame, base: pd.DataFrame, pal: Palette, factor: float, row, col,
              showlegend: bool) -> None:
    """Each model's base score (not tuned) at ``base_x``, joined by a dotted line to the first point of each of
    its curves."""
    bx = base_x(cur["x"])
    for r in base.to_dict("records"):
        model, colour = r["model"], pal.model_colour(r["model"])
        for _, c in cur[cur["model"] == model].groupby("construction", sort=False, dropna=False):
            first = c.sort_values("x").iloc[0]
            fig.add_trace(go.Scatter(x=[bx, first["x"]], y=[r["value"] * factor, first["value"] * factor],
                                     mode="lines", line=dict(color=colour, dash="dot", width=1), hoverinfo="skip",
                                     showlegend=False, legendgroup=f"{model} · base"), row=row, col=col)
        fig.add_trace(go.Scatter(
            x=[bx], y=[r["value"] * factor], mode="markers", name=f"{model} · base (not tuned)",
            legendgroup=f"{model} · base", showlegend=showlegend, marker=dict(color=colour, symbol="diamond", size=10),
            error_y=dict(type="data", symmetric=False, array=[(r["ci_high"] - r["value"]) * factor],
                         arrayminus=[(r["value"] - r["ci_low"]) * factor], color=colour, thickness=1),
            customdata=_custom([f"{model} base"], [r["n"]], [r["ci_low"] * factor], [r["ci_high"] * factor],
                               [r["cells"]]), hovertemplate=BASE_HOVER), row=row, col=col)


def _add_curves(fig: go.Figure, cur: pd.DataFrame, pal: Palette, x_axis: str, row=None, col=None,
                showlegend: bool = True, smooth: bool = False, base: pd.DataFrame | None = None) -> None:
    factor, _ = value_scale(cur["value"], cur["metric"].iloc[0] if len(cur) else None)
    if base is not None and len(base) and len(cur):
        _add_base(fig, cur, base, pal, factor, row, col, showlegend)
    seen = set()
    for (model, cons), c in cur.groupby(["model", "construction"], sort=False, dropna=False):
        c = c.sort_values("x")
        colour, dash = pal.model_colour(model), pal.dash.get(cons, "solid")
        name = f"{model} · {cons}"
        y = (c["smoothed"] if smooth else c["value"]) * factor
        band_x = list(c["x"]) + list(c["x"])[::-1]
        band_y = list(c["ci_high"] * factor) + list(c["ci_low"] * factor)[::-1]
        fig.add_trace(go.Scatter(x=band_x, y=band_y, fill="toself", fillcolor=colour, opacity=0.12,
                                 line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup=name),
                      row=row, col=col)
        custom = _custom(
            [name] * len(c), c["checkpoints"].str.slice(0, 60), c["n"], c["ci_low"] * factor, c["ci_high"] * factor,
            c["n_seeds"], [X_TITLES.get(x_axis, x_axis).split(" (")[0]] * len(c), c["cells"].str.slice(0, 80))
        fig.add_trace(go.Scatter(
            x=c["x"], y=y, mode="lines+markers", name=name, legendgroup=name,
            showlegend=showlegend and name not in seen, line=dict(color=colour, dash=dash, shape="spline" if smooth
                                                                  else "linear"),
            marker=dict(symbol=pal.marker.get(str(model), "circle"), size=7), customdata=custom,
            hovertemplate=HOVER), row=row, col=col)
        seen.add(name)
    chance = cur["chance"].dropna()
    if len(chance) and len(cur):
        xs = [base_x(cur["x"]) if base is not None and len(base) else cur["x"].min(), cur["x"].max()]
        fig.add_trace(go.Scatter(x=xs, y=[chance.mean() * factor] * 2, mode="lines", name="chance level",
                                 legendgroup="chance", showlegend=showlegend,
                                 line=dict(color=CHANCE_COLOUR, dash="dot", width=1.5),
                                 hovertemplate="chance %{y:.2f}<extra></extra>"), row=row, col=col)


def _panel_base(base: pd.DataFrame | None, panel: str) -> pd.DataFrame:
    return base[base["panel"] == panel] if base is not None and len(base) else pd.DataFrame(columns=["panel"])


BASE_CAPTION = (" A diamond left of the curves is a base model's own score (data quantity 0: scored as it starts, "
                "before instruction tuning), joined to its curves by a dotted line.")


def curve_panel_figure(curves: pd.DataFrame, panel: str, pal: Palette, x_axis: str, smooth: bool = False,
                       key: str = "overall", base: pd.DataFrame | None = None) -> Figure | None:
    """One panel (e.g. the overall score) as its own figure; ``base``: the base models' points
    (``analysis.curves.base_points``)."""
    cur = curves[curves["panel"] == panel]
    if cur.empty:
        return None
    b = _panel_base(base, panel)
    fig = go.Figure()
    _add_curves(fig, cur, pal, x_axis, smooth=smooth, base=b)
    _, unit = value_scale(cur["value"], cur["metric"].iloc[0])
    _layout(fig, 480, f"{display_name(panel)} vs data volume")
    fig.update_xaxes(title=X_TITLES.get(x_axis, x_axis), **_ticks(cur["x"], x_axis, b))
    fig.update_yaxes(title=unit)
    table = pd.concat([b, cur], ignore_index=True) if len(b) else cur
    return Figure(key, f"{display_name(panel)}: score vs data volume", fig, table.drop(columns=["smoothed"]),
                  "One line per model size (colour) and construction (curated solid, synthetic dashed, mix dotted); "
                  "bands are 95% CIs; the grey dotted line is the chance level." + (BASE_CAPTION if len(b) else ""))


def curve_grid_figure(curves: pd.DataFrame, panels: list[str], pal: Palette, x_axis: str, key: str, title: str,
                      smooth: bool = False, ncols: int = 3, base: pd.DataFrame | None = None) -> Figure | None:
    """A panel per ability in one figure, sharing a legend."""
    panels = [p for p in panels if (curves["panel"] == p).any()]
    if not panels:
        return None
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=[display_name(p) for p in panels],
                        horizontal_spacing=0.07, vertical_spacing=0.32 / max(nrows, 1) + 0.04)
    for i, p in enumerate(panels):
        r, c = i // ncols + 1, i % ncols + 1
        cur, b = curves[curves["panel"] == p], _panel_base(base, p)
        _add_curves(fig, cur, pal, x_axis, row=r, col=c, showlegend=(i == 0), smooth=smooth, base=b)
        _, unit = value_scale(cur["value"], cur["metric"].iloc[0])
        fig.update_xaxes(row=r, col=c, **_ticks(cur["x"], x_axis, b),
                         title=X_TITLES.get(x_axis, x_axis) if r == nrows else None)
        fig.update_yaxes(row=r, col=c, title=unit if c == 1 else None)
    _layout(fig, 300 * nrows + 160, title)
    sub = curves[curves["panel"].isin(panels)]
    b = base[base["panel"].isin(panels)] if base is not None and len(base) else pd.DataFrame()
    sub = (pd.concat([b, sub], ignore_index=True) if len(b) else sub).drop(columns=["smoothed"])
    return Figure(key, title, fig, sub, "Same encoding as the overall curve; each panel has its own y range."
                  + (BASE_CAPTION if len(b) else ""))


def size_figure(curves: pd.DataFrame, panels: list[str], pal: Palette, x_axis: str, construction: str | None
                ) -> Figure | None:
    """Score vs model parameters at each fixed data volume (reference construction)."""
    cur = curves if construction is None else curves[curves["construction"] == construction]
    cur = cur[cur["panel"].isin(panels) & cur["model_params"].notna()]
    if cur.empty or cur["model_params"].nunique() < 2:
        return None
    panels = [p for p in panels if (cur["panel"] == p).any()]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=[display_name(p) for p in panels],
                        vertical_spacing=0.32 / max(nrows, 1) + 0.04)
    levels = sorted(cur["x"].unique())
    shades = {x: f"rgba(31,119,180,{0.25 + 0.75 * i / max(len(levels) - 1, 1):.2f})" for i, x in enumerate(levels)}
    for i, p in enumerate(panels):
        r, c = i // ncols + 1, i % ncols + 1
        sub = cur[cur["panel"] == p]
        factor, unit = value_scale(sub["value"], sub["metric"].iloc[0])
        for x, g in sub.groupby("x"):
            g = g.sort_values("model_params")
            fig.add_trace(go.Scatter(
                x=g["model_params"], y=g["value"] * factor, mode="lines+markers", name=f"{x:g} examples",
                legendgroup=str(x), showlegend=(i == 0), line=dict(color=shades[x]),
                customdata=_custom(g["model"], g["n"], g["ci_low"] * factor, g["ci_high"] * factor),
                hovertemplate="%{customdata[0]} (%{x:.3s} params)<br>score %{y:.2f} [CI %{customdata[2]:.2f}, "
                              "%{customdata[3]:.2f}]<br>n = %{customdata[1]}<extra>" + f"{x:g} examples</extra>"),
                row=r, col=c)
        fig.update_xaxes(row=r, col=c, type="log", title="parameters (log scale)" if r == nrows else None)
        fig.update_yaxes(row=r, col=c, title=unit if c == 1 else None)
    _layout(fig, 300 * nrows + 160, f"Score vs model size at fixed data volume ({construction or 'all'})")
    return Figure("size", "Score vs model size at fixed volume", fig,
                  cur[["panel", "model", "model_params", "construction", "x", "value", "ci_low", "ci_high", "n"]],
                  "One line per data volume (darker = more data).")


def dynamics_figure(dyn: pd.DataFrame, pal: Palette, panel: str = "overall") -> Figure | None:
    """Score vs epoch for every checkpoint of every cell; the selected checkpoint is starred."""
    d = dyn[dyn["ability"] == panel]
    if d.empty:
        return None
    fig = go.Figure()
    factor, unit = value_scale(d["value"])
    shown = set()
    d = d.sort_values(["model_params", "construction", "volume"], na_position="last")
    for cid, g in d.groupby("cell_id", sort=False):
        g = g.sort_values(["stage", "step"])
        model, cons = g["model"].iloc[0], g["construction"].iloc[0]
        name = f"{model} · {cons}"
        label = f"{model} {cons} N={g['volume'].iloc[0]}"
        xcol = "epoch" if g["epoch"].notna().all() else "step"
        fig.add_trace(go.Scatter(
            x=g[xcol], y=g["value"] * factor, mode="lines+markers", name=name, legendgroup=name,
            showlegend=name not in shown, opacity=0.75,
            line=dict(color=pal.model_colour(model), dash=pal.dash.get(cons, "solid"), width=1.2),
            customdata=_custom([label] * len(g), g["checkpoint"], g["n"], g["stage"]),
            hovertemplate="<b>%{customdata[0]}</b><br>checkpoint %{customdata[1]} (stage %{customdata[3]})<br>"
                          "score %{y:.2f}, n = %{customdata[2]}<extra></extra>"))
        shown.add(name)
        sel = g[g["selected"]]
        if len(sel):
            fig.add_trace(go.Scatter(x=sel[xcol], y=sel["value"] * factor, mode="markers", showlegend=False,
                                     marker=dict(symbol="star", size=12, color=pal.model_colour(model)),
                                     hovertemplate="selected checkpoint<extra></extra>"))
    _layout(fig, 460, f"{display_name(panel)} across checkpoints ({d['split'].iloc[0]} split); ★ = selected")
    fig.update_xaxes(title="epoch")
    fig.update_yaxes(title=unit)
    return Figure("dynamics", "Per-checkpoint dynamics", fig, d, "Each line is one cell; stars mark the "
                  "checkpoint chosen on the valid split.")
