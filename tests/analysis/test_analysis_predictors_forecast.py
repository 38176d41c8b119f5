"""Predictor fits and forecasts on tables with planted relations."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from doitray.analysis import forecast, predictors

ABILITIES = ["math", "code", "ethics", "role_play", "biology", "history", "chinese", "reasoning"]


def test_planted_predictor_relation_gives_r2_one():
    rng = np.random.default_rng(1)
    feats = pd.DataFrame({"complexity": rng.uniform(0, 1, len(ABILITIES)),
                          "transference": rng.uniform(0, 1, len(ABILITIES))}, index=ABILITIES)
    target = 0.01 + 0.02 * feats["complexity"] - 0.03 * feats["transference"]
    fit = predictors.fit_predictors(target, feats)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)
    assert fit.coefficients["complexity"] == pytest.approx(0.02)
    assert fit.coefficients["transference"] == pytest.approx(-0.03)
    assert fit.loo_mae == pytest.approx(0.0, abs=1e-9)
    assert fit.f_pvalue == 0.0 and fit.spearman["complexity"].n == len(ABILITIES)
    noisy = target + rng.normal(0, 0.02, len(target))
    fit2 = predictors.fit_predictors(noisy, feats)
    assert fit2.r2 < 0.99 and fit2.loo_mae > 0


def test_predictor_fit_by_hand():
    # the textbook 5-point regression (see test_analysis_stats): slope 0.6, 95% CI 0.6 ± 3.1824·√0.08,
    # t = 2.1213 on 3 df (p = 0.12403), R² = 0.6 with F = t² (same p); leave-one-out by hand below
    abil = ["a", "b", "c", "d", "e"]
    x, y = np.array([1.0, 2, 3, 4, 5]), np.array([2.0, 4, 5, 4, 5])
    fit = predictors.fit_predictors(pd.Series(y, index=abil), pd.DataFrame({"complexity": x}, index=abil))
    row = fit.coef_table.set_index("term").loc["complexity"]
    assert row["coef"] == pytest.approx(0.6) and fit.coefficients["intercept"] == pytest.approx(2.2)
    assert row["ci_low"] == pytest.approx(0.6 - 3.182446305 * np.sqrt(0.08)) and row["p"] == pytest.approx(0.12403, abs=1e-5)
    assert fit.r2 == pytest.approx(0.6) and fit.f_pvalue == pytest.approx(row["p"])
    assert fit.r2_adj == pytest.approx(1 - 0.4 * 4 / 3)
    assert fit.pearson["complexity"].r == pytest.approx(np.sqrt(0.6))
    ranks = np.array([1, 2.5, 4.5, 2.5, 4.5])  # y's average ranks (ties at 4 and at 5)
    assert fit.spearman["complexity"].r == pytest.approx(np.corrcoef(x, ranks)[0, 1])
    loo = []
    for i in range(5):
        m = np.arange(5) != i
        b = np.sum((x[m] - x[m].mean()) * (y[m] - y[m].mean())) / np.sum((x[m] - x[m].mean()) ** 2)
        loo.append(y[m].mean() + b * (x[i] - x[m].mean()))
    assert fit.loo_mae == pytest.approx(np.mean(np.abs(np.array(loo) - y)))
    d = fit.to_dict()
    assert d["coef_table"][1]["term"] == "complexity" and d["spearman"]["complexity"]["n"] == 5
    assert "complexity +0.6 [" in fit.coef_text() and "F-test of the features p = 0.124" in fit.fit_text()


def test_fit_needs_enough_abilities():
    feats = pd.DataFrame({"c": [0.1, 0.2]}, index=["a", "b"])
    with pytest.raises(ValueError, match="at least 3"):
        predictors.fit_predictors(pd.Series([1.0, 2.0], index=["a", "b"]), feats)


def test_complexity_operationalisations(make_tidy):
    df = make_tidy(lambda p, mp, v, c, s: {"math": 0.25, "ethics": 0.625}[p], volumes=[0, 10])
    c = predictors.complexity_from_scores(df, at="base")
    assert c["math"] == pytest.approx(1.0) and c["ethics"] == pytest.approx(0.5)
    preds = pd.DataFrame({"ability": ["math", "math", "ethics"], "item_id": ["1", "2", "3"],
                          "gold": ["step one.\nstep two.\nanswer 4", "a. b.", "B"]})
    steps = predictors.complexity_from_answers(preds, "answer_steps")
    assert steps["math"] == pytest.approx(2.5) and steps["ethics"] == 1
    length = predictors.complexity_from_answers(preds, "answer_length")
    assert length["ethics"] == 1


def test_forecast_from_cheap_runs_is_exact_on_a_log_linear_world(make_tidy):
    slopes = dict(zip(ABILITIES, np.linspace(0.0, 0.06, len(ABILITIES))))
    df = make_tidy(lambda p, mp, v, c, s: 0.2 + slopes[p] * np.log2(v) + 0.01 * np.log2(mp / 1e6) + 0.001 * len(p),
                   panels=ABILITIES)
    fc = forecast.forecast(df)
    assert fc.n_heldout == len(ABILITIES) * 3  # largest model, volumes above the median
    assert fc.mae == pytest.approx(0.0, abs=1e-9)
    assert fc.ability_decisions == pytest.approx(1.0)
    assert fc.ability_spearman == pytest.approx(1.0)


def test_forecast_decisions_can_be_wrong(make_tidy):
    # the held-out corner bends (math saturates, ethics takes off): a log-linear forecast misranks them
    def value(p, mp, v, c, s):
        big = mp > 2e6 and v > 300
        if p == "math":
            return 0.3 + 0.03 * np.log2(v) - (0.2 if big else 0)
        return 0.3 + 0.02 * np.log2(v) + (0.2 if big else 0)
    fc = forecast.forecast(make_tidy(value))
    assert fc.mae > 0.1
    assert fc.ability_decisions < 0.5
