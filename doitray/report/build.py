"""Build the study report (one self-contained HTML file) and its terminal summary."""
from __future__ import annotations

import html
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field

import pandas as pd

from doitray.analysis import Analysis, analyze, load_results
from doitray.analysis.composition import K_TREND_RULE
from doitray.analysis.sensitivity import reference_construction, rules
from doitray.analysis.stats import ALPHA, fmt_p
from doitray.analysis.tables import ability_panels, model_order
from doitray.console import table as text_table
from doitray.store import ResultsStore
from doitray.report import figures_benchmarks as fb
from doitray.report import figures_curves as fc
from doitray.report import figures_study as fs
from doitray.report.html import figure_html, page, table_html
from doitray.report.style import Palette, display_name, fmt


@dataclass
class ReportInfo:
    """What ``build_report`` wrote."""

    path: str
    study: str
    figures: list[str]
    cells_total: int
    cells_done: int
    partial: bool
    missing: list[str] = field(default_factory=list)
    bytes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _load(study_root: str, smooth_sigma: float = 0.0, n_boot: int = 500, x: str | None = None) -> Analysis:
    results = load_results(study_root)
    if results.cells.empty and results.scores.empty and results.study is None:
        raise FileNotFoundError(f"{study_root}: no results store here (no study.json and no tables/cells, "
                                "tables/scores); give the study's storage path")
    return analyze(results, x=x, smooth_sigma=smooth_sigma, n_boot=n_boot)


def make_figures(an: Analysis, smooth: bool = False) -> list[fc.Figure]:
    """Every figure the analysis supports, in report order."""
    df = an.tidy
    pal = Palette(model_order(df) or model_order(an.results.cells),
                  list(dict.fromkeys(df["construction"].dropna().astype(str))) if len(df) else [])
    figs: list[fc.Figure | None] = [fs.completion_figure(an.results.cells, pal.models)]
    if len(an.curves):
        figs.append(fc.curve_panel_figure(an.curves, "overall", pal, an.x, smooth, base=an.base))
        figs.append(fc.curve_grid_figure(an.curves, [p for p in ability_panels(df, ood=False) if p != "overall"],
                                         pal, an.x, "abilities", "Per-ability growth curves", smooth, base=an.base))
        figs.append(fc.curve_grid_figure(an.curves, ability_panels(df, ood=True), pal, an.x, "ood",
                                         "Out-of-domain panels", smooth, base=an.base))
        figs.append(fc.size_figure(an.curves, ability_panels(df, ood=False), pal, an.x, reference_construction(df)))
    if len(an.dynamics):
        figs.append(fc.dynamics_figure(an.dynamics, pal))
    if len(an.sensitivity):
        figs.append(fs.sensitivity_figure(an.sensitivity))
        figs.append(fs.gap_figure(an.gap_points, pal))
    figs.append(fs.transfer_figure(an.transfer.matrix, an.transfer.per_ability))
    figs.append(fs.recipe_figure(an.recipes))
    figs.append(fs.predictor_figure(an.predictor_fit))
    figs.append(fs.forecast_figure(an.forecast, pal))
    figs.append(fs.strategy_figure(an.strategies, pal))
    figs.append(fs.k_sweep_figure(an.k_sweep, pal))
    figs.append(fs.single_mixed_figure(*an.single_mixed, pal, an.x))
    figs.append(fs.ratio_figure(an.ratio_arms))
    figs.append(fs.forgetting_figure(an.forgetting))
    figs += fb.benchmark_figures(an.results, an.x, pal)
    return [f for f in figs if f is not None]


def _overview(an: Analysis, title: str) -> str:
    c = an.completion
    df = an.tidy
    states = ", ".join(f"{k}: {v}" for k, v in sorted(c["by_state"].items())) or "no cells"
    if c["partial"]:
        miss = pd.DataFrame(c["missing"])
        banner = (f"<div class='banner partial'><b>Partial report:</b> {c['done']} of {c['total']} cells have results "
                  f"({c['fraction']:.0%}). Missing cells are listed below; curves and statistics use the finished "
                  f"cells only.</div><details open><summary>Missing cells ({len(miss)})</summary>"
                  f"{table_html(miss)}</details>")
    else:
        banner = f"<div class='banner complete'>Complete: all {c['total']} cells have results.</div>"
    facts = {
        "study": an.results.name, "cells": f"{c['total']} ({states})",
        "models": ", ".join(model_order(df)) or "–",
        "constructions": ", ".join(sorted(df["construction"].dropna().astype(str).unique())) if len(df) else "–",
        "data axis": an.x,
        "abilities": ", ".join(display_name(p) for p in ability_panels(df, ood=False)) or "–",
        "out-of-domain": ", ".join(ability_panels(df, ood=True)) or "none",
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if sandbox_line(an):
        facts["code sandbox"] = sandbox_line(an)
    rows = "".join(f"<tr><th class='s'>{html.escape(k)}</th><td class='s'>{html.escape(str(v))}</td></tr>"
                   for k, v in facts.items())
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in an.notes)
    return (f"<section id='overview'><h1>{html.escape(title)}</h1>{banner}<table>{rows}</table>"
            f"{'<ul>' + notes + '</ul>' if notes else ''}</section>")


def sandbox_line(an: Analysis) -> str:
    """How the study's code items were run (``predictions.sandbox``: the isolation recorded per item), or ''."""
    preds = an.results.predictions
    if "sandbox" not in preds or not preds["sandbox"].notna().any():
        return ""
    counts = preds["sandbox"].dropna().astype(str).value_counts()
    return ", ".join(f"{k} ({v:,} programs)" for k, v in counts.items())


def _ci(lo, hi, scale: float = 100, digits: int = 3) -> str:
    if pd.isna(lo) or pd.isna(hi):
        return "–"
    return f"[{fmt(lo * scale, digits)}, {fmt(hi * scale, digits)}]"


def _sensitivity_text_rows(an: Analysis) -> list[dict]:
    """The key table: every slope and gap with its 95% CI and q-value, the label its test gives."""
    s = an.sensitivity
    if s is None or s.empty:
        return []
    rows = []
    for r in s.to_dict("records"):
        rows.append({
            "rank": "" if pd.isna(r["rank"]) else int(r["rank"]), "ability": r["panel"] + (" (ood)" if r["ood"] else ""),
            "data pts/2x": fmt(r["data_slope"] * 100, 3), "data 95% CI": _ci(r["data_ci_low"], r["data_ci_high"]),
            "data q": fmt_p(r["data_q"]),
            "size pts/2x": fmt(r["size_gain"] * 100, 3), "size 95% CI": _ci(r["size_ci_low"], r["size_ci_high"]),
            "size q": fmt_p(r["size_q"]),
            "cur-syn pts": fmt(r.get("gap", float("nan")) * 100, 3),
            "gap 95% CI": _ci(r.get("gap_ci_low"), r.get("gap_ci_high")), "gap q": fmt_p(r.get("gap_q")),
            "saturation": r.get("saturation_note") or "", "label": r["label"]})
    return rows


def _predictor_lines(p) -> list[str]:
    out = [f"Predictors of the data slope (OLS, statsmodels): {p.fit_text()}",
           f"  coefficients (95% CI, t-test p): {p.coef_text()}"]
    for f in p.features:
        out.append(f"  {f}: Spearman {p.spearman[f].text('ρ')}; Pearson {p.pearson[f].text('r')}")
    loo = p.loo_spearman.text("ρ") if p.loo_spearman is not None else "–"
    out.append(f"  leave-one-ability-out MAE {p.loo_mae:.4g}; predicted vs actual {loo}")
    out.append("  Spearman: permutation p (scipy.stats.permutation_test), Fisher-z CI with the Bonett–Wright "
               "variance; Pearson: t-test p, Fisher-z CI")
    return out


def _overall_lines(an: Analysis) -> list[str]:
    """The overall score of every model at every (construction, data quantity), the base models (quantity 0, not
    tuned) first, with the chance level and curated − synthetic per quantity: a study's headline in one table."""
    o = an.curves[an.curves["panel"] == "overall"] if len(an.curves) else an.curves
    if o.empty:
        return []
    b = an.base[an.base["panel"] == "overall"] if len(an.base) else o.iloc[0:0]
    models = [m for m in model_order(pd.concat([b, o])) if m in set(o["model"]) | set(b["model"])]

    def score(g: pd.DataFrame, m: str) -> str:
        return fmt(g.loc[g["model"] == m, "value"].mean(), 3) if (g["model"] == m).any() else "–"

    rows = [{"construction": "base (not tuned)", an.x: "0", **{m: score(b, m) for m in models}}] if len(b) else []
    for (cons, x), g in o.groupby(["construction", "x"], sort=True, dropna=False):
        rows.append({"construction": cons, an.x: f"{x:g}", **{m: score(g, m) for m in models}})
    chance = o["chance"].dropna()
    head = f"Overall score by model{f' (chance {chance.mean():.3g})' if len(chance) else ''}"
    out = ["", head, text_table(rows)]
    wide = o.pivot_table(index=["model", "x"], columns="construction", values="value")
    if {"curated", "synthetic"} <= set(wide.columns):
        gap = (wide["curated"] - wide["synthetic"]).dropna().groupby(level="x").mean()
        out.append("Curated − synthetic, overall (points, mean over models): "
                   + ", ".join(f"{an.x} {x:g}: {v * 100:+.1f}" for x, v in gap.items()))
    return out


def summary_text(an: Analysis) -> str:
    """The terminal summary of an analysis."""
    c = an.completion
    out = [f"doitray report: {an.results.name}: {c['done']}/{c['total']} cells with results ({c['fraction']:.0%})"]
    if c["partial"]:
        out.append(f"PARTIAL: {len(c['missing'])} cells missing, e.g. "
                   + "; ".join(f"{m['label']} [{m['state']}]" for m in c["missing"][:5]))
    if sandbox_line(an):
        out.append(f"Code sandbox: {sandbox_line(an)}")
    rows = _sensitivity_text_rows(an)
    if rows:
        alpha = float(an.sensitivity["alpha"].iloc[0]) if "alpha" in an.sensitivity else ALPHA
        out += ["", f"Sensitivity per ability (data axis: {an.x}; points per doubling, 95% CIs, q-values)",
                text_table(rows), "Tests:"] + [f"- {r}" for r in rules(alpha)]
    if len(an.curves) and (an.curves["panel"] == "overall").any():
        o = an.curves[an.curves["panel"] == "overall"]
        best = o.loc[o["value"].idxmax()]
        out.append(f"\nBest overall: {best['value']:.4g} ({best['model']}, {best['construction']}, {an.x} {best['x']:g})")
    out += _overall_lines(an)
    if an.forecast is not None:
        f = an.forecast
        out.append(f"Forecast from cheap runs: held-out MAE {f.mae:.4g} over {f.n_heldout} points; ability-order "
                   f"agreement {fmt(f.ability_decisions)}; construction-order agreement {fmt(f.recipe_decisions)}")
    if an.predictor_fit is not None:
        out += _predictor_lines(an.predictor_fit)
    if len(an.transfer.per_ability):
        out += ["", "Transfer (leave-one-ability-out)", text_table(an.transfer.per_ability.round(4).to_dict("records"))]
    if len(an.strategies):
        w = an.strategies.pivot_table(index=["model", "strategy_label"], columns="panel", values="value").reset_index()
        out += ["", "Scores by strategy", text_table(w.round(4).to_dict("records"))]
    if an.k_sweep.reading:
        out += ["", "DMT k sweep (k = replay fraction of specialist data in stage 2; k=0 = mixed sequential; "
                + K_TREND_RULE.format(alpha=ALPHA) + ")"]
        out += [f"- {line}" for line in an.k_sweep.reading]
    if len(an.single_mixed[1]):
        out += ["", "Single vs mixed sources: crossover", text_table(an.single_mixed[1].to_dict("records"))]
    if len(an.forgetting):
        g = an.forgetting.groupby(["strategy", "ability"])["drop"].mean().reset_index().round(4)
        out += ["", "Forgetting (best before last stage − final)", text_table(g.to_dict("records"))]
    return "\n".join(out)


def text_summary(study_root: str) -> str:
    """The terminal summary (key table) of the study at ``study_root``."""
    return summary_text(_load(study_root, n_boot=200))


def build_report(study_root: str, out_path: str | None = None, smooth_sigma: float = 0.0, x: str | None = None,
                 analysis: Analysis | None = None) -> ReportInfo:
    """Write the self-contained HTML report of the study at ``study_root`` (default ``<root>/report.html``).

    ``x``: the data axis (``volume``, ``per_ability`` or ``frac``; default: the one that varies).
    Raises ``FileNotFoundError`` when ``study_root`` holds no results store.
    """
    import plotly.offline

    an = analysis or _load(study_root, smooth_sigma=smooth_sigma, x=x)
    figs = make_figures(an, smooth=smooth_sigma > 0)
    title = f"doitray report: {an.results.name}"
    sections = [_overview(an, title)]
    nav = [("overview", "Overview")]
    for f in figs:
        nav.append((f.key, f.title))
        cap = (f"<p class='caption'>{html.escape(f.caption).replace(chr(10), '<br>')}</p>" if f.caption else "")
        sections.append(f"<section id='{f.key}'><h2>{html.escape(f.title)}</h2>{cap}{figure_html(f.key, f.fig)}"
                        f"<details><summary>Numbers behind this figure ({len(f.table):,} rows)</summary>"
                        f"{table_html(f.table)}</details></section>")
    summary = html.escape(summary_text(an))
    sections.append(f"<section id='summary'><h2>Text summary</h2><pre>{summary}</pre></section>")
    nav.append(("summary", "Summary"))
    doc = page(title, sections, nav, plotly.offline.get_plotlyjs())
    out_path = out_path or os.path.join(study_root, "report.html")
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(doc)
    os.replace(tmp, out_path)
    c = an.completion
    return ReportInfo(path=os.path.abspath(out_path), study=an.results.name, figures=[f.key for f in figs],
                      cells_total=c["total"], cells_done=c["done"], partial=c["partial"],
                      missing=[f"{m['label']} [{m['state']}]" for m in c["missing"]], bytes=len(doc.encode("utf-8")))


def write_report(root: str) -> str:
    """Build the study's HTML report into ``<root>/report.html`` (uploaded when the storage is remote)."""
    if "://" not in root:
        path = os.path.join(root, "report.html")
        build_report(root, path)
        return os.path.abspath(path)
    store = ResultsStore(root)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "report.html")
        build_report(root, local)
        with open(local, "rb") as src, store.fs.open_output_stream(store.path("report.html")) as dst:
            dst.write(src.read())
    return f"{root.rstrip('/')}/report.html"
