"""The statistics wrappers against values computed by hand (textbook formulas, exact enumeration)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from doitray.analysis import stats

# The textbook 5-point regression: x = 1..5, y = 2, 4, 5, 4, 5. Sxx = 10, Sxy = 6: slope 0.6, intercept 2.2;
# residuals -0.8, 0.6, 1.0, -0.6, -0.2: RSS 2.4, s² = 0.8, SE(slope) = √0.08 = 0.282843, t = 2.12132 on 3 df.
X5, Y5 = [1, 2, 3, 4, 5], [2, 4, 5, 4, 5]
T = 0.6 / math.sqrt(0.08)
T975_3 = 3.182446305284263  # Student t, 3 df, 97.5% quantile (tables: 3.182)


def _t3_two_sided(t: float) -> float:
    """Closed-form two-sided p of Student's t with 3 df: 1 − (2/π)(atan(t/√3) + (t/√3)/(1 + t²/3))."""
    z = t / math.sqrt(3)
    return 1 - 2 / math.pi * (math.atan(z) + z / (1 + z * z))


def test_ols_slope_by_hand():
    s = stats.fe_slope(Y5, X5)
    assert s.slope == pytest.approx(0.6)
    assert s.ci_low == pytest.approx(0.6 - T975_3 * math.sqrt(0.08)) and s.ci_high == pytest.approx(1.5001317, rel=1e-6)
    assert s.p == pytest.approx(_t3_two_sided(T)) and s.p == pytest.approx(0.12403, abs=1e-5)
    assert s.p_greater == pytest.approx(s.p / 2) and s.df == 3


def test_group_intercepts_leave_the_within_slope():
    # two groups shifted by +10: same slope, one more parameter, so 2·5 − 3 = 7 df
    s = stats.fe_slope(Y5 + [y + 10 for y in Y5], X5 + X5, ["a"] * 5 + ["b"] * 5)
    assert s.slope == pytest.approx(0.6) and s.df == 7
    se = math.sqrt(2 * 2.4 / 7 / 20)  # RSS doubles, Sxx doubles
    assert (s.ci_high - s.slope) / se == pytest.approx(2.364624251592785)  # t(0.975, 7)
    assert math.isnan(stats.fe_slope([1, 2, 3, 4], [1, 1, 2, 2], ["a", "a", "b", "b"]).slope)  # not identifiable


def test_pearson_by_hand():
    c = stats.pearson(X5, Y5)
    assert c.r == pytest.approx(math.sqrt(0.6))  # r² = R² = 0.6
    assert c.p == pytest.approx(_t3_two_sided(T))  # the same t-test as the slope
    z, half = math.atanh(math.sqrt(0.6)), 1.959964 / math.sqrt(5 - 3)
    assert c.ci_low == pytest.approx(math.tanh(z - half), rel=1e-5)
    assert c.ci_high == pytest.approx(math.tanh(z + half), rel=1e-5)
    assert (round(c.ci_low, 4), round(c.ci_high, 4)) == (-0.3401, 0.9842)


def _exact_spearman_p(x, y) -> float:
    """Two-sided exact p by enumerating every pairing: 2·min(P(ρ ≥ obs), P(ρ ≤ obs))."""
    def rho(a, b):
        ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
        return 1 - 6 * ((ra - rb) ** 2).sum() / (len(a) * (len(a) ** 2 - 1))
    obs = rho(x, y)
    all_r = np.array([rho(x, np.array(p)) for p in itertools.permutations(y)])
    return min(1.0, 2 * min((all_r >= obs - 1e-12).mean(), (all_r <= obs + 1e-12).mean()))


def test_spearman_on_the_dmt_k_sweep_by_enumeration():
    # DMT paper App. D.3 Table 5, LLaMA-7B, k = 1/256 … 1: MT-Bench falls monotonically (ρ = −1);
    # GSM8K ranks 1, 2, 3, 5, 4 (ρ = 1 − 6·2/120 = 0.9).
    k = np.array([1 / 256, 1 / 64, 1 / 16, 1 / 4, 1])
    mt = np.array([6.08, 6.01, 5.78, 5.69, 5.63])
    gsm = np.array([41.92, 42.53, 43.3, 48.37, 45.79])
    c = stats.spearman(k, mt)
    assert c.r == -1 and c.p == pytest.approx(2 / 120) == pytest.approx(_exact_spearman_p(k, mt))
    assert math.isnan(c.ci_low) and "exact" in c.method  # CI undefined at |ρ| = 1
    g = stats.spearman(k, gsm)
    assert g.r == pytest.approx(0.9) and g.p == pytest.approx(10 / 120) == pytest.approx(_exact_spearman_p(k, gsm))
    half = 1.959964 * math.sqrt((1 + 0.81 / 2) / 2)  # Bonett–Wright variance (1 + ρ²/2)/(n − 3)
    assert g.ci_low == pytest.approx(math.tanh(math.atanh(0.9) - half), rel=1e-5)
    assert g.ci_high == pytest.approx(math.tanh(math.atanh(0.9) + half), rel=1e-5)


def test_spearman_monte_carlo_is_seeded():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=10), rng.normal(size=10)
    c1, c2 = stats.spearman(a, b, seed=3), stats.spearman(a, b, seed=3)
    assert c1 == c2 and "Monte-Carlo" in c1.method
    assert math.isnan(stats.spearman([1, 2, 3], [1, 1, 1]).r)  # undefined for a constant input


def test_benjamini_hochberg_by_hand():
    # sorted p 0.005, 0.01, 0.03, 0.04 (m = 4): p·m/rank = 0.02, 0.02, 0.04, 0.04, then the running minimum from
    # the top: 0.02, 0.02, 0.04, 0.04
    q = stats.bh([0.01, 0.04, 0.03, 0.005, np.nan])
    assert q[:4] == pytest.approx([0.02, 0.04, 0.04, 0.02]) and np.isnan(q[4])


def test_mean_ci_adds_the_item_noise_to_the_seed_bootstrap():
    m, se, lo, hi = stats.mean_ci([0.5, 0.5], [0.02, 0.04])
    assert m == 0.5 and se == pytest.approx(0.03)  # identical seeds: only the (mean) item SE is left
    assert (lo, hi) == (pytest.approx(0.5 - 1.959964 * 0.03), pytest.approx(0.5 + 1.959964 * 0.03))
    m, se, lo, hi = stats.mean_ci([0.4, 0.5, 0.6], [0.0, 0.0, 0.0], n_boot=4000, seed=1)
    # the bootstrap SE of a mean of 3 values is the plug-in SE σ̂/√n = √(0.02/3)/√3 (σ̂ with ddof 0)
    assert se == pytest.approx(math.sqrt(0.02 / 3) / math.sqrt(3), rel=0.05)
    assert stats.mean_ci([0.4, 0.5, 0.6], [0, 0, 0], seed=1) == stats.mean_ci([0.4, 0.5, 0.6], [0, 0, 0], seed=1)


def test_saturating_curve_is_the_line_at_c_zero():
    d = np.array([0.0, 1, 2, 3])
    assert stats.saturating(d, 1.0, 0.5, 0.0) == pytest.approx(1 + 0.5 * d)
    assert stats.saturating(d, 1.0, 0.5, 1e-7) == pytest.approx(1 + 0.5 * d, rel=1e-6)
    assert stats.saturating(d, 1.0, 0.5, 1.0) == pytest.approx(1 + 0.5 * (1 - np.exp(-d)))


def test_fmt_p():
    assert stats.fmt_p(0.0004) == "< 0.001" and stats.fmt_p(0.01666) == "0.0167" and stats.fmt_p(np.nan) == "–"
