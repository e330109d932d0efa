"""Every metric the platform reports, in one table, and every name made from it: its meaning, unit,
direction and where it comes from (``python -m core.metrics`` prints the glossary).

The report, ``--help``, the claims and the searches read directions from here (``better``), so a
claim or an objective cannot disagree with the metric it names. Families of metrics with a number in
their name (``corruption_acc_s3``, ``fewlabel_5_acc``) are made by the builders below, which producers
(the evaluation) and readers (the report) both call, and matched back by pattern. The run's headline
metrics and a study table's config columns (``cfg.section.key``) are named here too. Names used by earlier
versions are mapped to today's (:data:`RENAMED`), so old result tables stay readable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from core.config import flatten
from core.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    name: str
    meaning: str
    unit: str  # "%", "nats", "ratio", "count", "s", "-" (dimensionless)
    better: str  # "higher", "lower", or "" for diagnostics with no better side
    source: str  # what computes it

    @property
    def mode(self) -> str:
        """Tune/Optuna's direction: "max" or "min"."""
        if not self.better:
            raise ValueError(f"metric {self.name!r} has no better side ({self.meaning}); it cannot be optimised")
        return "max" if self.better == "higher" else "min"


_PROBE = "evaluation: linear probe on frozen features (core/eval/probe.py)"
_KNN = "evaluation: weighted kNN on frozen features (core/eval/probe.py)"
_CORR = "evaluation: probe on corrupted test sets (core/eval/corrupted.py)"
_UNC = "evaluation: uncertainty scores (core/eval/uncertainty.py)"
_GEOM = "evaluation: embedding geometry (core/eval/geometry.py)"
_FEW = "evaluation: few-shot and label-scarce probes (core/eval/fewshot.py, robustness.py)"
_TRAIN = "training epoch (core/train/step.py)"
_STUDY = "study report (core/study/report.py)"

METRICS: tuple[Metric, ...] = (
    Metric("knn_top1", "weighted-kNN top-1 accuracy on the test split (per epoch: on fixed 2,000-image subsets)",
           "%", "higher", _KNN),
    Metric("knn_top5", "weighted-kNN top-5 accuracy", "%", "higher", _KNN),
    Metric("probe_top1", "linear-probe top-1 accuracy on the clean test split (final probe epoch)", "%", "higher",
           _PROBE),
    Metric("probe_top5", "linear-probe top-5 accuracy", "%", "higher", _PROBE),
    Metric("probe_ece", "expected calibration error of the probe, 15 equal-width bins, in percent", "%", "lower",
           _PROBE),
    Metric("probe_nll", "mean negative log-likelihood of the true class under the probe", "nats", "lower", _PROBE),
    Metric("corruption_acc", "probe accuracy averaged over every corrupted set (types x 5 severities)", "%", "higher",
           _CORR),
    Metric("corruption_error", "a run's mean corruption error: 100 - corruption_acc, unnormalised (not ImageNet-C's "
           "mCE)", "%", "lower", _CORR),
    Metric("imagenet_c_mce", "the ImageNet-C paper's mCE: per-type error summed over severities, divided by the "
           "reference model's (eval.reference_errors, e.g. AlexNet's published errors), averaged over types; 100 = "
           "as the reference", "%", "lower", _CORR),
    MCE_VS := Metric("mce_vs_<baseline>", "a study's mCE normalised by its baseline group's errors (100 = as the "
                     "baseline; SupCon's Table 6 protocol)", "%", "lower", _STUDY),
    RELATIVE_MCE_VS := Metric("relative_mce_vs_<baseline>", "as mce_vs_<baseline> on errors minus the clean error",
                              "%", "lower", _STUDY),
    Metric("bad_eval_images", "evaluation images that could not be decoded (skipped, named)", "count", "lower",
           "evaluation"),
    Metric("test_images", "test images every clean metric was scored on (eval.test_limit: a stratified subset); each "
           "corrupted set holds as many", "count", "", "evaluation"),
    Metric("effective_rank_features", "exp(entropy of the normalised singular values) of the test features: 1 = "
           "collapsed, D = isotropic", "-", "higher", _GEOM),
    Metric("effective_rank_embedding", "effective rank of the head's embedding (VCL's dimensional-collapse claim)",
           "-", "higher", _GEOM),
    Metric("alignment", "E||z - z+||^2 over two augmented views of each test image (Wang & Isola)", "-", "lower",
           _GEOM),
    Metric("uniformity", "log E exp(-2||z - z'||^2) over pairs of test embeddings (Wang & Isola)", "-", "lower",
           _GEOM),
    Metric("cluster_ari", "adjusted Rand index of a Ward clustering of the features cut at the class count", "-",
           "higher", _GEOM),
    Metric("unc_auroc_centroid", "AUROC of the distance to the nearest class centroid for flagging misclassified "
           "inputs (clean + corrupted)", "-", "higher", _UNC),
    Metric("unc_auroc_logdet", "AUROC of VCL's posterior log-det for flagging misclassified inputs", "-", "higher",
           _UNC),
    Metric("unc_spearman_centroid", "Spearman correlation of the centroid distance with corruption severity (0-5)",
           "-", "higher", _UNC),
    Metric("unc_spearman_logdet", "Spearman correlation of the posterior log-det with corruption severity", "-",
           "higher", _UNC),
    Metric("unc_spearman_logdet_vs_centroid", "Spearman correlation of the log-det with the centroid distance", "-",
           "", _UNC),
    Metric("loss", "mean training loss over the epoch's steps", "-", "", _TRAIN),
    Metric("lr", "learning rate at the epoch's last step", "-", "", _TRAIN),
    Metric("views_per_s", "augmented views trained per second over the epoch (all workers)", "1/s", "higher", _TRAIN),
    Metric("classes_per_batch", "mean distinct labels per training batch (class mixing)", "count", "higher", _TRAIN),
    Metric("grad_norm", "mean gradient norm over the epoch's steps", "-", "", _TRAIN),
    Metric("bad_images", "training images of the epoch that could not be decoded", "count", "lower", _TRAIN),
    Metric("data_wait_seconds", "time the epoch waited for its next batch", "s", "lower", _TRAIN),
    Metric("epoch_seconds", "wall time of the epoch's steps", "s", "lower", _TRAIN),
    Metric("logvar_mean", "mean log sigma^2 of a variational head over inputs and dimensions", "nats", "", _TRAIN),
    Metric("logdet_spread", "std across inputs of the posterior log-det", "nats", "", _TRAIN),
    Metric("mu_norm", "mean ||mu|| of a variational head", "-", "", _TRAIN),
    Metric("logvar_grad_norm", "gradient norm of the log-variance layer", "-", "", _TRAIN),
    Metric("trial_seconds", "wall time of a study trial (training + evaluation)", "s", "lower", "study runner"),
)
PATTERNS: tuple[tuple[str, Metric], ...] = (
    (r"corruption_acc_s[1-5]", Metric("corruption_acc_s<k>", "probe accuracy averaged over the corruption types at "
                                      "severity k", "%", "higher", _CORR)),
    (r"ece_s[1-5]", Metric("ece_s<k>", "probe ECE averaged over the corruption types at severity k", "%", "lower",
                           _CORR)),
    (r"logdet_s[0-5]", Metric("logdet_s<k>", "mean posterior log-det at severity k (0 = clean)", "nats", "", _UNC)),
    (r"fewlabel_\d+_acc", Metric("fewlabel_<k>_acc", "nearest-prototype accuracy from k labels per class (mean of 5 "
                                 "draws)", "%", "higher", _FEW)),
    (r"fewlabel_\d+_std", Metric("fewlabel_<k>_std", "std of fewlabel_<k>_acc over the draws", "%", "", _FEW)),
    (r"fewshot_\d+w\d+s_acc", Metric("fewshot_<n>w<k>s_acc", "n-way k-shot episode accuracy (nearest prototype, "
                                     "cosine)", "%", "higher", _FEW)),
    (r"fewshot_\d+w\d+s_ci95", Metric("fewshot_<n>w<k>s_ci95", "95% interval half-width of the episode accuracy",
                                      "%", "", _FEW)),
    (r"mce_vs_.+", MCE_VS),
    (r"relative_mce_vs_.+", RELATIVE_MCE_VS),
)
RENAMED = {"mce": "corruption_error"}  # names of earlier versions -> today's
GLOSSARY_COMMAND = "python -m core.metrics"
# what a run's summary leads with; a run whose headline is not finite failed
HEADLINE = ("knn_top1", "probe_top1", "probe_ece", "probe_nll", "corruption_acc", "corruption_error")


def corruption_acc_at(severity: int) -> str:
    return f"corruption_acc_s{severity}"


def ece_at(severity: int) -> str:
    return f"ece_s{severity}"


def logdet_at(severity: int) -> str:
    return f"logdet_s{severity}"


def fewlabel_acc(labels_per_class: int) -> str:
    return f"fewlabel_{labels_per_class}_acc"


def fewlabel_std(labels_per_class: int) -> str:
    return f"fewlabel_{labels_per_class}_std"


def fewshot_acc(n_way: int, shots: int) -> str:
    return f"fewshot_{n_way}w{shots}s_acc"


def fewshot_ci95(n_way: int, shots: int) -> str:
    return f"fewshot_{n_way}w{shots}s_ci95"


def mce_vs(baseline: str) -> str:
    return f"mce_vs_{baseline}"


def relative_mce_vs(baseline: str) -> str:
    return f"relative_mce_vs_{baseline}"


# A study table's config columns: the resolved config flattened as ``cfg.section.key``.
CONFIG_PREFIX = "cfg."


def config_column(key: str) -> str:
    """The study-table column of the config field ``key`` (``loss.name`` -> ``cfg.loss.name``)."""
    return CONFIG_PREFIX + key


def config_key(column: str) -> str:
    """The config field a column holds (``cfg.loss.name`` -> ``loss.name``); other columns as they are."""
    return column.removeprefix(CONFIG_PREFIX)


def config_columns(cfg: Any) -> dict[str, Any]:
    """A run config's every field as ``cfg.section.key`` columns."""
    return flatten(CONFIG_PREFIX, cfg.to_dict())
_BY_NAME = {m.name: m for m in METRICS}


def metric(name: str) -> Metric | None:
    """The glossary entry of a metric name (today's or a renamed one), or None."""
    name = RENAMED.get(name, name)
    if name in _BY_NAME:
        return _BY_NAME[name]
    return next((m for pattern, m in PATTERNS if re.fullmatch(pattern, name)), None)


def known(name: str) -> bool:
    return metric(name) is not None


def require(names, what: str) -> None:
    """Refuse names the glossary does not know, listing them (``what`` says where they came from)."""
    unknown = [n for n in names if not known(n)]
    if unknown:
        raise ConfigError(f"{what}: unknown metric(s) {unknown} (the glossary: {GLOSSARY_COMMAND})")


def with_current_names(df: pd.DataFrame) -> pd.DataFrame:
    """An older result table with today's metric names (``mce`` -> ``corruption_error``)."""
    return df.rename(columns={old: new for old, new in RENAMED.items() if old in df and new not in df})


def glossary_markdown() -> str:
    rows = ["| metric | meaning | unit | better | from |", "|---|---|---|---|---|"]
    rows += [f"| `{m.name}` | {m.meaning} | {m.unit} | {m.better or '-'} | {m.source} |"
             for m in (*METRICS, *(m for _, m in PATTERNS if m not in METRICS))]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(glossary_markdown(), end="")
