"""The statistics behind a report: t-intervals, paired tests and Holm's family-wise adjustment."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t confidence interval; (mean, nan, nan) for fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    if x.size < 2:
        return float(x.mean()), float("nan"), float("nan")
    from scipy import stats

    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def mean_ci_text(values: Sequence[float], fmt: str = ".3g") -> str:
    """``mean [low, high]`` with the 95% t-interval, or the mean alone below 2 values."""
    mean, lo, hi = t_interval(values)
    return f"{mean:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]" if np.isfinite(lo) else f"{mean:{fmt}}"


def paired_p_value(diff: Sequence[float]) -> float:
    """Two-sided one-sample t-test p-value of mean(diff) = 0 (the test the 95% CI inverts); nan below 2 pairs."""
    x = np.asarray(diff, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return float("nan")
    if np.all(x == x[0]):  # no spread: certain unless the difference is exactly 0
        return 1.0 if x[0] == 0 else 0.0
    from scipy import stats

    return float(stats.ttest_1samp(x, 0.0).pvalue)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control; nan entries are not in the family).
    Sorted ascending, the i-th of m gets max over j <= i of min(1, (m - j + 1) p_(j))."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def t_test_power(effect: float, n: int, sd: float, alpha: float = 0.05) -> float:
    """Power of the two-sided one-sample (paired) t-test at level ``alpha`` to detect a true mean
    difference ``effect`` with ``n`` pairs of standard deviation ``sd`` (noncentral t)."""
    from scipy import stats

    if n < 2 or not sd > 0:
        return float("nan")
    df, nc = n - 1, abs(effect) * math.sqrt(n) / sd
    crit = stats.t.ppf(1 - alpha / 2, df)
    power = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
    if not math.isfinite(power):  # scipy's noncentral t fails far in its tail: integrate over the chi^2 instead
        from scipy import integrate

        def given(v: float) -> float:  # P(|Z + nc| > crit * sqrt(V / df)) at V = v, times the density of V
            c = crit * math.sqrt(v / df)
            return (stats.norm.sf(c - nc) + stats.norm.cdf(-c - nc)) * stats.chi2.pdf(v, df)

        power = integrate.quad(given, 0, math.inf, limit=200)[0]
    return min(power, 1.0)


def detectable_difference(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference the paired t-test detects with probability ``power`` at ``alpha``
    (two-sided), given the observed standard deviation of the differences and ``n`` pairs."""
    from scipy.optimize import brentq

    if n < 2 or not np.isfinite(sd) or sd <= 0:
        return float("nan")
    hi = sd
    while t_test_power(hi, n, sd, alpha) < power:
        hi *= 2
    return float(brentq(lambda d: t_test_power(d, n, sd, alpha) - power, 0.0, hi, xtol=1e-10 * sd))


def pairs_needed(effect: float, sd: float, alpha: float = 0.05, power: float = 0.8, most: int = 100_000) -> int | None:
    """The fewest pairs with which the paired t-test detects ``effect`` with probability ``power``;
    None when the standard deviation is unknown or more than ``most`` would be needed."""
    if not np.isfinite(sd) or sd <= 0 or effect == 0:
        return None
    n = 2
    while t_test_power(effect, n, sd, alpha) < power:
        n = n + 1 if n < 64 else int(n * 1.25)
        if n > most:
            return None
    while n > 2 and t_test_power(effect, n - 1, sd, alpha) >= power:  # back off the geometric overshoot
        n -= 1
    return n
