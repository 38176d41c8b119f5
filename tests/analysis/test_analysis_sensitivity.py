"""Sensitivity measures recover planted slopes, saturation points and gaps, with CIs, p and q that match
textbook formulas computed here by hand, and read the DMT paper's Table 2 the way the paper does."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import optimize
from scipy import stats as st

from doitray.analysis import curves, sensitivity

VOLS = np.array([10, 40, 160, 640, 2560, 10240])


def _within_slope(df: pd.DataFrame, x: str, group: str) -> dict:
    """Textbook fixed-effects (within-group) OLS slope of value on log2(x): its t CI and one-sided p."""
    u = np.log2(df[x].to_numpy(float))
    y = df["value"].to_numpy(float)
    g = df[group].astype(str).to_numpy()
    uc, yc = u.copy(), y.copy()
    for lev in np.unique(g):
        m = g == lev
        uc[m] -= u[m].mean()
        yc[m] -= y[m].mean()
    b = (uc * yc).sum() / (uc ** 2).sum()
    dof = len(y) - len(np.unique(g)) - 1
    s2 = ((yc - b * uc) ** 2).sum() / dof
    se = math.sqrt(s2 / (uc ** 2).sum())
    tq = st.t.ppf(0.975, dof)
    return {"slope": b, "ci_low": b - tq * se, "ci_high": b + tq * se, "p_greater": st.t.sf(b / se, dof)}


def _noisy(p: float, rng, n: int = 400) -> float:
    return rng.binomial(n, min(max(p, 0), 1)) / n


def test_planted_slope_with_item_noise_matches_the_textbook_fit(make_tidy):
    rng = np.random.default_rng(7)
    slopes = {"math": 0.05, "ethics": 0.0}
    df = make_tidy(lambda p, mp, v, c, s: _noisy(0.3 + slopes[p] * np.log2(v) + 0.02 * np.log2(mp / 1e6), rng))
    ds = sensitivity.data_sensitivity(df).set_index("panel")
    for panel in ("math", "ethics"):
        ref = _within_slope(df[df["panel"] == panel], "volume", "model")
        for k in ("slope", "ci_low", "ci_high", "p_greater"):
            assert ds.loc[panel, k] == pytest.approx(ref[k], rel=1e-9, abs=1e-12), (panel, k)
    assert ds.loc["math", "ci_low"] < 0.05 < ds.loc["math", "ci_high"]
    assert ds.loc["math", "df"] == 12 - 2 - 1 and ds.loc["math", "n_points"] == 12
    ss = sensitivity.size_sensitivity(df).set_index("panel")
    ref = _within_slope(df[df["panel"] == "math"].assign(_x=lambda d: d["volume"].astype(str)), "model_params", "_x")
    assert ss.loc["math", "slope"] == pytest.approx(ref["slope"], rel=1e-9)
    assert ss.loc["math", "ci_low"] < 0.02 < ss.loc["math", "ci_high"]
    table = sensitivity.sensitivity_table(df).set_index("panel")
    assert table.loc["math", "label"] == "responsive" and table.loc["math", "data_q"] < 0.05
    assert table.loc["ethics", "label"] == "not significant" and table.loc["ethics", "data_q"] >= 0.05
    assert table.loc["math", "rank"] == 1 and table.loc["ethics", "rank"] == 2
    # q-values: Benjamini–Hochberg over the two abilities, by hand
    p = sorted([(table.loc[a, "data_p"], a) for a in ("math", "ethics")])
    q_hi = p[1][0]
    q_lo = min(p[0][0] * 2, q_hi)
    assert table.loc[p[0][1], "data_q"] == pytest.approx(q_lo) and table.loc[p[1][1], "data_q"] == pytest.approx(q_hi)


def test_a_significant_gain_is_needed_to_be_responsive(make_tidy):
    # a positive slope buried in noise: it ranks, but it is not called responsive
    rng = np.random.default_rng(3)
    df = make_tidy(lambda p, mp, v, c, s: 0.5 + 0.002 * np.log2(v) + rng.normal(0, 0.05), panels=("math",))
    row = sensitivity.sensitivity_table(df).iloc[0]
    assert row["data_q"] >= 0.05 and row["label"] == "not significant"


def test_ood_panels_are_their_own_family(make_tidy):
    rng = np.random.default_rng(5)
    df = make_tidy(lambda p, mp, v, c, s: _noisy(0.3 + 0.03 * np.log2(v), rng), panels=("math", "ethics", "ceval_law"))
    df.loc[df["panel"] == "ceval_law", "ood"] = True
    ds = sensitivity.data_sensitivity(df).set_index("panel")
    assert ds.loc["ceval_law", "q"] == pytest.approx(ds.loc["ceval_law", "p_greater"])  # alone in its family


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


def _profile_fit(x, y):
    """The saturating model fitted independently of curve_fit: for each c the model is linear in (a, s), so
    minimise the profile RSS(c) over c in [0, 20] (grid, then bounded Brent)."""
    d = np.log2(x) - np.log2(x).min()

    def rss(c):
        g = d if c < 1e-9 else -np.expm1(-c * d) / c
        A = np.column_stack([np.ones_like(d), g])
        beta = np.linalg.lstsq(A, y, rcond=None)[0]
        return float(((y - A @ beta) ** 2).sum())

    grid = np.linspace(0, 20, 4001)
    c0 = grid[np.argmin([rss(c) for c in grid])]
    c = optimize.minimize_scalar(rss, bounds=(max(c0 - 0.01, 0), c0 + 0.01), method="bounded",
                                 options={"xatol": 1e-10}).x
    return c, rss(c), rss(0.0)


def test_planted_saturation_is_found(make_tidy):
    plateau = {10: 0.3, 40: 0.5, 160: 0.7, 640: 0.8, 2560: 0.8, 10240: 0.79}
    df = make_tidy(lambda p, mp, v, c, s: plateau[v] if p == "ethics" else 0.25 + 0.05 * np.log2(v))
    sat = sensitivity.saturation_points(df).set_index(["panel", "model"])
    e = sat.loc[("ethics", "m2")]
    c, rss_curve, rss_line = _profile_fit(VOLS.astype(float), np.array([plateau[v] for v in VOLS]))
    f = (rss_line - rss_curve) / (rss_curve / 3)
    assert e["saturation_c"] == pytest.approx(c, rel=1e-4)
    assert e["saturation_f"] == pytest.approx(f, rel=1e-4)
    assert e["saturation_p"] == pytest.approx(st.f.sf(f, 1, 3), rel=1e-3)
    assert e["saturation_x"] == pytest.approx(10 * 2 ** (math.log(20) / c), rel=1e-3)  # 95% of the plateau gain
    assert bool(e["saturated"]) is True and e["saturation_q"] < 0.05
    assert e["saturation_note"].startswith("saturates at ")
    m = sat.loc[("math", "m2")]
    assert bool(m["saturated"]) is False and m["saturation_p"] == pytest.approx(1.0)  # a straight line in log N
    assert m["saturation_note"].startswith("no saturation detected")
    few = sensitivity.saturation_points(make_tidy(lambda p, mp, v, c, s: 0.5, volumes=[10, 40, 160]))
    assert not few["saturated"].any() and few["saturation_note"].str.startswith("untested").all()


# DMT paper (Dong et al. 2024), App. D.1 Table 2, "Single" rows: GSM8K / HumanEval / MT-Bench per fraction.
DMT_SINGLE = {
    "llama-7b": {1: (49.10, 18.4, 5.88), 1 / 4: (43.37, 11.58, 5.85), 1 / 16: (35.90, 12.19, 5.61),
                 1 / 64: (22.71, 9.14, 5.11), 1 / 256: (12.70, 5.48, 4.00)},
    "llama-13b": {1: (51.4, 18.4, 6.13), 1 / 4: (48.59, 13.41, 6.03), 1 / 16: (43.00, 12.80, 5.66),
                  1 / 64: (27.40, 12.20, 5.24), 1 / 256: (18.40, 10.36, 2.95)},
    "llama-33b": {1: (57.91, 26.82, 6.63), 1 / 4: (56.10, 25.61, 6.66), 1 / 16: (54.60, 21.95, 6.17),
                  1 / 64: (44.60, 18.59, 5.99), 1 / 256: (29.21, 14.02, 2.3)},
}
PARAMS = {"llama-7b": 6.7e9, "llama-13b": 13e9, "llama-33b": 32.5e9}


def _dmt_single(row) -> pd.DataFrame:
    rows = []
    for model, table in DMT_SINGLE.items():
        for frac, vals in table.items():
            for ab, v in zip(("math_en", "code", "general"), vals):
                rows.append(row(panel=ab, model=model, model_params=PARAMS[model], frac=frac, volume=None,
                                value=v if ab == "general" else v / 100, composition="all", n=None, chance=0.0,
                                cell_id=f"{model}-{frac}"))
    return pd.DataFrame(rows)


def test_dmt_table2_data_slope_golden(row):
    ds = sensitivity.data_sensitivity(_dmt_single(row), x="frac").set_index("panel")
    # By hand: log2 fractions 0, -2, -4, -6, -8 (centred 4, 2, 0, -2, -4; Sxx = 40 per model); the
    # within-model cross products of GSM8K are 186.92 (7B), 174.38 (13B) and 137.80 (33B), so the slope is
    # 499.1 / 120 = 4.159 points per doubling of the data.
    assert ds.loc["math_en", "slope"] * 100 == pytest.approx(499.1 / 120, abs=1e-9)
    assert ds.loc["math_en", "q"] < 0.001 and ds.loc["math_en", "df"] == 15 - 3 - 1


def test_dmt_table2_saturation_reads_like_the_paper(row):
    # Paper §2.6: GSM8K "rises monotonically with data"; MT-Bench "emerges with only around 1k samples and then
    # improves slowly". The F-test finds MT-Bench saturating at every size and no saturation of GSM8K at 7B/13B.
    sat = sensitivity.saturation_points(_dmt_single(row), x="frac").set_index(["panel", "model"])
    for model in DMT_SINGLE:
        assert bool(sat.loc[("general", model), "saturated"]), model
    assert not sat.loc[("math_en", "llama-7b"), "saturated"] and not sat.loc[("math_en", "llama-13b"), "saturated"]
    # larger models reach their MT-Bench plateau with less data
    x95 = [sat.loc[("general", m), "saturation_x"] for m in DMT_SINGLE]
    assert x95[0] > x95[1] > x95[2]


def test_construction_gap_is_a_paired_t_test(make_tidy):
    rng = np.random.default_rng(11)
    df = make_tidy(lambda p, mp, v, c, s: _noisy(0.4 + 0.02 * np.log2(v) + (0.1 if c == "curated" else 0.0), rng),
                   constructions=("curated", "synthetic"), se=0.01)
    points, summary = sensitivity.construction_gap(df, n_boot=300)
    s = summary.set_index("panel")
    assert len(points) == 2 * 2 * 6
    d = points[points["panel"] == "math"]["gap"].to_numpy()
    n = len(d)
    half = st.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)
    assert s.loc["math", "gap"] == pytest.approx(d.mean())
    assert s.loc["math", "ci_low"] == pytest.approx(d.mean() - half) and s.loc["math", "ci_high"] == pytest.approx(
        d.mean() + half)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(n))
    assert s.loc["math", "p"] == pytest.approx(2 * st.t.sf(abs(t), n - 1))
    assert s.loc["math", "ci_low"] < 0.1 < s.loc["math", "ci_high"] and s.loc["math", "q"] < 0.05
    # one point's CI: the two scores' SEs (each from its CI, value ± 1.96·0.01 here) combined
    p0 = points.iloc[0]
    assert p0["ci_high"] - p0["gap"] == pytest.approx(1.96 * math.hypot(0.01, 0.01), rel=1e-9)


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


def test_smoothing_by_hand():
    # σ = 0.8, radius int(4σ + 0.5) = 3: weights ∝ exp(-k²/1.28) = 1, 0.45783, 0.043937, 0.000884 (sum 2.005302);
    # edges reflect (d c b a | a b c d), so at index 0 the spike at 2 arrives at distances 2 and 3.
    assert np.allclose(curves.smooth(np.full(7, 0.4), 0.8), 0.4)
    sm = curves.smooth(np.array([0, 0, 1.0, 0, 0, 0, 0]), 0.8)
    assert sm[2] == pytest.approx(1 / 2.005302, rel=1e-5)
    assert sm[1] == pytest.approx(0.45783 / 2.005302, rel=1e-4)
    assert sm[0] == pytest.approx((0.043937 + 0.000884) / 2.005302, rel=1e-4)
    assert sm.sum() == pytest.approx(1.0)
