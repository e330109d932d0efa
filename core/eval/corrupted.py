"""Corrupted evaluation sets and what the frozen encoder does on them.

Corrupted versions of the evaluation images are either read from an on-disk ImageNet-C style folder
(``eval.corruption_root``: ``root/<corruption>/<severity>/<class>/*``) or made batch by batch from
each clean batch by the chosen suite (``core.registry.CORRUPTION_SUITES``: the 15 ImageNet-C types
through ``imagecorruptions``, cached, in ``imagenet_c``; the fast suite in torch, in ``robustness``).
Per corrupted set only two numbers per image are kept (confidence, correct).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow.fs as pafs
import torch
from torch import Tensor, nn

from core.config import RunConfig
from core.data.bad_images import BadImages
from core.data.budget import eval_chunk
from core.data.sources import eval_folder_dataset, load_source
from core.errors import EvaluationError
from core.eval import imagenet_c  # noqa: F401  (registers the imagenet_c suite)
from core.eval.calibration import ece_from_confidence
from core.eval.features import Features, extract, iter_numpy
from core.eval.robustness import mean_corruption_error, prototype_accuracy, reference_mce
from core.eval.uncertainty import centroid_distance, misclassification_auroc, severity_correlation
from core.fs import filesystem, join
from core.losses import posterior_log_det
from core.models import build_model
from core.registry import CORRUPTION_SUITES
from core.results import CorruptionScore, Evaluation

CorruptedBatches = Iterator[tuple[tuple[str, int], dict]]  # ((corruption, severity), batch)


def check_corruptions(cfg: RunConfig, test_size: int | None) -> None:
    """Before any training: an ``eval.corruption_root`` holds every ``<corruption>/<severity>`` folder the
    config asks for, and a suite made image by image (ImageNet-C: ~75 ms per image for all 15 types on
    one core) is not generated for a test set above its limit."""
    if not cfg.eval.robustness:
        return
    root = cfg.eval.corruption_root
    limit = CORRUPTION_SUITES.get(cfg.eval.corruption_suite).generated_limit
    if root:
        fs, base = filesystem(root)
        wanted = [f"{n}/{s}" for n in cfg.eval.corruption_names() for s in range(1, 6)]
        infos = fs.get_file_info([join(base, w) for w in wanted])
        missing = [w for w, info in zip(wanted, infos) if info.type != pafs.FileType.Directory]
        if missing:
            raise EvaluationError(f"eval.corruption_root={root!r} lacks {len(missing)} of {len(wanted)} folders "
                                  f"(e.g. {missing[:3]}; expected root/<corruption>/<severity>/<class>/*)")
    elif limit is not None and test_size and test_size > limit:
        raise EvaluationError(f"eval.robustness would generate the {cfg.eval.corruption_suite} corruptions for "
                              f"{test_size:,} test images one by one (over {limit:,}); point eval.corruption_root "
                              f"at the released ImageNet-C folder, or pick eval.corruptions / "
                              f"eval.corruption_suite=fast")


def prepare_corruptions(cfg: RunConfig, shared: str | None = None) -> None:
    """Before a study's trials start: a suite that is cached (ImageNet-C) corrupts the evaluation split
    once, batch by batch as the evaluation stage reads it, in parallel Ray tasks; the trials read the cache
    (``shared``: a path or URI every node reaches, where it is also kept for trials on other nodes)."""
    if not (cfg.eval.robustness and CORRUPTION_SUITES.get(cfg.eval.corruption_suite).cached) \
            or cfg.eval.corruption_root:
        return
    source = load_source(cfg.data)
    check_corruptions(cfg, source.test_size)
    chunk = eval_chunk(build_model(cfg, source.num_classes), cfg.data.image_size, cfg.eval.batch_memory_mb)
    for _ in generated_corruptions(iter_numpy(source.test, chunk), cfg, parallel=True, progress=True, shared=shared):
        pass  # each batch's corrupted sets are computed and cached as the generator reaches them


def corrupted_sets(cfg: RunConfig, test: Any, chunk: int = 512, shared: str | None = None) -> CorruptedBatches:
    """The corrupted versions of the test split the config asks for: read from ``eval.corruption_root``
    or generated from the clean batches (from the caches, this node's and ``shared``, when there)."""
    if cfg.eval.corruption_root:
        return folder_corruptions(cfg, lambda path: eval_folder_dataset(path, cfg.data.image_size))
    return generated_corruptions(iter_numpy(test, chunk), cfg, shared=shared)


def generated_corruptions(batches: Iterator[dict], cfg: RunConfig, parallel: bool = False,
                          progress: bool = False, shared: str | None = None) -> CorruptedBatches:
    """Every corrupted version of every clean batch, made batch by batch by the config's suite (in
    parallel Ray tasks with ``parallel`` where the suite can). The corruption seed is fixed, so every run
    of a study is scored on the same corrupted images."""
    names, suite = cfg.eval.corruption_names(), CORRUPTION_SUITES.get(cfg.eval.corruption_suite)
    bad = BadImages(warn=False)  # the clean pass already warned about each undecodable image
    for batch in batches:
        batch = bad.keep(batch)
        if len(batch["label"]) == 0:
            continue
        images = np.require(batch["image"], requirements="W")
        for key, imgs in suite.make(images, names, np.asarray(batch["index"]), parallel, progress, shared).items():
            yield key, {"image": imgs, "label": batch["label"], "index": batch["index"]}


def folder_corruptions(cfg: RunConfig, load: Callable[[str], Any]) -> CorruptedBatches:
    """Batches from an on-disk ImageNet-C layout ``eval.corruption_root/<corruption>/<severity>/<class>/*``
    (``load(path)`` -> dataset of eval views)."""
    root = cfg.eval.corruption_root
    for name in cfg.eval.corruption_names():
        for sev in range(1, 6):
            path = os.path.join(root, name, str(sev))
            if not os.path.isdir(path):
                raise EvaluationError(f"eval.corruption_root: missing {path!r} "
                                      f"(expected root/<corruption>/<severity>/<class>/*)")
            for batch in iter_numpy(load(path)):
                yield (name, sev), batch


@dataclass
class _Scores:
    """Per-image numbers of the clean and corrupted test images, and per-set confidences."""

    train: Features
    predict: Callable[[Tensor], Tensor]
    per_set: dict = field(default_factory=dict)  # (corruption, severity) -> ([conf], [correct])
    severity: list = field(default_factory=list)
    wrong: list = field(default_factory=list)
    dist: list = field(default_factory=list)
    logdet: list = field(default_factory=list)
    kinds: list = field(default_factory=list)

    def add(self, feats: Tensor, labels: Tensor, sev: int, logvar: Tensor | None, kind: str = "clean") -> None:
        conf, pred = self.predict(feats).max(1)
        self.severity.append(torch.full((len(labels),), sev))
        self.kinds.extend([kind] * len(labels))
        self.wrong.append(pred != labels)
        self.dist.append(centroid_distance(self.train.feats, self.train.labels, feats))
        if logvar is not None:
            self.logdet.append(posterior_log_det(logvar).float())
        if kind != "clean":
            confs, corrects = self.per_set.setdefault((kind, sev), ([], []))
            confs.append(conf)
            corrects.append(pred == labels)


def robustness_metrics(model: nn.Module, cfg: RunConfig, tr: Features, te: Features, predict: Callable,
                       corrupted: Callable[[], CorruptedBatches], device: torch.device, result: Evaluation) -> None:
    """Probe accuracy and calibration on corrupted test images (5 severities); uncertainty scores
    (centroid distance; VCL's posterior log-det) against errors and severity; label-scarce probes."""
    variational = te.logvar is not None
    scores = _Scores(tr, predict)
    scores.add(te.feats, te.labels, 0, te.logvar)
    for (name, sev), batch in corrupted():
        f = extract(model, [batch], device, logvar=variational)
        scores.add(f.feats, f.labels, sev, f.logvar if variational else None, name)
    _corruption_scores(scores, result, cfg)
    _uncertainty_scores(scores, result)
    for k in cfg.eval.label_budgets:
        result.scalars[f"fewlabel_{k}_acc"], result.scalars[f"fewlabel_{k}_std"] = prototype_accuracy(
            tr.feats, tr.labels, te.feats, te.labels, k, seed=cfg.seed)


def _corruption_scores(scores: _Scores, result: Evaluation, cfg: RunConfig) -> None:
    """Accuracy and ECE per corrupted set and per severity, their means and the corruption error."""
    acc_by: dict[tuple[str, int], float] = {}
    ece_by: dict[tuple[str, int], float] = {}
    for (name, sev), (confs, corrects) in scores.per_set.items():
        correct = torch.cat(corrects)
        acc_by[(name, sev)] = 100.0 * correct.float().mean().item()
        ece_by[(name, sev)] = ece_from_confidence(torch.cat(confs), correct)
        result.corruptions.append(CorruptionScore(name, sev, acc_by[(name, sev)], ece_by[(name, sev)]))
    out = result.scalars
    for sev in range(1, 6):
        out[f"corruption_acc_s{sev}"] = float(np.mean([a for (n, s), a in acc_by.items() if s == sev]))
        out[f"ece_s{sev}"] = float(np.mean([e for (n, s), e in ece_by.items() if s == sev]))
    out["corruption_acc"] = float(np.mean(list(acc_by.values())))
    out["corruption_error"] = mean_corruption_error(acc_by)
    if cfg.eval.reference_errors:
        out["imagenet_c_mce"] = reference_mce(acc_by, cfg.eval.reference_errors)


def _uncertainty_scores(scores: _Scores, result: Evaluation) -> None:
    """AUROC for flagging errors and rank correlation with severity of the centroid distance and (VCL)
    the posterior log-det; where the log-det points, per severity and per corruption type."""
    severity, wrong = torch.cat(scores.severity), torch.cat(scores.wrong)
    out = result.scalars
    for name, values in (("centroid", scores.dist), ("logdet", scores.logdet)):
        if not values:
            continue
        v = torch.cat(values)
        out[f"unc_auroc_{name}"] = misclassification_auroc(v, wrong)
        out[f"unc_spearman_{name}"] = severity_correlation(v, severity)
        if name == "logdet":  # mean posterior log-det per severity (0 = clean)
            for sev in range(6):
                out[f"logdet_s{sev}"] = float(v[severity == sev].mean())
            kinds = np.asarray(scores.kinds)
            out["unc_spearman_logdet_vs_centroid"] = severity_correlation(v, torch.cat(scores.dist))
            clean = kinds == "clean"
            for kind in sorted(set(kinds) - {"clean"}):  # clean images as severity 0 of each type
                keep = torch.from_numpy(clean | (kinds == kind))
                result.logdet_by_corruption[kind] = severity_correlation(v[keep], severity[keep])
