"""Statistical tests behind the report, as thin wrappers over SciPy and statsmodels.

- ``pearson`` / ``spearman``: a correlation with its 95% CI and p-value (``Corr``).
  Pearson: ``scipy.stats.pearsonr`` (t-test p; Fisher-z CI). Spearman: ρ from ``scipy.stats.spearmanr``;
  p from ``scipy.stats.permutation_test`` over pairings (exact when n! ≤ ``n_resamples``, else a seeded
  Monte-Carlo test), since the t approximation is poor at the 5–10 points a study has; CI by the Fisher z
  transform with the Bonett–Wright (2000) variance (1 + ρ²/2) / (n − 3), undefined for n < 4 or |ρ| = 1.
- ``fe_slope``: the slope of y on a covariate with one intercept per group, by ``statsmodels`` OLS, with
  its t-based CI, the two-sided p and the one-sided p for slope > 0 (``Slope``).
- ``bh``: Benjamini–Hochberg q-values (``statsmodels.stats.multitest.multipletests(method="fdr_bh")``).
- ``mean_ci``: the mean of a design point's seeds with a CI that adds the evaluators' item noise to a
  seeded ``scipy.stats.bootstrap`` over the seeds.
- ``fit_saturation``: a saturating curve vs a straight line in log2(x), ``scipy.optimize.curve_fit`` and
  an extra-sum-of-squares F-test of the nested models (``Saturation``).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as st

Z95 = float(st.norm.ppf(0.975))
ALPHA = 0.05


def _clean_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok], b[ok]


def _constant(v: np.ndarray) -> bool:
    return len(v) < 2 or bool(np.all(v == v[0]))


@dataclass(frozen=True)
class Corr:
    """A correlation coefficient with its 95% CI, p-value, number of pairs and the methods used."""

    r: float
    ci_low: float
    ci_high: float
    p: float
    n: int
    method: str  # e.g. "Spearman ρ; exact permutation p; Fisher-z CI (Bonett–Wright)"

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self, symbol: str = "ρ") -> str:
        """'ρ = +0.26 [−0.43, 0.76], p = 0.47 (n = 10)'."""
        if not np.isfinite(self.r):
            return f"{symbol} undefined (n = {self.n})"
        ci = (f"[{self.ci_low:+.2f}, {self.ci_high:+.2f}]" if np.isfinite(self.ci_low) and np.isfinite(self.ci_high)
              else "[CI undefined]")
        return f"{symbol} = {self.r:+.2f} {ci}, p = {fmt_p(self.p)} (n = {self.n})"


_NAN_CORR = dict(r=float("nan"), ci_low=float("nan"), ci_high=float("nan"), p=float("nan"))


def fmt_p(p: float) -> str:
    """p (or q) for print: 3 significant digits, '< 0.001' below that, '–' when undefined."""
    if p is None or not np.isfinite(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def pearson(a, b) -> Corr:
    """Pearson's r (``scipy.stats.pearsonr``): t-test p, Fisher-z 95% CI (n ≥ 4)."""
    a, b = _clean_pair(a, b)
    method = "Pearson r; t-test p; Fisher-z CI"
    if len(a) < 3 or _constant(a) or _constant(b):
        return Corr(**_NAN_CORR, n=len(a), method=method)
    res = st.pearsonr(a, b)
    r = _snap(float(res.statistic))
    lo = hi = float("nan")
    if len(a) >= 4 and abs(r) < 1:
        ci = res.confidence_interval(0.95)
        lo, hi = float(ci.low), float(ci.high)
    return Corr(r, lo, hi, float(res.pvalue), len(a), method)


def _snap(r: float) -> float:
    """±1 when a correlation is ±1 up to rounding (so that its CI is reported as undefined)."""
    return float(np.sign(r)) if abs(r) > 1 - 1e-12 else r


def spearman_rho(a, b) -> float:
    """Spearman's ρ alone (``scipy.stats.spearmanr``); NaN when undefined (a descriptive rank agreement)."""
    a, b = _clean_pair(a, b)
    if len(a) < 2 or _constant(a) or _constant(b):
        return float("nan")
    return float(st.spearmanr(a, b).statistic)


def spearman(a, b, n_resamples: int = 9999, seed: int = 0) -> Corr:
    """Spearman's ρ with a permutation p-value (exact when n! ≤ ``n_resamples``) and a Fisher-z CI
    with the Bonett–Wright variance (see the module doc)."""
    a, b = _clean_pair(a, b)
    exact = len(a) <= 12 and math.factorial(len(a)) <= n_resamples
    method = (f"Spearman ρ; {'exact' if exact else 'Monte-Carlo'} permutation p; Fisher-z CI (Bonett–Wright)")
    if len(a) < 3 or _constant(a) or _constant(b):
        return Corr(**_NAN_CORR, n=len(a), method=method)
    rho = _snap(float(st.spearmanr(a, b).statistic))
    ra, rb = st.rankdata(a), st.rankdata(b)
    rb_c = rb - rb.mean()

    def stat(x, axis=-1):
        xc = x - x.mean(axis=axis, keepdims=True)
        return (xc * rb_c).sum(axis=axis) / np.sqrt((xc ** 2).sum(axis=axis) * (rb_c ** 2).sum())

    p = float(st.permutation_test((ra,), stat, permutation_type="pairings", vectorized=True,
                                  n_resamples=n_resamples, rng=np.random.default_rng(seed)).pvalue)
    lo = hi = float("nan")
    if len(a) >= 4 and abs(rho) < 1:
        half = Z95 * math.sqrt((1 + rho ** 2 / 2) / (len(a) - 3))
        lo, hi = math.tanh(math.atanh(rho) - half), math.tanh(math.atanh(rho) + half)
    return Corr(rho, lo, hi, min(p, 1.0), len(a), method)


@dataclass(frozen=True)
class Slope:
    """An OLS slope with its CI (t distribution, ``df`` residual degrees of freedom) and p-values."""

    slope: float
    ci_low: float
    ci_high: float
    p: float  # two-sided, H0 slope = 0
    p_greater: float  # one-sided, H1 slope > 0
    df: int
    n: int


def fe_slope(y, x, groups=None, level: float = 0.95) -> Slope:
    """Slope of ``y`` on ``x`` with one intercept per level of ``groups`` (``statsmodels`` OLS).

    Fewer than one residual degree of freedom gives the slope with NaN CI and p-values; a slope that the
    design cannot identify (``x`` constant within every group) is NaN.
    """
    import statsmodels.api as sm

    y, x = np.asarray(y, float), np.asarray(x, float)
    g = np.zeros(len(y), int) if groups is None else pd.factorize(np.asarray(groups))[0]
    nan = float("nan")
    if len(y) < 2 or all(_constant(x[g == k]) for k in range(g.max() + 1)):
        return Slope(nan, nan, nan, nan, nan, 0, len(y))  # x does not vary within any group
    X = np.column_stack([(g == k).astype(float) for k in range(g.max() + 1)] + [x])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        res = sm.OLS(y, X).fit()
    b = float(res.params[-1])
    df = int(round(res.df_resid))
    if df < 1:
        return Slope(b, nan, nan, nan, nan, df, len(y))
    scale = max(1.0, float((y ** 2).sum()))
    if res.ssr <= 1e-24 * scale:  # an exact fit: no residual noise to test against
        sig = abs(b) > 1e-12
        return Slope(b, b, b, 0.0 if sig else 1.0, (0.0 if b > 0 else 1.0) if sig else 1.0, df, len(y))
    lo, hi = (float(v) for v in np.asarray(res.conf_int(alpha=1 - level))[-1])
    t = float(res.tvalues[-1])
    return Slope(b, lo, hi, float(res.pvalues[-1]), float(st.t.sf(t, df)), df, len(y))


def bh(pvals) -> np.ndarray:
    """Benjamini–Hochberg q-values of ``pvals`` (NaN entries stay NaN and are not counted)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvals, float)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = multipletests(p[ok], alpha=ALPHA, method="fdr_bh")[1]
    return q


def item_se(value: float, n: float | None, ci_low: float | None, ci_high: float | None) -> float:
    """Standard error of one score: from its CI when given, else binomial from ``n``, else 0."""
    if ci_low is not None and ci_high is not None and not (pd.isna(ci_low) or pd.isna(ci_high)):
        return max(float(ci_high) - float(ci_low), 0.0) / (2 * Z95)
    if n is not None and not pd.isna(n) and n > 0 and 0 <= value <= 1:
        return math.sqrt(max(value * (1 - value), 0.0) / float(n))
    return 0.0


def mean_ci(values, item_ses, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float, float]:
    """(mean, se, ci_low, ci_high) of one design point's scores, one per seed.

    se² = SE²(seeds) + SE²(items): SE(seeds) is the standard error of ``scipy.stats.bootstrap`` (seeded)
    of the mean over the seeds (0 with one seed); SE(items) is the mean of the evaluators' item SEs (the
    seeds share the test items, so their test-set noise does not average out). CI: mean ± 1.96 se.
    """
    v = np.asarray(values, float)
    m = float(v.mean())
    se_items = float(np.mean(item_ses)) if len(item_ses) else 0.0
    se_seeds = 0.0
    if len(v) >= 2 and not _constant(v):
        res = st.bootstrap((v,), np.mean, n_resamples=max(int(n_boot), 2), method="percentile",
                           rng=np.random.default_rng(seed))
        se_seeds = float(res.standard_error)
    se = math.hypot(se_seeds, se_items)
    return m, se, m - Z95 * se, m + Z95 * se


SATURATION_FORM = ("score = a + s·(1 − exp(−c·d))/c with d = log2(N / N_min), c ≥ 0 (an exponential approach "
                   "to a plateau in log volume; c = 0 is the straight line a + s·d)")


def saturating(d, a, s, c):
    """The saturating curve of ``SATURATION_FORM`` (continuous at c = 0)."""
    d = np.asarray(d, float)
    cc = np.where(np.abs(c) < 1e-9, 1.0, c)
    return a + s * np.where(np.abs(c) < 1e-9, d, -np.expm1(-cc * d) / cc)


@dataclass(frozen=True)
class Saturation:
    """A saturating fit vs the straight line, the F-test between them, and the 95%-of-plateau point."""

    c: float  # curvature per doubling (0 = straight line)
    s: float  # initial slope per doubling (> 0: rising towards the plateau)
    c_ci_low: float
    c_ci_high: float
    plateau: float  # a + s / c (inf when c = 0)
    x95: float  # x where the fit reaches 95% of its gain from x_min to the plateau (inf when c = 0)
    in_range: bool  # x95 ≤ the largest x tested
    f: float
    p: float  # extra-sum-of-squares F-test, df (1, n − 3); NaN when untestable
    rss_line: float
    rss_curve: float
    n: int
    note: str = ""


def fit_saturation(x, y, max_c: float = 20.0) -> Saturation:
    """Fit ``SATURATION_FORM`` by ``scipy.optimize.curve_fit`` and F-test it against the straight line.

    The line is the c = 0 case, so the models are nested: F = (RSS_line − RSS_curve) / (RSS_curve / (n − 3)),
    df (1, n − 3). Needs at least 3 distinct x and 4 points.
    """
    x, y = _clean_pair(x, y)
    keep = x > 0
    x, y = x[keep], y[keep]
    nan = float("nan")
    n = len(y)
    if len(np.unique(x)) < 3 or n < 4:
        return Saturation(nan, nan, nan, nan, nan, nan, False, nan, nan, nan, nan, n, "too few volumes to test")
    u = np.log2(x)
    d = u - u.min()
    line = np.polynomial.polynomial.polyfit(d, y, 1)
    rss_line = float(((y - (line[0] + line[1] * d)) ** 2).sum())
    best = None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for c0 in (0.05, 0.2, 0.5, 1.0, 2.0, 5.0):
            g = -np.expm1(-c0 * d) / c0  # start a, s from the linear least squares at this c
            a0, s0 = np.linalg.lstsq(np.column_stack([np.ones(n), g]), y, rcond=None)[0]
            try:
                popt, pcov = optimize.curve_fit(saturating, d, y, p0=[a0, s0, c0],
                                                bounds=([-np.inf, -np.inf, 0.0], [np.inf, np.inf, max_c]),
                                                method="trf", maxfev=5000)
            except (RuntimeError, ValueError):
                continue
            rss = float(((y - saturating(d, *popt)) ** 2).sum())
            if best is None or rss < best[0]:
                best = (rss, popt, pcov)
    if best is None:
        return Saturation(nan, nan, nan, nan, nan, nan, False, nan, nan, rss_line, nan, n, "the curve fit failed")
    rss, (a, s, c), pcov = best
    rss = min(rss, rss_line)  # the line is in the family: the curve can never fit worse
    df2 = n - 3
    if rss_line <= 1e-24 * max(1.0, float((y ** 2).sum())):
        f, p = 0.0, 1.0  # the points lie on a line
    elif rss <= 1e-24 * max(1.0, float((y ** 2).sum())):
        f, p = float("inf"), 0.0
    else:
        f = (rss_line - rss) / (rss / df2)
        p = float(st.f.sf(f, 1, df2))
    se_c = float(np.sqrt(pcov[2, 2])) if np.all(np.isfinite(pcov)) and pcov[2, 2] >= 0 else nan
    tq = float(st.t.ppf(0.975, df2))
    c_lo, c_hi = (max(c - tq * se_c, 0.0), c + tq * se_c) if np.isfinite(se_c) else (nan, nan)
    if c > 1e-9:
        plateau = float(a + s / c)
        e = u.min() + math.log(20) / c
        x95 = float(2.0 ** e) if e < 1000 else float("inf")
    else:
        plateau = x95 = float("inf")
    return Saturation(float(c), float(s), c_lo, c_hi, plateau, x95, bool(x95 <= x.max() * (1 + 1e-9)), float(f), p,
                      rss_line, float(rss), n)
