"""Sensitivity measures recover planted slopes, saturation points and gaps."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from doitray.analysis import curves, sensitivity
from doitray.analysis.stats import gaussian_smooth, spearman


def test_linear_in_log_curve_recovers_slope(make_tidy):
    slopes = {"math": 0.05, "ethics": 0.0}
    df = make_tidy(lambda p, mp, v, c, s: 0.3 + slopes[p] * np.log2(v) + 0.02 * np.log2(mp / 1e6), se=0.01)
    ds = sensitivity.data_sensitivity(df, n_boot=500).set_index("panel")
    assert ds.loc["math", "slope"] == pytest.approx(0.05, abs=1e-9)
    assert ds.loc["math", "ci_low"] < 0.05 < ds.loc["math", "ci_high"]
    assert ds.loc["math", "ci_high"] - ds.loc["math", "ci_low"] < 0.01
    assert ds.loc["ethics", "slope"] == pytest.approx(0.0, abs=1e-9)
    ss = sensitivity.size_sensitivity(df, n_boot=200).set_index("panel")
    assert ss.loc["math", "slope"] == pytest.approx(0.02, abs=1e-9)
    table = sensitivity.sensitivity_table(df, n_boot=200).set_index("panel")
    assert table.loc["math", "label"] == "responsive"
    assert table.loc["ethics", "label"] == "resistant"
    assert table.loc["math", "rank"] == 1 and table.loc["ethics", "rank"] == 2


def test_seeds_widen_the_band(make_tidy):
    rng = np.random.default_rng(0)
    noise = {}
    df = make_tidy(lambda p, mp, v, c, s: noise.setdefault((p, mp, v, s), 0.5 + rng.normal(0, 0.05)),
                   seeds=(0, 1, 2), panels=("math",))
    cur = curves.growth_curves(df, n_boot=300)
    assert (cur["n_seeds"] == 3).all()
    assert (cur["ci_high"] - cur["ci_low"] > 0.01).all()
    first = cur.iloc[0]
    vals = df[(df["model"] == first["model"]) & (df["volume"] == first["x"])]["value"]
    assert first["value"] == pytest.approx(vals.mean())


def test_planted_saturation_is_found(make_tidy):
    plateau = {10: 0.3, 40: 0.5, 160: 0.7, 640: 0.8, 2560: 0.8, 10240: 0.79}
    df = make_tidy(lambda p, mp, v, c, s: plateau[v] if p == "ethics" else 0.25 + 0.05 * np.log2(v))
    sat = sensitivity.saturation_points(df).set_index(["panel", "model"])
    assert sat.loc[("ethics", "m2"), "saturation_x"] == 640
    assert bool(sat.loc[("ethics", "m2"), "saturated"]) is True
    assert bool(sat.loc[("math", "m2"), "saturated"]) is False  # still rising at the largest volume
    x, reached = sensitivity.saturation(np.array([1, 2, 4]), np.array([0.1, 0.1, 0.1]), floor=0.25)
    assert np.isnan(x) and not reached


def test_construction_gap_at_equal_volume(make_tidy):
    df = make_tidy(lambda p, mp, v, c, s: 0.4 + 0.02 * np.log2(v) + (0.1 if c == "curated" else 0.0),
                   constructions=("curated", "synthetic"), se=0.01)
    points, summary = sensitivity.construction_gap(df, n_boot=300)
    s = summary.set_index("panel")
    assert s.loc["math", "gap"] == pytest.approx(0.1)
    assert s.loc["math", "ci_low"] < 0.1 < s.loc["math", "ci_high"]
    assert len(points) == 2 * 2 * 6


def test_transfer_from_leave_one_out(make_tidy, row):
    df = make_tidy(lambda p, mp, v, c, s: 0.7, volumes=[1000], models=(("m1", 1e6),))
    loo = pd.DataFrame([row(panel="math", value=0.4, volume=900, composition="loo:math", model_params=1e6),
                        row(panel="ethics", value=0.65, volume=900, composition="loo:math", model_params=1e6)])
    df["per_ability"] = 100.0
    loo["per_ability"] = 100.0
    tr = sensitivity.transfer(pd.concat([df, loo], ignore_index=True), base={"math": 0.1})
    pa = tr.per_ability.set_index("ability")
    assert pa.loc["math", "gain_from_others"] == pytest.approx(0.3)
    assert pa.loc["math", "share_of_full_gain"] == pytest.approx(0.5)
    m = tr.matrix.set_index("ability")
    assert m.loc["ethics", "delta"] == pytest.approx(-0.05)


def test_smoothing_keeps_constants_and_mass():
    assert np.allclose(gaussian_smooth(np.full(7, 0.4), 0.8), 0.4)
    y = np.array([0, 0, 1.0, 0, 0, 0, 0])
    sm = gaussian_smooth(y, 0.8)
    assert sm.argmax() == 2 and sm.sum() == pytest.approx(1.0) and sm.max() < 1
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)


def test_item_bootstrap_is_binomial_for_binary_scores():
    from doitray.analysis.stats import bootstrap_draws

    rng = np.random.default_rng(0)
    vals, se = np.array([0.3, 0.0]), np.array([0.5, 0.5])  # se is ignored when n is known
    d = bootstrap_draws(vals, se, np.array([0, 1]), 4000, rng, n_items=np.array([100, 50]))
    assert d[:, 0].std() == pytest.approx(np.sqrt(0.21 / 100), rel=0.1)
    assert (d[:, 1] == 0).all()  # a zero score stays zero: no negative draws
    judge = bootstrap_draws(np.array([6.0]), np.array([0.1]), np.array([0]), 4000, rng, n_items=np.array([80]))
    assert judge[:, 0].std() == pytest.approx(0.1, rel=0.1)  # off the [0, 1] scale: Normal with its se
