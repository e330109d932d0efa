"""The evaluation stage: score a frozen encoder, streaming the images.

Images arrive batch by batch from a dataset iterator (a Ray Dataset or a Train ``DataIterator``);
only features and a few numbers per image are kept, never the images, so memory does not grow
with the data set's pixels. The result is an :class:`core.results.Evaluation`: the scalar metrics
row, arrays (the feature spectrum) and per-corruption scores (``core.eval.corrupted``).
``python -m core.eval RUN_DIR`` re-scores a saved run (``core.eval.rescore``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from core.config import RunConfig
from core.data.augment import augment_views
from core.data.bad_images import BadImages
from core.data.seeded_draws import stratified_positions
from core.errors import EvaluationError
from core.eval.calibration import ece_from_confidence, negative_log_likelihood
from core.eval.chunk import eval_chunk
from core.eval.corrupted import corrupted_sets, robustness_metrics
from core.eval.features import Features, check_classes, extract, iter_numpy
from core.eval.fewshot import few_shot_episodes
from core.eval.geometry import alignment, cluster_agreement, effective_rank, normalized_spectrum, uniformity
from core.eval.probe import KNN_PROTOCOL, ProbeResult, knn_accuracy, linear_probe
from core.eval.subsample import StreamSample
from core.losses.registry import loss_family
from core.metrics import fewshot_acc, fewshot_ci95
from core.progress import Progress
from core.results import Evaluation


def train_bytes_per_image(feature_dim: int) -> int:
    """What the evaluation holds per training image: float32 features, an int64 label and an int64 id."""
    return 4 * feature_dim + 16


ONLINE_KNN_IMAGES = 2000  # train images in the per-epoch kNN bank and test images it scores (cheap signal for ASHA)


def online_knn(model: nn.Module, cfg: RunConfig, bank: tuple, test: tuple, num_classes: int,
               device: torch.device) -> float:
    """kNN top-1 on small fixed subsets (``ONLINE_KNN_IMAGES`` each): the per-epoch signal for schedulers.
    ``bank``/``test`` are (uint8 images, labels) held in memory: bounded, not growing with the data set."""
    chunk = eval_chunk(model, cfg.data.image_size, cfg.eval.batch_memory_mb)
    ftr = _features_of(model, bank, device, chunk)
    fte = _features_of(model, test, device, chunk)
    return knn_accuracy(ftr, bank[1], fte, test[1], num_classes, cfg.eval.knn_k, cfg.eval.knn_temperature)["top1"]


def _features_of(model: nn.Module, pair: tuple, device: torch.device, chunk: int) -> Tensor:
    images, labels = pair
    batches = ({"image": images[i: i + chunk], "label": labels[i: i + chunk],
                "index": np.arange(i, min(i + chunk, len(labels)))} for i in range(0, len(labels), chunk))
    return extract(model, batches, device).feats


def bounded_images(ds: Any, num_classes: int, limit: int = ONLINE_KNN_IMAGES, seed: int = 0) -> tuple[np.ndarray, Tensor]:
    """A seeded class-stratified subset of about ``limit`` decodable images of a split, with labels (the
    online kNN's bank and queries), taken in one streaming pass with bounded memory."""
    sample = StreamSample(limit, num_classes, seed)
    bad = BadImages(warn=False)  # the evaluation pass names each undecodable image
    for batch in iter_numpy(ds):
        batch = bad.keep(batch)
        if len(batch["label"]):
            sample.add(batch["image"], np.asarray(batch["label"]), np.asarray(batch["index"]))
    images, labels = sample.result()
    if len(labels) == 0:
        raise EvaluationError("evaluation split is empty")
    return images, torch.from_numpy(labels)


def evaluate(model: nn.Module, cfg: RunConfig, train_eval: Any, test: Any, num_classes: int,
             device: torch.device, train_size: int | None = None, corruption_cache: str | None = None,
             verbose: bool = False) -> Evaluation:
    """The full frozen-encoder evaluation: kNN (top-1/top-5), linear probe with calibration, few-shot
    episodes, embedding geometry and (``eval.robustness``) corruption, uncertainty and label-scarce
    metrics. ``train_eval``/``test`` are datasets (or iterables of numpy batches) of eval views;
    ``train_size``, when known, lets the training set's features be gathered in place;
    ``corruption_cache``: a path or URI every node reaches where the corrupted split is kept once built;
    ``verbose``: progress lines through the long passes (features of the training split, corrupted sets).

    Memory that grows with the training set: its features, labels and ids, ``4 x feature_dim + 16``
    bytes per image, held once (``train_bytes_per_image``); everything else is bounded by constants (the
    kNN's similarity blocks, the probe's batches, the test split's own size)."""
    def views(images: Tensor, index: np.ndarray) -> Tensor:
        return augment_views(images, np.asarray(index), policy=cfg.augment.policy, strength=cfg.augment.strength,
                             views=2, seed=cfg.seed, epoch=0)

    chunk = eval_chunk(model, cfg.data.image_size, cfg.eval.batch_memory_mb)  # images per forward pass
    with Progress(train_size or 0, "evaluation: features of the training split", unit="image",
                  enabled=verbose and bool(train_size)) as bar:
        tr = extract(model, iter_numpy(train_eval, chunk), device, size_hint=train_size, bar=bar)
    te = extract(model, iter_numpy(test, chunk), device, embedding=True,
                 logvar=loss_family(cfg.loss.name).variational, views=views)
    check_classes("train (evaluation pass)", tr, num_classes)
    check_classes("test", te, num_classes)
    result = Evaluation({**knn_metrics(cfg, tr, te, num_classes, device), "test_images": len(te.labels)})
    probe = linear_probe(tr.feats, tr.labels, te.feats, te.labels, num_classes, cfg.eval.probe_epochs,
                         cfg.eval.probe_lr, seed=cfg.seed, device=device)
    result.scalars.update(probe_metrics(probe, te.labels))
    geometry_metrics(te, result, cfg.seed)
    result.scalars.update(few_shot_metrics(cfg, te))
    if cfg.eval.robustness:
        robustness_metrics(model, cfg, tr, te, probe.predict, lambda: corrupted_sets(cfg, test, chunk, corruption_cache),
                           device, result, chunk, verbose)
    return result


def knn_metrics(cfg: RunConfig, tr: Features, te: Features, num_classes: int, device: torch.device) -> dict:
    # the kNN search and the probe run on the training device (the GPU when there is one); features only
    knn = knn_accuracy(tr.feats.to(device), tr.labels, te.feats, te.labels, num_classes, cfg.eval.knn_k,
                       cfg.eval.knn_temperature)
    return {"knn_top1": knn["top1"], "knn_top5": knn["top5"],
            "knn_protocol": f"{KNN_PROTOCOL}, k={cfg.eval.knn_k}, T={cfg.eval.knn_temperature}",
            "bad_eval_images": len(tr.bad.paths) + len(te.bad.paths)}


def probe_metrics(probe: ProbeResult, labels: Tensor) -> dict:
    conf, pred = probe.probabilities.max(1)
    return {"probe_top1": probe.top1, "probe_top5": probe.top5, "probe_protocol": probe.protocol,
            "probe_ece": ece_from_confidence(conf, pred == labels),
            "probe_nll": negative_log_likelihood(probe.probabilities, labels)}


GEOMETRY_SAMPLE = 5000  # test images in the clustering; 2 x GEOMETRY_SAMPLE // 2 embeddings in the uniformity


def geometry_metrics(te: Features, result: Evaluation, seed: int = 0) -> None:
    """Effective rank and spectrum of the features, alignment/uniformity of the embedding on two
    augmented views of each test image, and the hierarchical-clustering ARI of the features. The
    clustering and the uniformity (quadratic in the number of points) take a seeded class-stratified
    subsample, the uniformity both views of each sampled image."""
    out = result.scalars
    out["effective_rank_features"] = effective_rank(te.feats)
    result.arrays["spectrum_features"] = normalized_spectrum(te.feats)[:64].tolist()
    labels = te.labels.numpy()
    pick = torch.from_numpy(stratified_positions(labels, te.index, GEOMETRY_SAMPLE, seed))
    out["cluster_ari"] = cluster_agreement(te.feats[pick], te.labels[pick])
    if te.embedding is not None:
        out["effective_rank_embedding"] = effective_rank(te.embedding)
    if te.view_pairs is not None:
        z0, z1 = te.view_pairs
        pairs = torch.from_numpy(stratified_positions(labels, te.index, GEOMETRY_SAMPLE // 2, seed))
        out.update(alignment=alignment(z0, z1), uniformity=uniformity(torch.cat([z0[pairs], z1[pairs]])))


def few_shot_metrics(cfg: RunConfig, te: Features) -> dict:
    """N-way 1- and 5-shot episodes on the test features (skipping what a tiny test set can't hold)."""
    counts = torch.unique(te.labels, return_counts=True)[1]
    out: dict[str, float] = {}
    if not cfg.eval.few_shot_episodes or len(counts) < 2:
        return out
    n_way = min(5, len(counts))
    for k in (k for k in (1, 5) if int(counts.min()) > k):
        acc, ci = few_shot_episodes(te.feats, te.labels, n_way, k, episodes=cfg.eval.few_shot_episodes,
                                    seed=cfg.seed)
        out[fewshot_acc(n_way, k)], out[fewshot_ci95(n_way, k)] = acc, ci
    return out
