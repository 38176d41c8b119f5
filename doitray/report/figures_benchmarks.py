"""Benchmark suites (CMMLU, C-Eval, AGIEval, C3, LogiQA, GSM8K, HumanEval, MBPP, MT-Bench, …) as their own panels.

One figure per benchmark suite a study lists (``evaluation.suites``, read from ``study.json``): a panel per
subject / category / set where the benchmark has them (else per ability) and one for its overall mean; the score
of each cell's reported checkpoint (``analysis.tables.tidy``'s rule) against the data axis, a line per model and
construction, and the benchmark's chance level dashed.
"""
from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from doitray.analysis.tables import Results, tidy
from doitray.report.figures_curves import Figure, _layout
from doitray.report.style import CHANCE_COLOUR, X_TITLES, Palette

TITLES = {"cmmlu": "CMMLU", "ceval": "C-Eval", "agieval": "AGIEval", "c3": "C3", "logiqa": "LogiQA 2.0",
          "gsm8k": "GSM8K", "humaneval": "HumanEval", "mbpp": "MBPP", "mt_bench": "MT-Bench", "jsonl": "JSONL suite"}


def suite_table(results: Results, suite: str) -> pd.DataFrame:
    """One row per (cell, group) of one suite, at the cell's reported checkpoint, joined with its factor levels."""
    s = results.scores[results.scores["suite"] == suite]
    if s.empty:
        return pd.DataFrame()
    return tidy(Results(cells=results.cells, checkpoints=results.checkpoints, scores=s, study=None))


def benchmark_figure(df: pd.DataFrame, suite: str, kind: str, x: str, pal: Palette) -> Figure | None:
    """The panels of one benchmark suite (``df``: ``suite_table``)."""
    if df.empty:
        return None
    groups = sorted(g for g in df["ability"].astype(str).unique() if g != "overall")
    panels = (["overall"] if (df["ability"] == "overall").any() else []) + groups
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=panels, shared_yaxes=True,
                        vertical_spacing=min(0.12, 0.5 / nrows), horizontal_spacing=0.05)
    xcol = x if x in df and pd.to_numeric(df[x], errors="coerce").notna().any() else "volume"
    shown = set()
    for k, panel in enumerate(panels):
        r, c = divmod(k, ncols)
        d = df[df["ability"] == panel]
        for (model, cons), g in d.groupby(["model", "construction"], dropna=False, sort=False):
            g = g.assign(_x=pd.to_numeric(g[xcol], errors="coerce")).sort_values("_x")
            name = f"{model} {cons}" if isinstance(cons, str) else str(model)
            fig.add_trace(go.Scatter(
                x=g["_x"], y=g["value"] * 100, mode="lines+markers", name=name, legendgroup=name,
                showlegend=name not in shown, line=dict(color=pal.model_colour(str(model))),
                error_y=dict(type="data", symmetric=False, array=(g["ci_high"] - g["value"]) * 100,
                             arrayminus=(g["value"] - g["ci_low"]) * 100),
                customdata=list(zip(g["n"], g["label"])),
                hovertemplate=f"{panel}: %{{y:.1f}} (n %{{customdata[0]}})<br>%{{customdata[1]}}<extra></extra>"),
                r + 1, c + 1)
            shown.add(name)
        chance = pd.to_numeric(d["chance"], errors="coerce").dropna()
        if len(chance) and chance.mean() > 0:
            fig.add_hline(y=float(chance.mean()) * 100, line_dash="dash", line_color=CHANCE_COLOUR, row=r + 1,
                          col=c + 1, annotation_text="chance", annotation_position="bottom right")
    fig.update_xaxes(type="log", title=X_TITLES.get(xcol, xcol))
    fig.update_yaxes(title="score (of 100)", col=1)
    title = f"{TITLES.get(kind, kind)} — suite {suite}"
    _layout(fig, max(380, 300 * nrows), title)
    table = df[[c for c in ("label", "model", "construction", xcol, "ability", "value", "n", "chance", "ci_low",
                            "ci_high", "checkpoint") if c in df]].rename(columns={"ability": "group"})
    return Figure(f"bench-{suite}", title, fig, table,
                  "Each cell's reported checkpoint (selected, else last); bars: 95% bootstrap CIs over items; dashed: "
                  "the benchmark's chance level (mean over its items). MT-Bench: mean judge rating / 10 — a small "
                  "or untrained judge's ratings are noise.")


def benchmark_figures(results: Results, x: str, pal: Palette) -> list[Figure]:
    """A figure per benchmark suite of the study that has scores."""
    from doitray.eval.benchmarks import benchmark_names

    out = []
    for suite, kind in benchmark_names(results.study).items():
        f = benchmark_figure(suite_table(results, suite), suite, kind, x, pal)
        if f is not None:
            out.append(f)
    return out
