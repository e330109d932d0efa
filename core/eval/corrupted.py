"""Corrupted evaluation sets and what the frozen encoder does on them.

Corrupted versions of the evaluation images are either read from the released sets
(``eval.corruption_root``: an ImageNet-C folder ``root/<corruption>/<severity>/<class>/*``, or CIFAR-10-C /
CIFAR-100-C's ``root/<corruption>.npy`` and ``root/labels.npy``) or made batch by batch from each clean
batch by the chosen suite (``core.registry.CORRUPTION_SUITES``: ImageNet-C's 15 types through
``imagecorruptions`` in ``imagenet_c``, CIFAR-10-C's with make_cifar_c.py's parameters in ``cifar_c``, both
cached; the fast suite in torch, in ``robustness``). Per corrupted set only two numbers per image are kept
(confidence, correct).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow.fs as pafs
import ray
import torch
from torch import Tensor, nn

from core.config import RunConfig
from core.data.arrays import resize_uint8
from core.data.bad_images import BadImages
from core.data.seeded_draws import stratified_positions
from core.data.sources import eval_folder_dataset, load_source
from core.errors import EvaluationError
from core.eval import cifar_c, imagenet_c  # noqa: F401  (register the cifar_c and imagenet_c suites)
from core.eval.calibration import ece_from_confidence
from core.eval.chunk import eval_chunk
from core.eval.features import Features, extract, iter_numpy
from core.eval.robustness import mean_corruption_error, prototype_accuracy, reference_mce
from core.eval.uncertainty import centroid_distance, misclassification_auroc, severity_correlation
from core.fs import filesystem, join
from core.losses import head_of, posterior_log_det
from core.metrics import corruption_acc_at, ece_at, fewlabel_acc, fewlabel_std, logdet_at
from core.models import build_model
from core.progress import Progress
from core.registry import CORRUPTION_SUITES
from core.results import CorruptionScore, Evaluation

CorruptedBatches = Iterator[tuple[tuple[str, int], dict]]  # ((corruption, severity), batch)


def check_corruptions(cfg: RunConfig, test_size: int | None) -> None:
    """Before any training: an ``eval.corruption_root`` holds every ``<corruption>/<severity>`` folder (or
    every ``<corruption>.npy`` of the released CIFAR-10-C layout) the config asks for, and a suite made image
    by image (ImageNet-C: ~75 ms per image for all 15 types on one core) is not generated for a test set
    above its limit."""
    if not cfg.eval.robustness:
        return
    root = cfg.eval.corruption_root
    limit = CORRUPTION_SUITES.get(cfg.eval.corruption_suite).generated_limit
    if root and released_arrays(root):
        check_released_arrays(root, cfg.eval.corruption_names())
    elif root:
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


def prepare_corruptions(cfg: RunConfig, shared: str | None = None, source=None) -> None:
    """Before training (a run) or before a study's trials start: a suite that is cached (ImageNet-C,
    CIFAR-10-C) corrupts the evaluation split once, batch by batch as the evaluation stage reads it, in
    parallel Ray tasks, with progress lines; the evaluation reads the cache (``shared``: a path or URI every
    node reaches, where it is also kept for trials on other nodes)."""
    if not (cfg.eval.robustness and CORRUPTION_SUITES.get(cfg.eval.corruption_suite).cached) \
            or cfg.eval.corruption_root:
        return
    source = source or load_source(cfg.data, cfg.eval.test_limit)
    check_corruptions(cfg, source.test_size)
    model = build_model(cfg, source.num_classes, head_of(cfg))
    chunk = eval_chunk(model, cfg.data.image_size, cfg.eval.batch_memory_mb)
    had_ray = ray.is_initialized()
    try:
        with corruption_progress(cfg, source.test_size, chunk, "building") as bar:
            for _ in generated_corruptions(iter_numpy(source.test, chunk), cfg, parallel=True, bar=bar, shared=shared):
                pass  # each batch's corrupted sets are computed and cached as the generator reaches them
    finally:
        if not had_ray and ray.is_initialized():  # started for the build (a run that needs no Ray): ended now
            ray.shutdown()


def corruption_progress(cfg: RunConfig, test_size: int | None, chunk: int, what: str, enabled: bool = True) -> Progress:
    """Progress over every corrupted set of every evaluation chunk (the unit: one set of one chunk)."""
    suite = CORRUPTION_SUITES.get(cfg.eval.corruption_suite)
    names = cfg.eval.corruption_names()
    chunks = -(-(test_size or 0) // chunk) if test_size else 0
    return Progress(chunks * len(names) * 5, f"{what} {suite.title or suite.name}: {len(names)} types x 5 "
                    f"severities of {test_size or '?':,} test images in {chunks} chunk(s)", unit="set-chunk",
                    enabled=enabled)


def corrupted_sets(cfg: RunConfig, test: Any, chunk: int = 512, shared: str | None = None) -> CorruptedBatches:
    """The corrupted versions of the test split the config asks for: read from ``eval.corruption_root``
    or generated from the clean batches (from the caches, this node's and ``shared``, when there)."""
    root = cfg.eval.corruption_root
    if root and released_arrays(root):
        return array_corruptions(cfg, chunk)
    if root:
        return folder_corruptions(cfg, lambda path: eval_folder_dataset(path, cfg.data.image_size))
    return generated_corruptions(iter_numpy(test, chunk), cfg, shared=shared)


def released_arrays(root: str) -> bool:
    """Whether ``root`` holds the released CIFAR-10-C / CIFAR-100-C layout (``labels.npy`` beside
    ``<corruption>.npy``) rather than an ImageNet-C folder."""
    fs, base = filesystem(root)
    return fs.get_file_info(join(base, "labels.npy")).type == pafs.FileType.File


def _load_npy(root: str, name: str, mmap: bool = True) -> np.ndarray:
    fs, base = filesystem(root)
    path = join(base, name)
    if isinstance(fs, pafs.LocalFileSystem):
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    with fs.open_input_file(path) as fh:  # object storage: read whole (150 MB for one CIFAR-10-C type)
        return np.load(fh, allow_pickle=False)


def check_released_arrays(root: str, names: tuple[str, ...]) -> None:
    """The released CIFAR-C layout holds ``labels.npy`` (5 severities of the test split, in order) and, for
    every type asked for, ``<corruption>.npy`` of one uint8 ``[H, W, 3]`` image per label."""
    try:
        labels = _load_npy(root, "labels.npy")
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"eval.corruption_root={root!r}: labels.npy is not a readable .npy ({exc})") from None
    if labels.ndim != 1 or len(labels) == 0 or len(labels) % 5:
        raise EvaluationError(f"eval.corruption_root={root!r}: labels.npy holds {labels.shape}; expected one label per "
                              f"image, 5 severities of the test split in order (50,000 for CIFAR-10-C)")
    fs, base = filesystem(root)
    missing = [n for n in names if fs.get_file_info(join(base, f"{n}.npy")).type != pafs.FileType.File]
    if missing:
        raise EvaluationError(f"eval.corruption_root={root!r} lacks {len(missing)} of {len(names)} files (e.g. "
                              f"{missing[0]}.npy; expected root/<corruption>.npy beside labels.npy)")
    if isinstance(fs, pafs.LocalFileSystem):  # the headers only (memory-mapped)
        for name in names:
            shape, dtype = (a := _load_npy(root, f"{name}.npy")).shape, a.dtype
            if dtype != np.uint8 or len(shape) != 4 or shape[0] != len(labels) or shape[-1] != 3:
                raise EvaluationError(f"eval.corruption_root={root!r}: {name}.npy is {dtype} {shape}; expected uint8 "
                                      f"[{len(labels)}, H, W, 3] (one image per label of labels.npy)")


def array_corruptions(cfg: RunConfig, chunk: int = 512) -> CorruptedBatches:
    """Batches of the released CIFAR-C arrays: severity s is the s-th fifth of each ``<corruption>.npy``;
    with ``eval.test_limit`` the same stratified subset of each fifth (by its labels and positions, so the
    subset of a clean test split read in CIFAR's order)."""
    root = cfg.eval.corruption_root
    labels = _load_npy(root, "labels.npy").astype(np.int64)
    n = len(labels) // 5
    for name in cfg.eval.corruption_names():
        images = _load_npy(root, f"{name}.npy")
        for sev in range(1, 6):
            rows = np.arange((sev - 1) * n, sev * n)
            keep = rows if not cfg.eval.test_limit or cfg.eval.test_limit >= n else \
                rows[stratified_positions(labels[rows], np.arange(n), cfg.eval.test_limit, seed=0)]
            for i in range(0, len(keep), chunk):
                take = keep[i: i + chunk]
                yield (name, sev), {"image": resize_uint8(np.asarray(images[take]), cfg.data.image_size),
                                    "label": labels[take], "index": take - (sev - 1) * n}


def generated_corruptions(batches: Iterator[dict], cfg: RunConfig, parallel: bool = False,
                          bar=None, shared: str | None = None) -> CorruptedBatches:
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
        for key, imgs in suite.make(images, names, np.asarray(batch["index"]), parallel, bar, shared).items():
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
                       corrupted: Callable[[], CorruptedBatches], device: torch.device, result: Evaluation,
                       chunk: int = 512, verbose: bool = False) -> None:
    """Probe accuracy and calibration on corrupted test images (5 severities); uncertainty scores
    (centroid distance; VCL's posterior log-det) against errors and severity; label-scarce probes.
    ``verbose``: progress lines over the corrupted sets (a CIFAR-10-C pass is 750,000 images)."""
    variational = te.logvar is not None
    scores = _Scores(tr, predict)
    scores.add(te.feats, te.labels, 0, te.logvar)
    with corruption_progress(cfg, len(te.labels), chunk, "scoring", enabled=verbose) as bar:
        for (name, sev), batch in corrupted():
            f = extract(model, [batch], device, logvar=variational)
            scores.add(f.feats, f.labels, sev, f.logvar if variational else None, name)
            bar.update()
    _corruption_scores(scores, result, cfg)
    _uncertainty_scores(scores, result)
    for k in cfg.eval.label_budgets:
        result.scalars[fewlabel_acc(k)], result.scalars[fewlabel_std(k)] = prototype_accuracy(
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
        out[corruption_acc_at(sev)] = float(np.mean([a for (n, s), a in acc_by.items() if s == sev]))
        out[ece_at(sev)] = float(np.mean([e for (n, s), e in ece_by.items() if s == sev]))
    out["corruption_acc"] = float(np.mean(list(acc_by.values())))
    out["corruption_error"] = mean_corruption_error(acc_by)
    if cfg.eval.reference_errors:
        out["imagenet_c_mce"] = reference_mce(acc_by, cfg.eval.reference_errors)
    first = next(iter(scores.per_set.values()), ([], []))[1]
    out["corruption_protocol"] = corruption_protocol(cfg, len(acc_by), int(sum(len(c) for c in first)))


def corruption_protocol(cfg: RunConfig, sets: int, images: int) -> str:
    """How the corruption metrics were made, for the result row and the report: the suite (or the released
    files), its sets, the images per set, and a warning when the images are far from the suite's size."""
    suite = CORRUPTION_SUITES.get(cfg.eval.corruption_suite)
    where = (f"released files in {cfg.eval.corruption_root}" if cfg.eval.corruption_root
             else f"{suite.name}: {suite.title or suite.name}")
    text = (f"{where}; {sets} sets ({sets // 5} types x 5 severities) of {images:,} images each; corruption_acc "
            f"and corruption_error are the mean over the sets, unnormalised")
    note = suite.size_note(cfg.data.image_size) if not cfg.eval.corruption_root else ""
    return f"{text}; **size mismatch**: {note}" if note else text


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
                out[logdet_at(sev)] = float(v[severity == sev].mean())
            kinds = np.asarray(scores.kinds)
            out["unc_spearman_logdet_vs_centroid"] = severity_correlation(v, torch.cat(scores.dist))
            clean = kinds == "clean"
            for kind in sorted(set(kinds) - {"clean"}):  # clean images as severity 0 of each type
                keep = torch.from_numpy(clean | (kinds == kind))
                result.logdet_by_corruption[kind] = severity_correlation(v[keep], severity[keep])
