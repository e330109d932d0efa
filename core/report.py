"""Study outputs: a tidy parquet table (one row per trial), claims with verdicts and confidence
intervals, a markdown report and PNG plots. Every number in the report comes from the table."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from core.config import RunConfig
from core.io import write_atomic
from core.results import RunStatus


def flatten(prefix: str, d: dict) -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(key + ".", v))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def config_columns(cfg: RunConfig) -> dict:
    """The full resolved config as ``cfg.section.key`` columns."""
    return flatten("cfg.", cfg.to_dict())


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Parquet, written to a temporary name then renamed (never half-written)."""
    write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


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


@dataclass(frozen=True)
class Claim:
    """A paper claim tested on the table, comparing each group against a baseline group.

    kind="mean": paired differences (group - baseline) of ``metric`` over matching (setting, seed)
    cells. kind="spread": per seed, the standard deviation of ``metric`` across the ``settings``
    columns; paired differences over seeds. ``better`` says which sign supports the claim.
    """

    text: str
    metric: str
    kind: str = "mean"
    better: str = "higher"
    group: str = "cfg.loss.name"
    baseline: str = "cross_entropy"
    settings: tuple[str, ...] = ("cfg.augment.policy", "cfg.augment.strength")
    seed: str = "cfg.seed"
    where: tuple[tuple[str, Any], ...] = ()  # (column, value) filters applied first

    def evaluate(self, df: pd.DataFrame) -> list[dict]:
        ok = df[df["status"] == RunStatus.FINISHED]
        for col, value in self.where:
            ok = ok[ok[col] == value] if col in ok else ok.iloc[0:0]
        if self.metric not in ok.columns or ok.empty:
            return []
        rows = []
        base = ok[ok[self.group] == self.baseline]
        for name in sorted(set(ok[self.group]) - {self.baseline}):
            grp = ok[ok[self.group] == name]
            if self.kind == "spread":
                a = grp.groupby(self.seed)[self.metric].std(ddof=0)
                b = base.groupby(self.seed)[self.metric].std(ddof=0)
            else:
                keys = [*self.settings, self.seed]
                a = grp.groupby(keys)[self.metric].mean()
                b = base.groupby(keys)[self.metric].mean()
            diff = (a - b).dropna()
            mean, lo, hi = t_interval(diff.values)
            p = paired_p_value(diff.values)
            sign = 1 if self.better == "higher" else -1
            if not np.isfinite(lo):
                verdict = "not testable (fewer than 2 paired cells)"
            else:
                low, high = sorted((sign * lo, sign * hi))  # interval of the supporting direction
                verdict = "holds" if low > 0 else "does not hold" if high < 0 else "inconclusive"
            rows.append({"claim": self.text, "group": name, "baseline": self.baseline, "metric": self.metric,
                         "kind": self.kind, "better": self.better, "group_value": float(a.mean()), "baseline_value": float(b.mean()),
                         "diff": mean, "ci_low": lo, "ci_high": hi, "n_pairs": int(diff.size), "p_value": p,
                         "verdict": verdict})
        return rows


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


def adjust_family(rows: list[dict], alpha: float = 0.05) -> list[dict]:
    """Every claim x group test of one report as one family: Holm-adjusted p-values and verdicts
    (``p_holm``, ``verdict_holm``) beside the raw ones. A claim holds family-wise when its adjusted
    p < alpha in the supporting direction."""
    adjusted = holm([r.get("p_value", float("nan")) for r in rows])
    out = []
    for r, p in zip(rows, adjusted):
        if not np.isfinite(p):
            verdict = r["verdict"]
        elif p >= alpha:
            verdict = "inconclusive"
        else:
            supports = r["diff"] > 0 if r.get("better", "higher") == "higher" else r["diff"] < 0
            verdict = "holds" if supports else "does not hold"
        out.append({**r, "p_holm": float(p), "verdict_holm": verdict})
    return out


def verdict_line(r: dict) -> str:
    """One claim x group result; with ``verdict_holm`` (see :func:`adjust_family`) the family-wise
    verdict leads and the raw one follows."""
    what = "spread (std across settings)" if r["kind"] == "spread" else "mean"
    ci = f"95% CI [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]" if np.isfinite(r["ci_low"]) else "no CI"
    raw = r["verdict"].split(" (")[0].upper()
    if "verdict_holm" in r and np.isfinite(r.get("p_holm", float("nan"))):
        head = (f"**{r['verdict_holm'].upper()}** (Holm p={r['p_holm']:.3g}; raw: {raw}, p={r['p_value']:.3g})")
    else:
        head = f"**{raw}**"
    return (f"- {head} on this data for {r['group']} vs {r['baseline']}: {what} of "
            f"`{r['metric']}` {r['group_value']:.2f} vs {r['baseline_value']:.2f}, difference {r['diff']:+.2f} "
            f"({ci}, n={r['n_pairs']} paired cells). Claim: {r['claim']}")


FAMILY_NOTE = ("Family-wise error: the {m} claim x group tests of this report are one family, controlled at 5% with "
               "Holm's step-down adjustment of the paired two-sided t-test p-values. The first verdict is the "
               "adjusted one; the raw verdict (each test at 95% alone, its CI shown) follows.")


def summary_table(df: pd.DataFrame, group: str, metrics: Sequence[str]) -> pd.DataFrame:
    """Mean, 95% CI half-width (over all finished trials of the group) per metric."""
    ok = df[df["status"] == RunStatus.FINISHED]
    rows = []
    for name, g in ok.groupby(group):
        row = {group.removeprefix("cfg."): name, "trials": len(g)}
        for m in metrics:
            if m in g:
                mean, lo, hi = t_interval(g[m].values)
                row[m] = f"{mean:.2f} ± {(hi - lo) / 2:.2f}" if np.isfinite(lo) else f"{mean:.2f}"
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "(no rows)\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r.values) + " |")
    return "\n".join(lines) + "\n"


def plot_lines(df: pd.DataFrame, x: str, y: str, group: str, facet: str | None, path: str | Path,
               title: str) -> Path | None:
    """Mean of ``y`` vs ``x`` per group, one panel per ``facet`` value (panels share the y-axis). Error
    bars: standard deviation over the trials (seeds) of each point, as the figure's caption says."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[df["status"] == RunStatus.FINISHED]
    if ok.empty or y not in ok:
        return None
    facets = sorted(ok[facet].unique()) if facet else [None]
    fig, axes = plt.subplots(1, len(facets), figsize=(4.5 * len(facets), 3.6), squeeze=False, sharey=True)
    per_point = ok.groupby([c for c in (facet, group, x) if c]).size()
    for ax, fv in zip(axes[0], facets):
        sub = ok if fv is None else ok[ok[facet] == fv]
        for name, g in sub.groupby(group):
            stats = g.groupby(x)[y].agg(["mean", "std"]).reset_index()
            ax.errorbar(stats[x], stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3, label=str(name))
        ax.set_xlabel(x.removeprefix("cfg."))
        ax.set_ylabel(y)
        ax.set_title(f"{facet.removeprefix('cfg.')}={fv}" if fv is not None else "", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    n = f"n={per_point.min()}" if per_point.min() == per_point.max() else f"n={per_point.min()}-{per_point.max()}"
    fig.suptitle(f"{title}\nerror bars: std over seeds ({n} trials per point)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def severity_frame(df: pd.DataFrame, group: str = "cfg.loss.name") -> pd.DataFrame:
    """Long table of corruption accuracy per severity (0 = clean probe accuracy)."""
    ok = df[df["status"] == RunStatus.FINISHED]
    rows = []
    for _, r in ok.iterrows():
        if "probe_top1" in r:
            rows.append({group: r[group], "severity": 0, "accuracy": r["probe_top1"], "cfg.seed": r["cfg.seed"]})
        for s in range(1, 6):
            col = f"corruption_acc_s{s}"
            if col in r and np.isfinite(r[col]):
                rows.append({group: r[group], "severity": s, "accuracy": r[col], "cfg.seed": r["cfg.seed"]})
    return pd.DataFrame(rows)


def normalized_mce_table(df: pd.DataFrame, group: str, baseline: str) -> pd.DataFrame:
    """ImageNet-C mCE and relative mCE of each group against ``baseline`` (100 = as the baseline),
    from the group means of every ``corr_<type>_s<severity>`` column and of clean ``probe_top1``."""
    from core.eval.robustness import normalized_corruption_errors

    ok = df[df["status"] == RunStatus.FINISHED]
    cols = [c for c in ok.columns if c.startswith("corr_") and ok[c].notna().any()]
    if ok.empty or not cols or baseline not in set(ok[group]):
        return pd.DataFrame()
    means = ok.groupby(group)[cols + ["probe_top1"]].mean()

    def pairs(row: pd.Series) -> dict[tuple[str, int], float]:
        return {(c[5:].rsplit("_s", 1)[0], int(c.rsplit("_s", 1)[1])): float(row[c]) for c in cols}

    base = means.loc[baseline]
    rows = []
    for name, row in means.iterrows():
        out = normalized_corruption_errors(pairs(row), float(row["probe_top1"]), pairs(base),
                                           float(base["probe_top1"]))
        rows.append({group.removeprefix("cfg."): name, f"mCE vs {baseline}": out["mce"],
                     f"relative mCE vs {baseline}": out["relative_mce"],
                     "corruption types": len({c[5:].rsplit("_s", 1)[0] for c in cols})})
    return pd.DataFrame(rows)


def plot_spectrum(df: pd.DataFrame, group: str, path: str | Path, title: str) -> Path | None:
    """Mean normalised singular value spectrum of the features per group (log scale): a steep
    drop is dimensional collapse."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[(df["status"] == RunStatus.FINISHED)] if "spectrum_features" in df else pd.DataFrame()
    ok = ok[ok["spectrum_features"].apply(lambda s: isinstance(s, str) and bool(s))] if not ok.empty else ok
    if ok.empty:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, g in ok.groupby(group):
        spectra = [np.array([float(x) for x in s.split(",")]) for s in g["spectrum_features"]]
        n = min(len(s) for s in spectra)
        ax.semilogy(np.arange(1, n + 1), np.mean([s[:n] for s in spectra], axis=0), label=str(name))
    ax.set_xlabel("singular value index")
    ax.set_ylabel("normalised singular value")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
