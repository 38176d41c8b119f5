"""The HTML report and the terminal summary, on hand-made study stores (complete, partial, DMT paper)."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from doitray.cli import main
from doitray.report import build_report, make_figures, text_summary
from doitray.report.build import _load

PLOTLY_MARK = "plotly.js v"  # the banner comment at the top of the bundled plotly.js


def test_full_report_has_every_figure(study_store, tmp_path):
    info = build_report(str(study_store), str(tmp_path / "r.html"))
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    expected = {"completion", "overall", "abilities", "ood", "size", "dynamics", "sensitivity", "gap", "transfer",
                "predictors", "forecast", "recipes"}
    assert expected <= set(info.figures)
    assert not info.partial and info.cells_done == info.cells_total
    assert html.count("class='figure'") == len(info.figures)
    # self-contained: plotly.js inline exactly once, nothing loaded from the network
    assert html.count(PLOTLY_MARK) == 1
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)
    assert "Complete: all" in html and "table class='sortable'" in html
    # hover carries the cell, checkpoint, n and CI
    assert "checkpoint: %{customdata[1]}" in html and "n = %{customdata[2]}" in html and "CI %{customdata[3]" in html


def test_partial_report_says_what_is_missing(partial_store, tmp_path):
    info = build_report(str(partial_store), str(tmp_path / "p.html"))
    assert info.partial and info.cells_done < info.cells_total
    html = (tmp_path / "p.html").read_text(encoding="utf-8")
    assert "Partial report" in html
    assert any("[pending]" in m for m in info.missing) and any("[failed]" in m for m in info.missing)
    assert "out of memory" in html
    assert {"overall", "abilities", "sensitivity"} <= set(info.figures)
    text = text_summary(str(partial_store))
    assert "PARTIAL" in text and "pending" in text


def test_text_summary_key_table(study_store):
    text = text_summary(str(study_store))
    assert "Sensitivity per ability" in text and "responsive" in text
    assert "Forecast from cheap runs" in text and "Transfer (leave-one-ability-out)" in text
    # every slope and gap carries its CI and q; every label names its test
    for col in ("data 95% CI", "data q", "size 95% CI", "size q", "gap 95% CI", "gap q", "saturation"):
        assert col in text
    assert "one-sided t-test with Benjamini–Hochberg q < 0.05" in text
    assert "extra-sum-of-squares F-test" in text and "paired t-test" in text
    # the predictor fit: R² with its F-test, coefficients with CIs and p, correlations with CI and p
    assert "F-test of the features p =" in text and "coefficients (95% CI, t-test p): complexity" in text
    assert "complexity: Spearman ρ = " in text and "; Pearson r = " in text


def test_sensitivity_numbers_match_the_analysis(study_store):
    an = _load(str(study_store), n_boot=50)
    s = an.sensitivity.set_index("panel")
    labels = set(s["label"])
    assert labels <= {"responsive", "not significant", "n/a"}
    # a label is given exactly when the test says so
    inds = s[(s.index != "overall") & ~s["ood"]]
    assert ((inds["label"] == "responsive") == ((inds["data_q"] < 0.05) & (inds["data_slope"] > 0))).all()
    assert inds["data_q"].notna().all() and inds["size_q"].notna().all()
    assert (s["saturated"] == s["saturation_note"].str.startswith("saturates at")).all()
    fig = next(f for f in make_figures(an) if f.key == "sensitivity")
    assert "BH q %{customdata[6]}" in fig.fig.data[0].hovertemplate
    assert "Benjamini–Hochberg" in fig.caption and "F-test" in fig.caption
    pred = next(f for f in make_figures(an) if f.key == "predictors")
    assert "F-test" in pred.caption and "95% CIs and t-test p" in pred.caption and "Bonett–Wright" in pred.caption


def test_base_models_are_the_volume_0_point(study_store):
    """Base cells (volume 0, not tuned) are drawn left of the log-volume curves and tabled; no slope uses them."""
    from doitray.analysis import sensitivity
    from doitray.report.build import summary_text
    from doitray.report.style import fmt

    an = _load(str(study_store), n_boot=50)
    base = an.base[an.base["panel"] == "overall"]
    assert sorted(base["model"]) == ["tiny-m", "tiny-s"]
    assert (base["x"] == 0).all() and base["construction"].isna().all()
    assert not (an.curves["x"] <= 0).any()
    assert set(an.tidy.loc[an.tidy["volume"] == 0, "label"]) == {"tiny-s base N=0 seed 0", "tiny-m base N=0 seed 0"}
    tuned = an.tidy[an.tidy["volume"] > 0]
    pd.testing.assert_frame_equal(sensitivity.data_sensitivity(tuned), sensitivity.data_sensitivity(an.tidy))
    pd.testing.assert_frame_equal(sensitivity.size_sensitivity(tuned), sensitivity.size_sensitivity(an.tidy))
    assert not any("no volume-0 cell" in n for n in an.notes)  # the Complexity predictor uses the base scores

    overall = next(f for f in make_figures(an) if f.key == "overall")
    marks = {t.name: t for t in overall.fig.data if t.name and t.name.endswith("base (not tuned)")}
    assert set(marks) == {"tiny-s · base (not tuned)", "tiny-m · base (not tuned)"}
    smallest = an.curves["x"].min()
    for model, t in ((n.split(" · ")[0], t) for n, t in marks.items()):
        assert t.x[0] == smallest / 4
        assert t.y[0] == pytest.approx(100 * base.loc[base["model"] == model, "value"].iloc[0])
    axis = overall.fig.layout.xaxis
    assert axis.tickvals[0] == smallest / 4 and axis.ticktext[0] == "base"
    assert (overall.table["x"] == 0).sum() == 2 and "before instruction tuning" in overall.caption
    grid = next(f for f in make_figures(an) if f.key == "abilities")
    assert sum(1 for t in grid.fig.data if t.name == "tiny-s · base (not tuned)" and t.showlegend) == 1
    assert sum(1 for t in grid.fig.data if t.mode == "markers" and t.marker.symbol == "diamond") == 2 * 10

    text = summary_text(an)
    table = text[text.index("Overall score by model (chance"):]
    first = table.splitlines()[3]
    assert first.startswith("base (not tuned)") and all(fmt(v, 3) in first for v in base["value"])
    assert "Curated − synthetic, overall (points, mean over models): volume 40:" in text


def test_dmt_paper_k_sweep_report(dmt_paper_store, tmp_path):
    info = build_report(str(dmt_paper_store), str(tmp_path / "dmt.html"))
    assert {"strategy", "k_sweep"} <= set(info.figures)
    text = text_summary(str(dmt_paper_store))
    assert "general ability general is highest at k=1/256 (small k)" in text
    # trends are claimed only when the exact permutation test supports them (five k levels > 0)
    assert "general ability general falls with k (ρ = -1.00, p = 0.0167)" in text
    assert "specialist math_en shows no significant trend in k (ρ = +0.90, p = 0.0833)" in text
    assert "Spearman ρ of the score with k" in text  # the test is named
    html = (tmp_path / "dmt.html").read_text(encoding="utf-8")
    assert "general ability general is highest at k=1/256" in html  # the figure's caption
    assert "permutation p = 0.0167 &lt; α = 0.05" in html
    # the figure: k axis ordered 0, 1/256, …, 1; general peaks at 1/256, math at large k
    an = _load(str(dmt_paper_store), n_boot=50)
    fig = next(f for f in make_figures(an) if f.key == "k_sweep").fig
    assert list(fig.layout.xaxis.categoryarray) == ["0", "1/256", "1/64", "1/16", "1/4", "1"]
    lines = {t.hovertemplate.split("<extra>")[1].split("</extra>")[0]: t for t in fig.data if t.xaxis != "x4"}
    gen = lines["llama-7b general"]
    assert gen.x[list(gen.y).index(max(gen.y))] == "1/256"
    math_ = lines["llama-7b math_en"]
    assert list(math_.x).index("0") == list(math_.y).index(min(math_.y))
    assert math_.y[list(math_.x).index("1/4")] == pytest.approx(48.37)


def test_cli_report(study_store, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert main(["report", str(study_store), "--out", str(out), "--json", "--n-boot", "100"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["report"]["path"] == str(out) and out.exists()
    assert payload["sensitivity"] and payload["forecast"]["n_heldout"] > 0
    assert main(["report", str(study_store), "--text", "--n-boot", "100"]) == 0
    printed = capsys.readouterr().out
    assert "Sensitivity per ability" in printed and "\nreport: " not in printed  # --text alone writes no HTML
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no results store here" in capsys.readouterr().err


def test_report_says_how_code_items_were_isolated(partial_store, tmp_path):
    """The isolation each code item ran under (``predictions.sandbox``) is shown in the report and the text."""
    import shutil

    from doitray.store import ResultsStore

    root = tmp_path / "store"
    shutil.copytree(partial_store, root)
    ResultsStore(str(root)).write("predictions", "code-part", [
        {"cell_id": "c", "checkpoint": "s0-step1", "suite": "humaneval", "split": "test", "item_id": f"h{i}",
         "ability": "code", "metric": "code_exec", "prediction": "", "score": 0.0, "sandbox": "bwrap+seccomp"}
        for i in range(3)])
    assert "Code sandbox: bwrap+seccomp (3 programs)" in text_summary(str(root))
    info = build_report(str(root), str(tmp_path / "r.html"))
    assert "code sandbox" in open(info.path, encoding="utf-8").read()
