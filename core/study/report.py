"""Study outputs: a tidy parquet table (one row per trial), claims with verdicts and confidence
intervals, a markdown report and PNG plots. Every number in the report comes from the table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from core.io import write_atomic, write_json_atomic, write_text_atomic
from core.metrics import config_column, config_key, corruption_acc_at, mce_vs, metric, relative_mce_vs
from core.results import RunStatus
from core.study.claims import FAMILY_NOTE, adjust_family, verdict_line
from core.study.spec import Study
from core.study.stats import t_interval
from core.study.studydir import CLAIMS_FILE, REPORT_FILE, TIMING_FILE


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Parquet, written to a temporary name then renamed (never half-written)."""
    write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


def summary_table(df: pd.DataFrame, group: str, metrics: Sequence[str]) -> pd.DataFrame:
    """Mean, 95% CI half-width (over all finished trials of the group) per metric."""
    ok = df[df["status"] == RunStatus.FINISHED]
    rows = []
    for name, g in ok.groupby(group):
        row = {config_key(group): name, "trials": len(g)}
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


AXIS_LABELS = {config_column("augment.strength"): "augmentation strength (0 = none, 1 = strongest)",
               "severity": "corruption severity (0 = clean)", "accuracy": "probe accuracy (%)"}


def axis_label(column: str) -> str:
    """An axis label with its unit, from the glossary where the column is a metric."""
    if column in AXIS_LABELS:
        return AXIS_LABELS[column]
    m = metric(column)
    unit = f" ({m.unit})" if m is not None and m.unit not in ("-", "") else ""
    return config_key(column) + unit


def plot_lines(df: pd.DataFrame, x: str, y: str, group: str, facet: str | None, path: str | Path,
               title: str) -> Path | None:
    """Mean of ``y`` vs ``x`` per group, one panel per ``facet`` value (panels share the y-axis), the groups
    dodged sideways so their error bars do not overlap. Error bars: standard deviation over the trials of each
    point (seeds, and any setting not on the axes), as the figure's caption says with their count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[df["status"] == RunStatus.FINISHED]
    if ok.empty or y not in ok:
        return None
    facets = sorted(ok[facet].unique()) if facet else [None]
    fig, axes = plt.subplots(1, len(facets), figsize=(4.5 * len(facets), 3.6), squeeze=False, sharey=True)
    per_point = ok.groupby([c for c in (facet, group, x) if c]).size()
    xs = np.sort(ok[x].unique().astype(float))
    step = 0.04 * (xs[-1] - xs[0] if len(xs) > 1 else 1.0)
    names = sorted(ok[group].unique(), key=str)
    for ax, fv in zip(axes[0], facets):
        sub = ok if fv is None else ok[ok[facet] == fv]
        for i, name in enumerate(names):
            g = sub[sub[group] == name]
            if g.empty:
                continue
            stats = g.groupby(x)[y].agg(["mean", "std"]).reset_index()
            ax.errorbar(stats[x].astype(float) + (i - (len(names) - 1) / 2) * step, stats["mean"],
                        yerr=stats["std"].fillna(0), marker="o", capsize=3, label=str(name))
        ax.set_xlabel(axis_label(x))
        ax.set_ylabel(axis_label(y))
        ax.set_title(f"{facet.removeprefix('cfg.')}={fv}" if fv is not None else "", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    n = f"n={per_point.min()}" if per_point.min() == per_point.max() else f"n={per_point.min()}-{per_point.max()}"
    fig.suptitle(f"{title}\nerror bars: std over the {n} trials of each point (seeds x settings not on the axes)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def severity_frame(df: pd.DataFrame, group: str = config_column("loss.name")) -> pd.DataFrame:
    """Long table of corruption accuracy per severity (0 = clean probe accuracy)."""
    ok, seed = df[df["status"] == RunStatus.FINISHED], config_column("seed")
    rows = []
    for _, r in ok.iterrows():
        if "probe_top1" in r:
            rows.append({group: r[group], "severity": 0, "accuracy": r["probe_top1"], seed: r[seed]})
        for s in range(1, 6):
            col = corruption_acc_at(s)
            if col in r and np.isfinite(r[col]):
                rows.append({group: r[group], "severity": s, "accuracy": r[col], seed: r[seed]})
    return pd.DataFrame(rows)


def corruption_frame(df: pd.DataFrame, group: str) -> pd.DataFrame:
    """Long table of the finished trials' per-corruption scores (``per_corruption`` records): one row per
    (trial, corruption, severity) with the trial's ``group`` and clean ``probe_top1``."""
    ok = df[df["status"] == RunStatus.FINISHED]
    if ok.empty or "per_corruption" not in ok:
        return pd.DataFrame()
    rows = [{group: r[group], "probe_top1": r["probe_top1"], **score}
            for _, r in ok.iterrows() if isinstance(r["per_corruption"], (list, np.ndarray))
            for score in r["per_corruption"]]
    return pd.DataFrame(rows)


def normalized_mce_table(df: pd.DataFrame, group: str, baseline: str) -> pd.DataFrame:
    """ImageNet-C mCE and relative mCE of each group against ``baseline`` (100 = as the baseline),
    from the group means of the accuracy per (corruption, severity) and of clean ``probe_top1``."""
    from core.eval.robustness import normalized_corruption_errors

    long = corruption_frame(df, group)
    if long.empty or baseline not in set(long[group]):
        return pd.DataFrame()
    acc = long.groupby([group, "corruption", "severity"], sort=False)["accuracy"].mean()
    clean = df[df["status"] == RunStatus.FINISHED].groupby(group)["probe_top1"].mean()

    def pairs(name: str) -> dict[tuple[str, int], float]:
        return {(c, int(s)): float(a) for (c, s), a in acc.loc[name].items()}

    rows = []
    for name in sorted(set(long[group])):
        out = normalized_corruption_errors(pairs(name), float(clean[name]), pairs(baseline), float(clean[baseline]))
        rows.append({config_key(group): name, mce_vs(baseline): out["mce"],
                     relative_mce_vs(baseline): out["relative_mce"],
                     "corruption types": long[long[group] == name]["corruption"].nunique()})
    return pd.DataFrame(rows)


def plot_spectrum(df: pd.DataFrame, group: str, path: str | Path, title: str) -> Path | None:
    """Mean normalised singular value spectrum of the features per group (log scale): a steep
    drop is dimensional collapse."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[(df["status"] == RunStatus.FINISHED)] if "spectrum_features" in df else pd.DataFrame()
    ok = ok[ok["spectrum_features"].apply(lambda s: isinstance(s, (list, np.ndarray)) and len(s) > 0)] \
        if not ok.empty else ok
    if ok.empty:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, g in ok.groupby(group):
        spectra = [np.asarray(s, dtype=float) for s in g["spectrum_features"]]
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


def write_report(study: Study, df: pd.DataFrame, results: Path, wall_seconds: float,
                 storage: str | None = None) -> Path:
    """Markdown report with summary tables, verdicts, overhead and plots; returns its path."""
    finished = int((df["status"] == RunStatus.FINISHED).sum())
    lines = [f"# Study: {study.name}", "", study.question, "",
             f"{len(df)} trials: {finished} finished, {len(df) - finished} not "
             f"({', '.join(f'{k}: {v}' for k, v in df['status'].value_counts().items())}). "
             f"Table: `trials.parquet` (one row per trial, full config as `cfg.*` columns).", ""]
    lines += data_section(df)
    lines += ["## Summary (mean ± 95% CI half-width over trials)", "",
              to_markdown(summary_table(df, study.group, study.summary_metrics)), ""]
    lines += metrics_section([*study.summary_metrics, *(c.metric for c in study.claims)])
    lines += _claim_lines(study, df, results)
    if study.tables:
        lines += study.tables(df)
    lines += _overhead_lines(df, wall_seconds) + _unfinished_lines(df, study.group)
    if study.plots:
        pngs = [p for p in study.plots(df, results) if p]
        if pngs:
            lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs] + [""]
    storage = (storage or str(results)).rstrip("/")
    nodes = int(df["node_id"].dropna().nunique()) if "node_id" in df else 0
    where = f"{machine_count(df)} machine(s)" + (f", {nodes} Ray node(s)" if nodes else "")
    lines += ["## Logs", "", f"Trials ran on {where}. Tune logs and trial checkpoints: `{storage}/tune` "
              f"(TensorBoard: `tensorboard --logdir {storage}/tune`); per-run metrics under `{storage}/runs`.", ""]
    compute = float(df["trial_seconds"].sum()) if "trial_seconds" in df else float("nan")
    write_json_atomic(results / TIMING_FILE, {"trials": len(df), "finished": finished, "wall_seconds": wall_seconds,
                                              "summed_trial_seconds": compute, "machines": machine_count(df),
                                              "written": time.strftime("%Y-%m-%d"), "commit": source_commit()})
    return write_text_atomic(results / REPORT_FILE, "\n".join(lines))


def _overhead_lines(df: pd.DataFrame, wall_seconds: float) -> list[str]:
    timed = df["trial_seconds"].dropna() if "trial_seconds" in df else pd.Series(dtype=float)
    compute = float(timed.sum())
    return ["## Overhead", "", f"Study wall time {wall_seconds:.0f} s; " + (
        f"summed trial time {compute:.0f} s over the {len(timed)} trials that reported it (trials run concurrently, "
        f"so the ratio shows parallelism minus Ray overhead: {compute / max(wall_seconds, 1e-9):.2f}x)."
        if len(timed) else "no trial reported its time (none ran to its end)."), ""]


def _unfinished_lines(df: pd.DataFrame, group: str) -> list[str]:
    """Each trial that did not finish, with why: its error, its divergence, the scheduler, or an interruption."""
    failed = df[df["status"] != RunStatus.FINISHED]
    if failed.empty:
        return []
    lines = ["## Trials that did not finish", ""]
    for _, r in failed.iterrows():
        why = next((r.get(k) for k in ("diverged_at", "error") if isinstance(r.get(k), str)), "")
        if not why and r["status"] == RunStatus.STOPPED_EARLY:
            why = "(its last report was an epoch: the scheduler stopped it)"
        if r["status"] == RunStatus.INTERRUPTED:
            why = "(the study was interrupted before it ended: --resume finishes it)"
        lines.append(f"- {r.get(group, '?')} seed {r.get('cfg.seed', '?')}: {r['status']} {why}".rstrip())
    return lines + [""]


SATURATED = 97.0  # % clean probe accuracy above which clean accuracy cannot separate the losses


def data_section(df: pd.DataFrame) -> list[str]:
    """What the trials ran on and how they were scored, from the table itself (so a CIFAR report never
    carries the digits' text): the data, the test images, the corruption protocol and any warning it
    carries, and whether clean accuracy saturates."""
    ok = df[df["status"] == RunStatus.FINISHED]
    source, root, size, limit_col, test_limit = (config_column(k) for k in (
        "data.source", "data.root", "data.image_size", "data.train_limit", "eval.test_limit"))
    if ok.empty or source not in ok:
        return []
    lines = ["## Data and evaluation", ""]
    for _, r in ok.drop_duplicates([source, root, size, limit_col]).iterrows():
        limit = r[limit_col]
        train = f"{int(limit):,} training images (data.train_limit)" if pd.notna(limit) else "every training image"
        where = f" at `{r[root]}`" if isinstance(r[root], str) else ""
        lines.append(f"- Data: `{r[source]}`{where}, {int(r[size])} px, {train}.")
    if "test_images" in ok:
        counts = sorted({int(n) for n in ok["test_images"].dropna()})
        limit = ok[test_limit].dropna() if test_limit in ok else pd.Series(dtype=float)
        how = (f" (eval.test_limit={int(limit.iloc[0]):,}: a class-stratified subset, the same images for every "
               f"trial)" if len(limit) else " (the whole test split)")
        lines.append(f"- Scored on {', '.join(f'{n:,}' for n in counts)} test images{how}.")
    if "corruption_protocol" in ok:
        for text in ok["corruption_protocol"].dropna().unique():
            lines.append(f"- Corruptions: {text}.")
    if "probe_top1" in ok and ok["probe_top1"].notna().any():
        lo, med, hi = ok["probe_top1"].min(), ok["probe_top1"].median(), ok["probe_top1"].max()
        note = (f"clean accuracy saturates (median at or above {SATURATED:.0f}%): it cannot separate the losses, so "
                f"the corrupted and label-scarce metrics are where they can differ" if med >= SATURATED else
                "clean accuracy is far from saturation, so it can separate the losses")
        lines.append(f"- Clean linear-probe accuracy {lo:.1f}-{hi:.1f}% (median {med:.1f}%): {note}.")
    return lines + [""]


def _claim_lines(study: Study, df: pd.DataFrame, results: Path) -> list[str]:
    """The claims' verdicts (Holm-adjusted as one family, with their power), also in ``claims.parquet``."""
    verdicts = adjust_family([r for c in study.claims for r in c.evaluate(df)])
    if not verdicts:
        return []
    write_table(pd.DataFrame(verdicts), results / CLAIMS_FILE)
    tested = sum(np.isfinite(r["p_holm"]) for r in verdicts)
    return ["## Claims", "", FAMILY_NOTE.format(m=tested), ""] + [verdict_line(r) for r in verdicts] + [""]


def metrics_section(names: Sequence[str]) -> list[str]:
    """The glossary entries of the metrics a report shows: meaning, unit, which side is better."""
    rows = []
    for name in dict.fromkeys(names):
        m = metric(name)
        if m is not None:
            rows.append(f"| `{name}` | {m.meaning} | {m.unit} | {m.better or '-'} |")
    if not rows:
        return []
    return ["## Metrics", "", "From the glossary (`python -m core.metrics` lists every metric).", "",
            "| metric | meaning | unit | better |", "|---|---|---|---|", *rows, ""]


def source_commit() -> str | None:
    """The platform's git commit the study ran at (``+changes`` when tracked files differ from it); None
    outside a git checkout (an installed copy)."""
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def machine_count(df: pd.DataFrame) -> int:
    """Machines the trials ran on: distinct host names (a Ray node id is per Ray session, so a study
    resumed on the same machine would count twice)."""
    for col in ("machine", "node_id"):
        if col in df and df[col].notna().any():
            return int(df[col].dropna().nunique())
    return 1
