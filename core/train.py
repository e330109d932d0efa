"""Pretraining inside a Ray Train ``TorchTrainer`` (Train V2), then frozen-encoder evaluation.

``fit(cfg)`` runs one config: ``num_workers=0`` is Train's local mode (in-process, no worker
start-up: the laptop and small-study path); ``num_workers>=1`` starts a DDP worker group (gloo
on CPU, nccl on GPU). The run is named by the config hash, so re-running the same config
resumes from its last checkpoint and a different config never picks up another's.

CLI: ``python -m core.train --config FILE.yaml [section.key=value ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.tune
import torch
from ray.train import Checkpoint, CheckpointConfig, DataConfig, FailureConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from core.config import VARIATIONAL_LOSSES, ConfigError, RunConfig
from core.data.augment import augment_views
from core.data.pipeline import epoch_views
from core.data.sources import ImageSource, load_source
from core.distributed import gather_no_grad, gather_with_grad, is_distributed
from core.eval.probe import KNN_PROTOCOL, extract_features, knn_accuracy, linear_probe
from core.eval.calibration import expected_calibration_error, negative_log_likelihood
from core.eval.fewshot import few_shot_episodes
from core.eval.geometry import alignment, cluster_agreement, effective_rank, normalized_spectrum, uniformity
from core.eval.imagenet_c import corrupted_split
from core.eval.robustness import corrupt, mean_corruption_error, prototype_accuracy
from core.eval.uncertainty import centroid_distance, misclassification_auroc, severity_correlation
from core.losses import build_loss, posterior_log_det
from core.models import build_model
from core.optim import build_optimizer, lr_at

ONLINE_KNN_BANK = 2000  # train images in the per-epoch kNN bank (cheap signal for ASHA)
STATE_FILE = "state.pt"
LOCAL_STATE_FILE = "latest_state.pt"  # in-process (num_workers=0) checkpoint in the run directory
LOCAL_RUNS_DIR = "~/.cache/contrastive-platform/runs"  # run logs when storage_path is a URI


class DivergedError(RuntimeError):
    """The loss became non-finite."""


@dataclass
class RunResult:
    """Final metrics of a run plus where it lives."""

    metrics: dict[str, Any]
    run_dir: str
    status: str


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """Write-then-rename, so a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def materialize(ds: ray.data.Dataset | ray.data.DataIterator) -> tuple[torch.Tensor, torch.Tensor]:
    """All ok rows of an (evaluation) dataset as uint8 images and labels."""
    images, labels = [], []
    for b in ds.iter_batches(batch_size=1024, batch_format="numpy"):
        keep = b["ok"].astype(bool) if "ok" in b else slice(None)
        images.append(b["image"][keep])
        labels.append(b["label"][keep])
    if not images or sum(len(x) for x in labels) == 0:
        raise ValueError("evaluation dataset is empty")
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)).long()  # copies


def _objective(loss_fn: torch.nn.Module, name: str, out, labels: torch.Tensor, b: int, v: int) -> torch.Tensor:
    """Loss on the global batch: embeddings and labels are gathered across workers."""
    z = out.z.reshape(b, v, -1)
    if name == "cross_entropy":
        return loss_fn(z, labels)
    z_all, labels_all = gather_with_grad(z), gather_no_grad(labels)
    if name in VARIATIONAL_LOSSES:
        return loss_fn(z_all, labels_all, out.mu.reshape(b, v, -1), out.logvar.reshape(b, v, -1))
    return loss_fn(z_all, labels_all)


def _gather_objects(obj: Any, world: int) -> list[Any]:
    """``obj`` from every worker, in rank order (just ``[obj]`` in one process)."""
    if world == 1 or not is_distributed():
        return [obj]
    out: list[Any] = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def _all_finite(loss: torch.Tensor) -> bool:
    flag = torch.tensor([float(torch.isfinite(loss).item())])
    if is_distributed():
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item())


def evaluate(model: torch.nn.Module, cfg: RunConfig, train_eval: tuple, test: tuple, num_classes: int,
             device: torch.device, probe: bool = True) -> dict[str, Any]:
    """kNN (top-1/top-5) and, if ``probe``, the linear probe, few-shot episodes, embedding geometry
    and (``eval.robustness``) the corruption/uncertainty metrics, all on the frozen encoder."""
    ftr = extract_features(model, train_eval[0], device=device)
    fte = extract_features(model, test[0], device=device)
    knn = knn_accuracy(ftr, train_eval[1], fte, test[1], num_classes, cfg.eval.knn_k, cfg.eval.knn_temperature)
    res: dict[str, Any] = {"knn_top1": knn["top1"], "knn_top5": knn["top5"],
                           "knn_protocol": f"{KNN_PROTOCOL}, k={cfg.eval.knn_k}, T={cfg.eval.knn_temperature}"}
    if probe:
        pr = linear_probe(ftr, train_eval[1], fte, test[1], num_classes, cfg.eval.probe_epochs, cfg.eval.probe_lr,
                          seed=cfg.seed)
        res.update(probe_top1=pr.top1, probe_top5=pr.top5, probe_protocol=pr.protocol,
                   probe_ece=expected_calibration_error(pr.probabilities, test[1]),
                   probe_nll=negative_log_likelihood(pr.probabilities, test[1]))
        res.update(geometry_metrics(model, cfg, fte, test, device))
        counts = torch.unique(test[1], return_counts=True)[1]
        if cfg.eval.few_shot_episodes and len(counts) >= 2:
            n_way = min(5, len(counts))
            for k in (k for k in (1, 5) if int(counts.min()) > k):  # tiny test sets: skip what they can't hold
                acc, ci = few_shot_episodes(fte, test[1], n_way, k, episodes=cfg.eval.few_shot_episodes,
                                            seed=cfg.seed)
                res[f"fewshot_{n_way}w{k}s_acc"], res[f"fewshot_{n_way}w{k}s_ci95"] = acc, ci
        if cfg.eval.robustness:
            res.update(robustness_metrics(model, cfg, ftr, train_eval[1], (test[0], test[1], fte), pr.predict,
                                          device))
    return res


def geometry_metrics(model: torch.nn.Module, cfg: RunConfig, test_feats: torch.Tensor, test: tuple,
                     device: torch.device) -> dict[str, Any]:
    """Effective rank and spectrum of the features, alignment/uniformity of the embedding on two
    augmented views of each test image, and the hierarchical-clustering ARI of the features."""
    images, labels = test
    views = augment_views(images, np.arange(len(images)), policy=cfg.augment.policy, strength=cfg.augment.strength,
                          views=2, seed=cfg.seed, epoch=0)
    model.eval()
    with torch.no_grad():
        z = [torch.cat([model(views[i: i + 512, v].to(device)).z.float().cpu() for i in range(0, len(views), 512)])
             for v in range(2)]
    model.train()
    spectrum = normalized_spectrum(test_feats)
    return {"effective_rank_features": effective_rank(test_feats),
            "effective_rank_embedding": effective_rank(extract_features(model, images, device=device,
                                                                        embedding=True)),
            "spectrum_features": ",".join(f"{x:.4g}" for x in spectrum[:64].tolist()),
            "alignment": alignment(z[0], z[1]), "uniformity": uniformity(torch.cat(z)[:4096]),
            "cluster_ari": cluster_agreement(test_feats[:5000], labels[:5000])}


def corrupted_sets(images: torch.Tensor, cfg: RunConfig) -> dict[tuple[str, int], torch.Tensor]:
    """Every (corruption, severity) version of the evaluation images. The corruption seed is fixed,
    so every run of a study is scored on the same corrupted images (paired comparisons)."""
    names = cfg.eval.corruption_names()
    if cfg.eval.corruption_suite == "imagenet_c":
        return {k: torch.from_numpy(v) for k, v in corrupted_split(images.numpy(), names, seed=0).items()}
    return {(n, s): corrupt(images, n, s, seed=0) for n in names for s in range(1, 6)}


@torch.no_grad()
def _logvar(model: torch.nn.Module, feats: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Posterior log-variance from already extracted encoder features (the head only: no second
    encoder pass)."""
    model.eval()
    out = torch.cat([model.head(feats[i: i + 4096].to(device))[1].float().cpu() for i in range(0, len(feats), 4096)])
    model.train()
    return out


def robustness_metrics(model: torch.nn.Module, cfg: RunConfig, train_feats: torch.Tensor,
                       train_labels: torch.Tensor, test: tuple, predict, device: torch.device) -> dict[str, float]:
    """Probe accuracy and calibration on corrupted test images (5 severities); uncertainty scores
    (centroid distance; VCL's posterior log-det) against errors and severity; label-scarce probes.
    ``test`` is (images, labels, clean features)."""
    images, labels, clean_feats = test
    variational = cfg.loss.name in VARIATIONAL_LOSSES
    acc: dict[tuple[str, int], float] = {}
    ece: dict[tuple[str, int], float] = {}
    out: dict[str, float] = {}
    severity, wrong, dist, logdet = [], [], [], []

    def score(imgs: torch.Tensor, feats: torch.Tensor, sev: int) -> torch.Tensor:
        probs = predict(feats)
        severity.append(torch.full((len(imgs),), sev))
        wrong.append(probs.argmax(1) != labels)
        dist.append(centroid_distance(train_feats, train_labels, feats))
        if variational:
            logdet.append(posterior_log_det(_logvar(model, feats, device)).float())
        return probs

    score(images, clean_feats, 0)
    for (name, sev), imgs in corrupted_sets(images, cfg).items():
        probs = score(imgs, extract_features(model, imgs, device=device), sev)
        acc[(name, sev)] = out[f"corr_{name}_s{sev}"] = 100.0 * (probs.argmax(1) == labels).float().mean().item()
        ece[(name, sev)] = expected_calibration_error(probs, labels)
    for sev in range(1, 6):
        out[f"corruption_acc_s{sev}"] = float(np.mean([a for (n, s), a in acc.items() if s == sev]))
        out[f"ece_s{sev}"] = float(np.mean([e for (n, s), e in ece.items() if s == sev]))
    out["corruption_acc"] = float(np.mean(list(acc.values())))
    out["mce"] = mean_corruption_error(acc)
    severity_all, wrong_all = torch.cat(severity), torch.cat(wrong)
    for name, values in (("centroid", dist), ("logdet", logdet)):
        if values:
            v = torch.cat(values)
            out[f"unc_auroc_{name}"] = misclassification_auroc(v, wrong_all)
            out[f"unc_spearman_{name}"] = severity_correlation(v, severity_all)
            if name == "logdet":  # mean posterior log-det per severity (0 = clean)
                for sev in range(6):
                    out[f"logdet_s{sev}"] = float(v[severity_all == sev].mean())
    for k in cfg.eval.label_budgets:
        out[f"fewlabel_{k}_acc"], out[f"fewlabel_{k}_std"] = prototype_accuracy(
            train_feats, train_labels, clean_feats, labels, k, seed=cfg.seed)
    return out


class TrainContext:
    """What the loop needs from Ray Train inside a TorchTrainer worker."""

    def __init__(self, train_dataset: ray.data.Dataset | None = None) -> None:
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.train_dataset = train_dataset  # unsplit, for augment_in=ray_data

    def dataset(self, name: str):
        return ray.train.get_dataset_shard(name)

    def epoch_views(self, cfg: RunConfig, epoch: int):
        """This rank's share of the epoch's Ray-Data-augmented training set: rank 0 splits the
        epoch's stream into one iterator per rank and hands them out."""
        iterators: list[Any] = [None] * self.world
        if self.rank == 0:
            iterators = epoch_views(self.train_dataset, cfg, epoch).streaming_split(self.world, equal=True)
        torch.distributed.broadcast_object_list(iterators, src=0)
        return iterators[self.rank]

    def load_state(self, device: torch.device) -> dict | None:
        checkpoint = ray.train.get_checkpoint()
        if not checkpoint:
            return None
        with checkpoint.as_directory() as d:
            return torch.load(os.path.join(d, STATE_FILE), map_location=device, weights_only=False)

    def report(self, metrics: dict, state: dict, dir_name: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if self.rank == 0:
                torch.save(state, os.path.join(d, STATE_FILE))
                ckpt = Checkpoint.from_directory(d)
            ray.train.report(_scalars(metrics), checkpoint=ckpt, checkpoint_dir_name=dir_name)


class InProcessContext:
    """``num_workers=0``: the loop runs in this process (a laptop run, or one Tune trial) on the
    full datasets. The checkpoint is the run directory's state file (write-then-rename); inside a
    Tune trial (``tune_trial=True``) each epoch is also reported with the state as a Tune
    checkpoint, so ASHA sees every epoch and a trial retried on another node (or after a driver
    restart) resumes from Tune's storage, which may be shared or an object store. Resuming takes
    whichever of the two is further along."""

    rank, world = 0, 1

    def __init__(self, datasets: dict, run_dir: str, tune_trial: bool = False) -> None:
        self.datasets, self.tune_trial = datasets, tune_trial
        self.state_path = os.path.join(run_dir, LOCAL_STATE_FILE)

    def dataset(self, name: str):
        return self.datasets[name]

    def epoch_views(self, cfg: RunConfig, epoch: int):
        return epoch_views(self.datasets["train"], cfg, epoch)

    def load_state(self, device: torch.device) -> dict | None:
        states = []
        if self.tune_trial and (checkpoint := ray.tune.get_checkpoint()):
            with checkpoint.as_directory() as d:
                states.append(torch.load(os.path.join(d, STATE_FILE), map_location=device, weights_only=False))
        if os.path.exists(self.state_path):
            states.append(torch.load(self.state_path, map_location=device, weights_only=False))
        # a diverged run's state has no epoch and is final
        return max(states, key=lambda st: st.get("epoch", float("inf")), default=None)

    def report(self, metrics: dict, state: dict, dir_name: str) -> None:
        # The local file is written synchronously, before Tune hears of the epoch: a driver killed
        # before Tune's next experiment snapshot restores the trial as unfinished, and the rerun
        # must find this file to return at once instead of training again.
        tmp = self.state_path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.state_path)
        if self.tune_trial:
            with tempfile.TemporaryDirectory() as d:
                torch.save(state, os.path.join(d, STATE_FILE))
                ray.tune.report(_scalars(metrics), checkpoint=ray.tune.Checkpoint.from_directory(d))


def train_loop(config: dict, ctx: TrainContext | InProcessContext | None = None) -> dict[str, Any]:
    """The per-worker loop (every Train worker runs it; with ``num_workers=0`` it runs in-process)."""
    cfg = RunConfig.from_dict(config["cfg"])
    num_classes, train_size, run_dir = config["num_classes"], config["train_size"], config["run_dir"]
    ctx = ctx or TrainContext(config.get("train_dataset"))
    rank, world = ctx.rank, ctx.world
    verbose = config.get("verbose", True) and rank == 0
    torch.set_num_threads(max(1, config.get("torch_threads", torch.get_num_threads())))
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda", torch.cuda.current_device()) if cfg.use_gpu and torch.cuda.is_available() \
        else torch.device("cpu")

    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    workers = _gather_objects({"node_id": node_id, "pid": os.getpid()}, world)  # where each rank runs
    model = build_model(cfg, num_classes).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net = ray.train.torch.prepare_model(model) if world > 1 else model
    loss_fn = build_loss(cfg.loss)
    optimizer = build_optimizer(model, cfg.optim)
    base_lr = cfg.optim.effective_lr()
    local_batch = cfg.optim.batch_size // world
    steps_per_epoch = max(1, train_size // cfg.optim.batch_size)
    total_steps = steps_per_epoch * cfg.optim.epochs
    warmup_steps = steps_per_epoch * cfg.optim.warmup_epochs
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")

    start_epoch, step, history = 0, 0, []
    state = ctx.load_state(device)
    if state:
        if state["config_hash"] != cfg.config_hash():
            raise RuntimeError(f"checkpoint belongs to config {state['config_hash']}, not {cfg.config_hash()}")
        if state.get("status") == "diverged":
            return state["final"]
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, history = state["epoch"] + 1, state["step"], state["history"]
        torch.set_rng_state(state["torch_rng"])
        if start_epoch >= cfg.optim.epochs:  # already finished: nothing to redo
            return state["final"]
        if verbose:
            print(f"[{cfg.run_name}] resumed from epoch {state['epoch']}", flush=True)

    in_ray_data = cfg.data.augment_in == "ray_data"
    shard = None if in_ray_data else ctx.dataset("train")
    train_eval = test = None
    if rank == 0:
        train_eval = materialize(ctx.dataset("train_eval"))
        test = materialize(ctx.dataset("test"))
        bank = tuple(t[:ONLINE_KNN_BANK] for t in train_eval)
    final: dict[str, Any] = {}

    for epoch in range(start_epoch, cfg.optim.epochs):
        net.train()
        bad_seen: list[str] = []  # undecodable images met this epoch (skipped, counted, named)
        seen_total = 0
        t0, n_views, losses, grad_norms = time.perf_counter(), 0, [], []
        seen_index: list[np.ndarray] = []  # sample indices this rank trained on this epoch
        source = ctx.epoch_views(cfg, epoch) if in_ray_data else shard
        for batch in source.iter_batches(batch_size=local_batch, drop_last=True, batch_format="numpy",
                                         local_shuffle_buffer_size=max(local_batch * 4, 1024),
                                         local_shuffle_seed=cfg.seed * 100003 + epoch):
            seen_total += len(batch["label"])
            if "ok" in batch and not batch["ok"].all():
                keep = batch["ok"].astype(bool)
                newly_bad = [str(p) for p in batch["path"][~keep]]
                for p in newly_bad:
                    warnings.warn(f"skipping undecodable image {p!r}")
                bad_seen += newly_bad
                if len(bad_seen) > cfg.data.max_bad_fraction * seen_total:
                    raise RuntimeError(f"{len(bad_seen)} of {seen_total} images undecodable (> data.max_bad_fraction="
                                       f"{cfg.data.max_bad_fraction}); first: {bad_seen[:5]}")
                batch = {k: batch[k][keep] for k in ("image", "views", "label", "index") if k in batch}
            # Ray hands out read-only arrays; torch needs writable memory (copies only if read-only)
            labels = torch.from_numpy(np.require(batch["label"], requirements="W")).long()
            index = batch["index"]
            seen_index.append(np.asarray(index))
            if in_ray_data:  # made by the map_batches stage
                views = torch.from_numpy(np.require(batch["views"], requirements="W"))
            else:
                views = augment_views(torch.from_numpy(np.require(batch["image"], requirements="W")), index,
                                      policy=cfg.augment.policy, strength=cfg.augment.strength,
                                      views=cfg.augment.views, seed=cfg.seed, epoch=epoch)
            b, v = views.shape[:2]
            x = views.flatten(0, 1).to(device, non_blocking=True)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            lr = lr_at(step, total_steps, warmup_steps, base_lr, cfg.optim.min_lr_ratio)
            for g in optimizer.param_groups:
                g["lr"] = lr
            with autocast:
                out = net(x)
            loss = _objective(loss_fn, cfg.loss.name, out, labels.to(device), b, v)
            if not _all_finite(loss):
                final = {"status": "diverged", "diverged_at": f"diverged at epoch {epoch}, step {step}",
                         "epoch": epoch, "config_hash": cfg.config_hash()}
                if verbose:
                    print(f"[{cfg.run_name}] {final['diverged_at']}: non-finite loss, stopping", flush=True)
                ctx.report(final, {"status": "diverged", "final": final, "config_hash": cfg.config_hash()},
                           f"epoch={epoch:04d}-diverged")
                return final
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or float("inf"))
            optimizer.step()
            losses.append(loss.item())
            grad_norms.append(float(grad_norm))
            n_views += b * v * world
            step += 1
        seconds = time.perf_counter() - t0
        # per-rank shard sizes every epoch; in an attempt's first epoch also how the shards overlap
        first = epoch == start_epoch
        shards = _gather_objects((np.concatenate(seen_index) if seen_index else np.zeros(0, np.int64)) if first
                                 else sum(len(i) for i in seen_index), world)
        metrics: dict[str, Any] = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"),
                                   "lr": lr_at(max(step - 1, 0), total_steps, warmup_steps, base_lr,
                                               cfg.optim.min_lr_ratio),
                                   "views_per_s": n_views / max(seconds, 1e-9), "epoch_seconds": seconds,
                                   "grad_norm": float(np.mean(grad_norms)) if grad_norms else float("nan"),
                                   "bad_images": len(bad_seen), "status": "running",
                                   "samples_per_rank": ",".join(str(x if isinstance(x, int) else len(x))
                                                                for x in shards)}
        if first:
            all_index = np.concatenate([np.asarray(x).reshape(-1) for x in shards])
            metrics.update(shard_overlap=int(all_index.size - np.unique(all_index).size),
                           worker_nodes=",".join(w["node_id"] for w in workers),
                           worker_pids=",".join(str(w["pid"]) for w in workers), resumed_from_epoch=start_epoch)
        last = epoch == cfg.optim.epochs - 1
        if rank == 0:
            if last:
                metrics.update(evaluate(model, cfg, train_eval, test, num_classes, device, probe=True))
            elif cfg.eval.online_knn:
                metrics["knn_top1"] = evaluate(model, cfg, bank, test, num_classes, device, probe=False)["knn_top1"]
            if last:
                metrics.update(_run_record(cfg, world, epoch), status="finished", resumed_from_epoch=start_epoch,
                               worker_nodes=",".join(w["node_id"] for w in workers),
                               worker_pids=",".join(str(w["pid"]) for w in workers))
                final = metrics
            history.append(metrics)
            _append_jsonl(Path(run_dir) / "metrics.jsonl", metrics)
            if verbose:
                print(_progress_line(cfg, metrics), flush=True)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
                 "history": history, "torch_rng": torch.get_rng_state(), "config_hash": cfg.config_hash(),
                 "final": final}
        ctx.report(metrics, state, f"epoch={epoch:04d}")
    return final


def _run_record(cfg: RunConfig, world: int, epoch: int) -> dict[str, Any]:
    """What every result row records besides the metrics."""
    return {"eval_epoch": epoch, "seed": cfg.seed, "world_size": world, "global_batch": cfg.optim.batch_size,
            "effective_lr": cfg.optim.effective_lr(), "lr_scaling": cfg.optim.lr_scaling,
            "config_hash": cfg.config_hash(), "loss_name": cfg.loss.name}


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}


def _append_jsonl(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(_scalars(row)) + "\n")


def _progress_line(cfg: RunConfig, m: dict) -> str:
    knn = f" knn {m['knn_top1']:.1f}%" if "knn_top1" in m else ""
    probe = f" probe {m['probe_top1']:.1f}%" if "probe_top1" in m else ""
    return (f"[{cfg.run_name}] epoch {m['epoch'] + 1}/{cfg.optim.epochs} loss {m['loss']:.4f} lr {m['lr']:.4g} "
            f"{m['views_per_s']:.0f} views/s{knn}{probe}")


def fit(cfg: RunConfig, source: ImageSource | None = None, *, verbose: bool = True, max_failures: int = 0,
        torch_threads: int | None = None, callbacks: list | None = None, tune_trial: bool = False,
        placement_strategy: str = "PACK") -> RunResult:
    """Pretrain + evaluate one config; resumes if the run (named by config hash) has a checkpoint.

    ``num_workers>=1``: a TorchTrainer worker group (DDP) placed by ``placement_strategy``
    (``SPREAD``/``STRICT_SPREAD`` put workers on different nodes), restarted from the last
    checkpoint up to ``max_failures`` times. ``num_workers=0``: the same loop in this process, with
    no worker start-up (the laptop path and the Tune-trial path; ``tune_trial`` reports each epoch
    and its checkpoint to Tune). ``cfg.storage_path`` may be a local/shared path or a URI
    (``s3://``, ``gs://``); with a URI, the run's own log files go under ``LOCAL_RUNS_DIR``.
    """
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=verbose)
    source = source or load_source(cfg.data)
    train_size = source.train.count()
    if train_size == 0:
        raise ValueError(f"training set of {source.description} is empty")
    if train_size < cfg.optim.batch_size:
        raise ValueError(f"training set has {train_size} images, fewer than optim.batch_size={cfg.optim.batch_size}")
    remote = "://" in cfg.storage_path
    storage = cfg.storage_path if remote else os.path.abspath(cfg.storage_path)
    run_dir = os.path.join(os.path.expanduser(LOCAL_RUNS_DIR) if remote else storage, cfg.run_name)
    os.makedirs(run_dir, exist_ok=True)
    write_json_atomic(Path(run_dir) / "config.json", {"config": cfg.to_dict(), "config_hash": cfg.config_hash()})
    loop_config = {"cfg": cfg.to_dict(), "num_classes": source.num_classes, "train_size": train_size,
                   "run_dir": run_dir, "verbose": verbose, "torch_threads": torch_threads or torch.get_num_threads()}
    if cfg.num_workers == 0:
        datasets = {"train": source.train, "train_eval": source.train, "test": source.test}
        metrics = train_loop(loop_config, InProcessContext(datasets, run_dir, tune_trial))
        return _finish(run_dir, metrics)
    datasets = {"train_eval": source.train, "test": source.test}
    if cfg.data.augment_in == "ray_data":  # rank 0 splits each epoch's augmented stream itself
        loop_config["train_dataset"] = source.train
    else:
        datasets["train"] = source.train
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     placement_strategy=placement_strategy),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"] if "train" in datasets else []),
        run_config=ray.train.RunConfig(name=cfg.run_name, storage_path=storage,
                                       failure_config=FailureConfig(max_failures=max_failures),
                                       checkpoint_config=CheckpointConfig(num_to_keep=2),
                                       callbacks=callbacks or None),
    )
    result = trainer.fit()
    return _finish(run_dir, dict(result.return_value or {}) or dict(result.metrics or {}))


def _finish(run_dir: str, metrics: dict) -> RunResult:
    write_json_atomic(Path(run_dir) / "summary.json", metrics)
    return RunResult(metrics, run_dir, metrics.get("status", "finished"))


SUMMARY_KEYS = ("status", "epoch", "loss", "knn_top1", "knn_top5", "probe_top1", "probe_top5", "views_per_s",
                "world_size", "global_batch", "effective_lr", "config_hash")


def format_summary(cfg: RunConfig, result: RunResult) -> str:
    rows = [(k, result.metrics[k]) for k in SUMMARY_KEYS if k in result.metrics]
    width = max(len(k) for k, _ in rows) if rows else 10
    lines = [f"run {cfg.run_name}  ({result.run_dir})"]
    lines += [f"  {k:<{width}}  {v:.4g}" if isinstance(v, float) else f"  {k:<{width}}  {v}" for k, v in rows]
    if "diverged_at" in result.metrics:
        lines.append(f"  {result.metrics['diverged_at']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML run config (defaults apply to missing fields)")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster address")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    args = parser.parse_args(argv)
    try:
        cfg = RunConfig.from_yaml(args.config, args.overrides) if args.config else \
            RunConfig().with_overrides(args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ray.init(address=args.address, include_dashboard=False) if args.address else \
        ray.init("local", num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False)
    try:
        result = fit(cfg)
    finally:
        ray.shutdown()
    print(format_summary(cfg, result))
    return 0 if result.status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
