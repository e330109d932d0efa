"""Paper claims tested on a study's table: paired differences against a baseline group, with
confidence intervals, p-values and family-wise verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.metrics import config_column, metric
from core.results import RunStatus
from core.study.stats import detectable_difference, holm, paired_p_value, pairs_needed, t_interval

MIN_SEEDS = 3  # independent seeds a verdict needs: cells of one seed (its settings) are not replicates


@dataclass(frozen=True)
class Claim:
    """A paper claim tested on the table, comparing each group against a baseline group.

    kind="mean": paired differences (group - baseline) of ``metric`` over matching (setting, seed)
    cells. kind="spread": per seed, the standard deviation of ``metric`` across the ``settings``
    columns; paired differences over seeds (a lower spread supports it). ``versus``: instead of a baseline
    group, another metric of the same trials (VCL's log-det AUROC against the centroid distance's);
    ``against``: a constant (a rank correlation above 0). ``groups``: only these groups are compared (all
    but the baseline by default). ``better`` comes from the metric glossary (``core/metrics.py``) and
    may only restate it. ``paper_effect``: the paper's difference as a relative change of the baseline's
    value (e.g. -0.02 for 2% lower), when it gives one. A verdict needs cells from at least ``MIN_SEEDS``
    independent seeds; with fewer the claim is inconclusive, says why, and is left out of the Holm family.
    """

    text: str
    metric: str
    kind: str = "mean"
    better: str | None = None
    group: str = config_column("loss.name")
    baseline: str = "cross_entropy"
    settings: tuple[str, ...] = (config_column("augment.policy"), config_column("augment.strength"))
    seed: str = config_column("seed")
    where: tuple[tuple[str, Any], ...] = ()  # (column, value) filters applied first
    paper_effect: float | None = None
    groups: tuple[str, ...] = ()
    versus: str | None = None
    against: float | None = None

    def __post_init__(self) -> None:
        entry = metric(self.metric)
        known = "lower" if self.kind == "spread" else (entry.better if entry else None)
        if self.better is not None and known and self.better != known:
            raise ValueError(f"claim {self.text!r}: better={self.better!r} contradicts the glossary "
                             f"({self.metric}: {known} is better{' spread' if self.kind == 'spread' else ''})")
        if (self.better or known) not in ("higher", "lower"):
            raise ValueError(f"claim {self.text!r}: {self.metric!r} has no better side; give better=")
        if self.versus is not None and self.against is not None:
            raise ValueError(f"claim {self.text!r}: compare with another metric (versus) or a constant (against), "
                             f"not both")
        object.__setattr__(self, "better", self.better or known)

    @property
    def reference(self) -> str:
        """What the groups are compared with: the baseline group, another metric or a constant."""
        return self.versus or (f"{self.against:g}" if self.against is not None else str(self.baseline))

    def evaluate(self, df: pd.DataFrame) -> list[dict]:
        ok = df[df["status"] == RunStatus.FINISHED]
        for col, value in self.where:
            ok = ok[ok[col] == value] if col in ok else ok.iloc[0:0]
        needed = [self.metric] + ([self.versus] if self.versus else [])
        if any(m not in ok.columns for m in needed) or ok.empty:
            return []
        within = self.versus is not None or self.against is not None
        names = sorted(set(ok[self.group]) - (set() if within else {self.baseline}))
        names = [n for n in names if not self.groups or n in self.groups]
        base = ok[ok[self.group] == self.baseline]
        return [self._row(name, *self._paired(ok[ok[self.group] == name], base)) for name in names]

    def _paired(self, grp: pd.DataFrame, base: pd.DataFrame) -> tuple[pd.Series, pd.Series, int]:
        """(group values, reference values, cells per seed) of the paired cells."""
        if self.versus is not None or self.against is not None:
            base = grp.assign(**{self.metric: grp[self.versus] if self.versus else float(self.against)})
        if self.kind == "spread":
            return (grp.groupby(self.seed)[self.metric].std(ddof=0), base.groupby(self.seed)[self.metric].std(ddof=0),
                    1)
        keys = [*self.settings, self.seed]
        a, b = grp.groupby(keys)[self.metric].mean(), base.groupby(keys)[self.metric].mean()
        seeds = max(1, grp[self.seed].nunique())
        return a, b, max(1, round(len(a) / seeds))

    def _seeds(self, diff: pd.Series) -> int:
        """Independent seeds among the paired cells."""
        index = diff.index
        return int(index.nunique() if self.kind == "spread" else index.get_level_values(self.seed).nunique()
                   if isinstance(index, pd.MultiIndex) else index.nunique())

    def _row(self, name: str, a: pd.Series, b: pd.Series, cells_per_seed: int) -> dict:
        diff = (a - b).dropna()
        mean, lo, hi = t_interval(diff.values)
        sign = 1 if self.better == "higher" else -1
        seeds = self._seeds(diff)
        p = paired_p_value(diff.values)
        if not np.isfinite(lo):
            verdict = "not testable (fewer than 2 paired cells)"
        elif seeds < MIN_SEEDS:
            verdict = (f"inconclusive ({diff.size} paired cells from {seeds} independent seed(s); a verdict needs at "
                       f"least {MIN_SEEDS}: cells of one seed are settings, not replicates)")
            p = float("nan")  # no test: out of the Holm family
        else:
            low, high = sorted((sign * lo, sign * hi))  # interval of the supporting direction
            verdict = "holds" if low > 0 else "does not hold" if high < 0 else "inconclusive"
        sd = float(diff.std(ddof=1)) if diff.size > 1 else float("nan")
        row = {"claim": self.text, "group": name, "baseline": self.reference, "metric": self.metric,
               "kind": self.kind, "better": self.better, "group_value": float(a.mean()),
               "baseline_value": float(b.mean()), "diff": mean, "ci_low": lo, "ci_high": hi,
               "n_pairs": int(diff.size), "seeds": seeds, "p_value": p, "verdict": verdict,
               "diff_sd": sd, "detectable_diff": detectable_difference(sd, int(diff.size)),
               "paper_effect": float("nan"), "seeds_for_paper_effect": float("nan")}
        if self.paper_effect is not None:
            effect = self.paper_effect * float(b.mean())
            pairs = pairs_needed(effect, sd)
            row.update(paper_effect=effect,
                       seeds_for_paper_effect=float("nan") if pairs is None else -(-pairs // cells_per_seed))
        return row


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
        why = r["verdict"].split(" (", 1)[1].removesuffix(")") if " (" in r["verdict"] else ""
        head = f"**{raw}**" + (f" ({why})" if why else "")
    seeds = f" from {r['seeds']} seeds" if "seeds" in r and np.isfinite(r["seeds"]) else ""
    return (f"- {head} on this data for {r['group']} vs {r['baseline']}: {what} of "
            f"`{r['metric']}` {r['group_value']:.2f} vs {r['baseline_value']:.2f}, difference {r['diff']:+.2f} "
            f"({ci}, n={r['n_pairs']} paired cells{seeds}; {power_text(r)}). Claim: {r['claim']}")


def power_text(r: dict) -> str:
    """What the test could have seen: the smallest difference it detects at 80% power and its alpha, and
    the seeds that would detect the paper's effect."""
    mde = r.get("detectable_diff", float("nan"))
    text = f"detects |difference| >= {mde:.2f} at 80% power" if np.isfinite(mde) else "power unknown"
    if np.isfinite(r.get("paper_effect", float("nan"))):
        seeds = r.get("seeds_for_paper_effect", float("nan"))
        text += (f"; the paper's effect ({r['paper_effect']:+.2f} here) needs "
                 + (f"{seeds:.0f} seeds" if np.isfinite(seeds) else "more seeds than practical"))
    return text


FAMILY_NOTE = ("Each line gives the smallest difference its paired t-test detects with 80% power at its 5% level "
               "(from the observed standard deviation of the paired differences and n): an INCONCLUSIVE verdict "
               "means no effect of at least that size was seen, not that there is none. "
               "Family-wise error: the {m} claim x group tests of this report are one family, controlled at 5% with "
               "Holm's step-down adjustment of the paired two-sided t-test p-values. The first verdict is the "
               "adjusted one; the raw verdict (each test at 95% alone, its CI shown) follows.")
