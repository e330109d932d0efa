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
