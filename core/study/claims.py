"""Paper claims tested on a study's table: paired differences against a baseline group, with
confidence intervals, p-values and family-wise verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.results import RunStatus
from core.study.stats import holm, paired_p_value, t_interval


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
