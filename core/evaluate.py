"""The evaluation stage: score a frozen encoder from a checkpoint, streaming the images.

Images arrive batch by batch from a dataset iterator (a Ray Dataset or a Train ``DataIterator``);
only features and a few numbers per image are kept, never the images, so memory does not grow
with the data set's pixels. Corrupted versions of the evaluation images are either read from an
on-disk ImageNet-C style folder (``eval.corruption_root``: ``root/<corruption>/<severity>/<class>/*``)
or made batch by batch from each clean batch.

    python -m core.evaluate RUN_DIR [section.key=value ...]   # re-score a finished run, no retraining

The overrides may change only ``eval.*`` fields (the protocol); the metrics are written to
``RUN_DIR/evaluation.json`` and merged into ``RUN_DIR/summary.json``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from core.config import ConfigError, RunConfig
from core.data.augment import augment_views, eval_view
from core.data.decode import split_undecodable
from core.eval.calibration import ece_from_confidence, negative_log_likelihood
from core.eval.fewshot import few_shot_episodes
from core.eval.geometry import (
    alignment,
    cluster_agreement,
    effective_rank,
    normalized_spectrum,
    uniformity,
)
from core.eval.probe import KNN_PROTOCOL, knn_accuracy, linear_probe
from core.eval.robustness import corrupt, mean_corruption_error, prototype_accuracy
from core.eval.uncertainty import (
    centroid_distance,
    misclassification_auroc,
    severity_correlation,
)
from core.io import write_json_atomic
from core.loop import load_state_file
from core.losses import posterior_log_det
from core.losses.registry import loss_family

EVAL_BATCH = 512  # images per forward pass in evaluation
ONLINE_KNN_IMAGES = 2000  # train images in the per-epoch kNN bank and test images it scores (cheap signal for ASHA)
Batches = Iterable[dict[str, np.ndarray]]  # {"image": uint8 [B, H, W, C], "label": [B], "index": [B], "ok"?, "path"?}


class EvaluationError(RuntimeError):
    """The evaluation cannot give a meaningful number (e.g. a class lost every image)."""


def iter_numpy(ds: Any, batch_size: int = EVAL_BATCH) -> Iterator[dict[str, np.ndarray]]:
    """Numpy batches from a Ray Dataset / DataIterator, or pass through an iterable of batches."""
    if hasattr(ds, "iter_batches"):
        return iter(ds.iter_batches(batch_size=batch_size, batch_format="numpy"))
    return iter(ds)


@dataclass
class BadImages:
    """Undecodable images met while evaluating (skipped, counted, named)."""

    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def keep(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch, paths, labels = split_undecodable(batch)
        for p in paths:
            warnings.warn(f"evaluation: skipping undecodable image {p!r}")
        self.paths += paths
        self.labels += labels
        return batch


@dataclass
class Features:
    """What one pass over an evaluation split keeps: features and per-image numbers, no pixels."""

    feats: Tensor  # [N, D] encoder features (float32, CPU)
    labels: Tensor  # [N]
    index: np.ndarray  # [N] stable sample ids
    embedding: Tensor | None = None  # [N, d] normalised head embedding (eval mode)
    logvar: Tensor | None = None  # [N, d] posterior log-variance (variational heads)
    view_pairs: tuple[Tensor, Tensor] | None = None  # two augmented views' embeddings (alignment/uniformity)
    bad: BadImages = field(default_factory=BadImages)


@torch.no_grad()
def extract(model: nn.Module, batches: Batches, device: torch.device, *, embedding: bool = False,
            logvar: bool = False, views: Callable[[Tensor, np.ndarray], Tensor] | None = None) -> Features:
    """One streaming pass: encoder features (and optionally the head embedding, the posterior
    log-variance and two augmented views' embeddings) of every decodable image, in eval mode."""
    was_training = model.training
    model.eval()
    bad = BadImages()
    feats, labels, index, emb, lv, v0, v1 = [], [], [], [], [], [], []
    try:
        for batch in batches:
            batch = bad.keep(batch)
            if len(batch["label"]) == 0:
                continue
            images = torch.from_numpy(np.require(batch["image"], requirements="W"))
            h = model.features(eval_view(images).to(device, non_blocking=True))
            feats.append(h.float().cpu())
            labels.append(torch.tensor(np.asarray(batch["label"]), dtype=torch.long))
            index.append(np.asarray(batch["index"], np.int64))
            if embedding or logvar:
                head = model.head(h)
                if isinstance(head, tuple):  # variational: (mu, logvar)
                    emb.append(torch.nn.functional.normalize(head[0].float(), dim=-1).cpu())
                    lv.append(head[1].float().cpu())
                else:
                    emb.append(head.float().cpu())
            if views is not None:
                pair = views(images, batch["index"]).to(device)  # [B, 2, C, H, W]
                v0.append(model(pair[:, 0]).z.float().cpu())
                v1.append(model(pair[:, 1]).z.float().cpu())
    finally:
        model.train(was_training)
    if not feats:
        raise EvaluationError("evaluation split is empty" + (f" ({len(bad.paths)} undecodable images)"
                                                              if bad.paths else ""))
    return Features(torch.cat(feats), torch.cat(labels), np.concatenate(index),
                    torch.cat(emb) if emb else None, torch.cat(lv) if lv and logvar else None,
                    (torch.cat(v0), torch.cat(v1)) if v0 else None, bad)


def _check_classes(split: str, f: Features, num_classes: int) -> None:
    """A class that lost every image to decoding errors cannot be scored: refuse rather than report
    accuracy over the remaining classes as if nothing happened."""
    present = set(torch.unique(f.labels).tolist())
    lost = sorted(set(f.bad.labels) - present)
    if lost:
        raise EvaluationError(f"{split}: every image of class(es) {lost} is undecodable (e.g. {f.bad.paths[0]!r}); "
                              f"refusing to score {num_classes} classes on the rest")


def online_knn(model: nn.Module, cfg: RunConfig, bank: Features | tuple, test: tuple, num_classes: int,
               device: torch.device) -> float:
    """kNN top-1 on small fixed subsets (``ONLINE_KNN_IMAGES`` each): the per-epoch signal for schedulers.
    ``bank``/``test`` are (uint8 images, labels) held in memory: bounded, not growing with the data set."""
    ftr = _features_of(model, bank, device)
    fte = _features_of(model, test, device)
    return knn_accuracy(ftr, bank[1], fte, test[1], num_classes, cfg.eval.knn_k, cfg.eval.knn_temperature)["top1"]


def _features_of(model: nn.Module, pair: tuple, device: torch.device) -> Tensor:
    images, labels = pair
    batches = ({"image": images[i: i + EVAL_BATCH], "label": labels[i: i + EVAL_BATCH],
                "index": np.arange(i, min(i + EVAL_BATCH, len(labels)))} for i in range(0, len(labels), EVAL_BATCH))
    return extract(model, batches, device).feats


def bounded_images(ds: Any, limit: int = ONLINE_KNN_IMAGES) -> tuple[np.ndarray, Tensor]:
    """The first ``limit`` decodable images and labels of a split (for the online kNN only)."""
    images, labels, n = [], [], 0
    bad = BadImages()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for batch in iter_numpy(ds):
            batch = bad.keep(batch)
            images.append(batch["image"][: limit - n])
            labels.append(np.asarray(batch["label"][: limit - n], np.int64))
            n += len(labels[-1])
            if n >= limit:
                break
    if n == 0:
        raise EvaluationError("evaluation split is empty")
    return np.concatenate(images), torch.from_numpy(np.concatenate(labels))


def evaluate(model: nn.Module, cfg: RunConfig, train_eval: Any, test: Any, num_classes: int,
             device: torch.device) -> dict[str, Any]:
    """The full frozen-encoder evaluation: kNN (top-1/top-5), linear probe with calibration, few-shot
    episodes, embedding geometry and (``eval.robustness``) corruption, uncertainty and label-scarce
    metrics. ``train_eval``/``test`` are datasets (or iterables of numpy batches) of eval views."""
    variational = loss_family(cfg.loss.name).variational

    def views(images: Tensor, index: np.ndarray) -> Tensor:
        return augment_views(images, np.asarray(index), policy=cfg.augment.policy, strength=cfg.augment.strength,
                             views=2, seed=cfg.seed, epoch=0)

    tr = extract(model, iter_numpy(train_eval), device)
    te = extract(model, iter_numpy(test), device, embedding=True, logvar=variational, views=views)
    _check_classes("train (evaluation pass)", tr, num_classes)
    _check_classes("test", te, num_classes)
    # the kNN search and the probe run on the training device (the GPU when there is one); features only
    knn = knn_accuracy(tr.feats.to(device), tr.labels, te.feats, te.labels, num_classes, cfg.eval.knn_k,
                       cfg.eval.knn_temperature)
    res: dict[str, Any] = {"knn_top1": knn["top1"], "knn_top5": knn["top5"],
                           "knn_protocol": f"{KNN_PROTOCOL}, k={cfg.eval.knn_k}, T={cfg.eval.knn_temperature}",
                           "bad_eval_images": len(tr.bad.paths) + len(te.bad.paths)}
    pr = linear_probe(tr.feats, tr.labels, te.feats, te.labels, num_classes, cfg.eval.probe_epochs, cfg.eval.probe_lr,
                      seed=cfg.seed, device=device)
    conf, pred = pr.probabilities.max(1)
    res.update(probe_top1=pr.top1, probe_top5=pr.top5, probe_protocol=pr.protocol,
               probe_ece=ece_from_confidence(conf, pred == te.labels),
               probe_nll=negative_log_likelihood(pr.probabilities, te.labels))
    res.update(geometry_metrics(te))
    counts = torch.unique(te.labels, return_counts=True)[1]
    if cfg.eval.few_shot_episodes and len(counts) >= 2:
        n_way = min(5, len(counts))
        for k in (k for k in (1, 5) if int(counts.min()) > k):  # tiny test sets: skip what they can't hold
            acc, ci = few_shot_episodes(te.feats, te.labels, n_way, k, episodes=cfg.eval.few_shot_episodes,
                                        seed=cfg.seed)
            res[f"fewshot_{n_way}w{k}s_acc"], res[f"fewshot_{n_way}w{k}s_ci95"] = acc, ci
    if cfg.eval.robustness:
        if cfg.eval.corruption_root:
            from core.data.sources import eval_folder_dataset

            def corrupted() -> Iterator:
                return folder_corruptions(cfg, lambda path: eval_folder_dataset(path, cfg.data.image_size))
        else:
            def corrupted() -> Iterator:
                return generated_corruptions(iter_numpy(test), cfg)
        res.update(robustness_metrics(model, cfg, tr, te, pr.predict, corrupted, device))
    return res


def geometry_metrics(te: Features) -> dict[str, Any]:
    """Effective rank and spectrum of the features, alignment/uniformity of the embedding on two
    augmented views of each test image, and the hierarchical-clustering ARI of the features."""
    spectrum = normalized_spectrum(te.feats)
    out: dict[str, Any] = {"effective_rank_features": effective_rank(te.feats),
                           "spectrum_features": ",".join(f"{x:.4g}" for x in spectrum[:64].tolist()),
                           "cluster_ari": cluster_agreement(te.feats[:5000], te.labels[:5000])}
    if te.embedding is not None:
        out["effective_rank_embedding"] = effective_rank(te.embedding)
    if te.view_pairs is not None:
        z0, z1 = te.view_pairs
        out.update(alignment=alignment(z0, z1), uniformity=uniformity(torch.cat([z0, z1])[:4096]))
    return out


def generated_corruptions(batches: Iterator[dict], cfg: RunConfig, parallel: bool = False,
                          progress: bool = False) -> Iterator[tuple[tuple[str, int], dict]]:
    """``((corruption, severity), batch)`` for every clean batch and every corrupted version of it,
    made batch by batch (ImageNet-C types cached on disk per batch, in parallel Ray tasks with
    ``parallel``; the fast suite in torch). The corruption seed is fixed, so every run of a study is
    scored on the same corrupted images."""
    from core.eval.imagenet_c import corrupted_split

    names = cfg.eval.corruption_names()
    bad = BadImages()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the clean pass already warned about each undecodable image
        for batch in batches:
            batch = bad.keep(batch)
            if len(batch["label"]) == 0:
                continue
            images = np.require(batch["image"], requirements="W")
            if cfg.eval.corruption_suite == "imagenet_c":
                sets = corrupted_split(images, names, seed=0, index=np.asarray(batch["index"]), parallel=parallel,
                                       progress=progress)
            else:
                sets = {(n, s): corrupt(torch.from_numpy(images), n, s, seed=0).numpy()
                        for n in names for s in range(1, 6)}
            for key, imgs in sets.items():
                yield key, {"image": imgs, "label": batch["label"], "index": batch["index"]}


def folder_corruptions(cfg: RunConfig, load: Callable[[str], Any]) -> Iterator[tuple[tuple[str, int], dict]]:
    """``((corruption, severity), batch)`` from an on-disk ImageNet-C layout
    ``eval.corruption_root/<corruption>/<severity>/<class>/*`` (``load(path)`` -> dataset of eval views)."""
    root = cfg.eval.corruption_root
    for name in cfg.eval.corruption_names():
        for sev in range(1, 6):
            path = os.path.join(root, name, str(sev))
            if not os.path.isdir(path):
                raise EvaluationError(f"eval.corruption_root: missing {path!r} (expected root/<corruption>/<severity>/<class>/*)")
            for batch in iter_numpy(load(path)):
                yield (name, sev), batch


def _logdet_breakdown(logdet: Tensor, centroid: Tensor, severity: Tensor, kinds: np.ndarray) -> dict[str, float]:
    """Where VCL's log-det points: its rank correlation with the centroid distance (a difficulty score
    every encoder has) and, per corruption type, with severity (clean images as severity 0)."""
    out = {"unc_spearman_logdet_vs_centroid": severity_correlation(logdet, centroid)}
    clean = kinds == "clean"
    for kind in sorted(set(kinds) - {"clean"}):
        keep = torch.from_numpy(clean | (kinds == kind))
        out[f"unc_spearman_logdet_{kind}"] = severity_correlation(logdet[keep], severity[keep])
    return out


def robustness_metrics(model: nn.Module, cfg: RunConfig, tr: Features, te: Features, predict: Callable,
                       corrupted: Callable[[], Iterator], device: torch.device) -> dict[str, float]:
    """Probe accuracy and calibration on corrupted test images (5 severities); uncertainty scores
    (centroid distance; VCL's posterior log-det) against errors and severity; label-scarce probes.
    Per corrupted set only two numbers per image are kept (confidence, correct)."""
    variational = te.logvar is not None
    per_set: dict[tuple[str, int], tuple[list, list]] = {}
    severity, wrong, dist, logdet, kinds = [], [], [], [], []

    def score(feats: Tensor, labels: Tensor, sev: int, lv: Tensor | None, kind: str = "clean") -> tuple[Tensor, Tensor]:
        probs = predict(feats)
        conf, pred = probs.max(1)
        severity.append(torch.full((len(labels),), sev))
        kinds.extend([kind] * len(labels))
        wrong.append(pred != labels)
        dist.append(centroid_distance(tr.feats, tr.labels, feats))
        if variational and lv is not None:
            logdet.append(posterior_log_det(lv).float())
        return conf, pred == labels

    score(te.feats, te.labels, 0, te.logvar)
    for key, batch in corrupted():
        f = extract(model, [batch], device, logvar=variational)
        conf, correct = score(f.feats, f.labels, key[1], f.logvar, key[0])
        acc = per_set.setdefault(key, ([], []))
        acc[0].append(conf)
        acc[1].append(correct)
    out: dict[str, float] = {}
    acc_by: dict[tuple[str, int], float] = {}
    ece_by: dict[tuple[str, int], float] = {}
    for (name, sev), (confs, corrects) in per_set.items():
        correct = torch.cat(corrects)
        acc_by[(name, sev)] = out[f"corr_{name}_s{sev}"] = 100.0 * correct.float().mean().item()
        ece_by[(name, sev)] = ece_from_confidence(torch.cat(confs), correct)
    for sev in range(1, 6):
        out[f"corruption_acc_s{sev}"] = float(np.mean([a for (n, s), a in acc_by.items() if s == sev]))
        out[f"ece_s{sev}"] = float(np.mean([e for (n, s), e in ece_by.items() if s == sev]))
    out["corruption_acc"] = float(np.mean(list(acc_by.values())))
    out["mce"] = mean_corruption_error(acc_by)
    severity_all, wrong_all = torch.cat(severity), torch.cat(wrong)
    for name, values in (("centroid", dist), ("logdet", logdet)):
        if values:
            v = torch.cat(values)
            out[f"unc_auroc_{name}"] = misclassification_auroc(v, wrong_all)
            out[f"unc_spearman_{name}"] = severity_correlation(v, severity_all)
            if name == "logdet":  # mean posterior log-det per severity (0 = clean)
                for sev in range(6):
                    out[f"logdet_s{sev}"] = float(v[severity_all == sev].mean())
                out.update(_logdet_breakdown(v, torch.cat(dist), severity_all, np.asarray(kinds)))
    for k in cfg.eval.label_budgets:
        out[f"fewlabel_{k}_acc"], out[f"fewlabel_{k}_std"] = prototype_accuracy(
            tr.feats, tr.labels, te.feats, te.labels, k, seed=cfg.seed)
    return out


# -- the stage on its own: score a saved checkpoint ------------------------------------------------

def state_files(run_dir: str | Path) -> list[Path]:
    """A run's model checkpoints, newest first: the in-process state file (and the one it replaced)
    or Train's ``epoch=*/state.pt``."""
    run_dir = Path(run_dir)
    candidates = [run_dir / "latest_state.pt", run_dir / "latest_state.pt.previous",
                  *(Path(p) for p in glob.glob(str(run_dir / "epoch=*" / "state.pt")))]
    found = sorted((p for p in candidates if p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True)
    if not found:
        raise FileNotFoundError(f"{run_dir}: no checkpoint (latest_state.pt or epoch=*/state.pt)")
    return found


def run_config(run_dir: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """A run directory's config with ``eval.*`` overrides (the only fields re-scoring may change)."""
    cfg_file = Path(run_dir) / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.json)")
    for o in overrides:
        if not o.startswith("eval."):
            raise ConfigError(f"override {o!r}: only eval.* fields can change when re-scoring a trained model")
    return RunConfig.from_dict(json.loads(cfg_file.read_text())["config"]).with_overrides(overrides)


def evaluate_run(run_dir: str | Path, overrides: Iterable[str] = (), device: str | None = None) -> dict[str, Any]:
    """Re-score a run's saved model with the (possibly changed) evaluation protocol; returns the metrics
    and writes ``evaluation.json``, merging them into ``summary.json``."""
    from core.data.sources import load_source
    from core.models import build_model

    run_dir = Path(run_dir)
    overrides = list(overrides)
    cfg = run_config(run_dir, overrides)
    files = state_files(run_dir)  # fail before any work when there is no checkpoint
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() and cfg.use_gpu else "cpu"))
    state = load_state_file(files, dev)
    if "model" not in state:
        raise EvaluationError(f"{run_dir}: the last checkpoint holds no model (status {state.get('status')!r})")
    source = load_source(cfg.data)
    model = build_model(cfg, source.num_classes).to(dev)
    model.load_state_dict(state["model"])
    metrics = evaluate(model, cfg, source.train_eval, source.test, source.num_classes, dev)
    metrics.update(eval_epoch=state.get("epoch"), eval_overrides=" ".join(overrides))
    write_json_atomic(run_dir / "evaluation.json", metrics)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    write_json_atomic(summary_path, {**summary, **metrics})
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("overrides", nargs="*", help="eval.key=value changes to the evaluation protocol")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if the run used a GPU)")
    args = parser.parse_args(argv)
    import ray

    try:
        run_config(args.run_dir, args.overrides)  # bad input fails before Ray starts
        state_files(args.run_dir)
        ray.init("local", num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False)
        metrics = evaluate_run(args.run_dir, args.overrides, args.device)
    except (ConfigError, FileNotFoundError, EvaluationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if ray.is_initialized():
            ray.shutdown()
    for k in ("knn_top1", "probe_top1", "probe_ece", "corruption_acc", "mce", "bad_eval_images"):
        if k in metrics:
            print(f"  {k:<16} {metrics[k]:.4g}" if isinstance(metrics[k], float) else f"  {k:<16} {metrics[k]}")
    print(f"written: {Path(args.run_dir) / 'evaluation.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
