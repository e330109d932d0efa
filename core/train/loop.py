"""The per-worker training loop: every Train worker runs :func:`train_loop` (with ``num_workers=0``
it runs in the calling process). It resumes, trains epoch by epoch, reports and checkpoints each
epoch, and rank 0 runs the evaluation stage after the last one."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import ray
import torch
from tqdm.auto import tqdm

from core.config import RunConfig
from core.data.bad_images import BadImages
from core.data.pipeline import make_views, quiet_ray_data, train_batches
from core.data.sources import TrainRows
from core.eval import stage
from core.eval.features import NonFiniteFeatures
from core.io import ScalarBoard, append_jsonl
from core.losses import build_loss, head_of
from core.losses.dist import gather_objects
from core.losses.registry import loss_family
from core.metrics import HEADLINE
from core.models import build_model
from core.results import EpochStats, RunStatus, scalars
from core.runs.checkpoint import ResumePoint, TrainState, resume_point
from core.runs.identity import config_hash, run_name
from core.runs.rundir import METRICS_FILE, RunDir, epoch_dir_name
from core.runs.storage import StoredRun
from core.train.context import InProcessContext, WorkerContext
from core.train.optim import build_optimizer, lr_at
from core.train.step import Diverged, Stepper, check_weights, train_epoch

EVALUATING = "evaluating"  # the word of the line that says the evaluation starts (benchmarks watch for it)


@dataclass(frozen=True)
class LoopSpec:
    """What every worker of one run needs (``train_rows``: a worker group's rank 0 builds each
    epoch's stream from it)."""

    cfg: RunConfig
    num_classes: int
    train_size: int
    run_dir: str
    verbose: bool = True
    torch_threads: int = 1
    train_rows: TrainRows | None = None
    corruption_cache: str | None = None  # where the corrupted evaluation split is shared between nodes
    mirror: str | None = None  # the run's URI in object storage: a worker group's rank 0 puts its log there


@dataclass
class LoopOutcome:
    """A run's final metrics row and its evaluation records (empty until the run has a final row)."""

    metrics: dict = field(default_factory=dict)
    records: dict = field(default_factory=dict)


def train_loop(config: dict, ctx: WorkerContext | InProcessContext | None = None) -> LoopOutcome:
    """The loop of one worker. ``config["spec"]`` is the :class:`LoopSpec` (a TorchTrainer passes its
    ``train_loop_config`` dict); ``ctx`` is given in-process, built from Ray Train in a worker."""
    spec: LoopSpec = config["spec"]
    ctx = ctx or WorkerContext(spec.train_rows)
    device = _prepare_process(spec)
    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    workers = gather_objects({"node_id": node, "pid": os.getpid()}, ctx.world)  # where each rank runs
    stepper = make_stepper(spec.cfg, spec.num_classes, spec.train_size, ctx.world, device)
    resume = resume_point(ctx.load_state(device), spec.cfg)
    if resume.final is not None:
        return LoopOutcome(resume.final, resume.records)
    restore(stepper, resume.state)
    epochs = _Epochs(spec, ctx, stepper, resume, workers, device)
    try:
        return epochs.run()
    finally:
        epochs.close()


class _Epochs:
    """The epochs of one attempt of a run, from its resume point to the end (or a divergence)."""

    def __init__(self, spec: LoopSpec, ctx, stepper: Stepper, resume: ResumePoint, workers: list[dict],
                 device: torch.device) -> None:
        self.spec, self.cfg, self.ctx, self.stepper, self.device = spec, spec.cfg, ctx, stepper, device
        self.start, self.step, self.history, self.workers = resume.start_epoch, resume.step, resume.history, workers
        self.verbose = spec.verbose and ctx.rank == 0
        if self.verbose and resume.state:
            print(f"[{run_name(self.cfg)}] resumed from epoch {self.start - 1}", flush=True)
        self.online = None
        if ctx.rank == 0 and self.cfg.eval.online_knn:  # small fixed subsets, held for the whole run
            self.online = tuple(stage.bounded_images(ctx.dataset(split), spec.num_classes, seed=self.cfg.seed)
                                for split in ("train_eval", "test"))
        if ctx.rank == 0:  # epochs past the checkpoint are trained again: their old rows go
            # a new worker group's rank 0 may be on a node that never held the log
            StoredRun(RunDir(spec.run_dir), spec.mirror).pull()
            RunDir(spec.run_dir).truncate_metrics(self.start)
        self.board = ScalarBoard(spec.run_dir) if ctx.rank == 0 else None

    def run(self) -> LoopOutcome:
        outcome = LoopOutcome()
        for epoch in range(self.start, self.cfg.optim.epochs):
            try:
                stats, index = self._train(epoch)
                outcome = self._record(epoch, stats, index)
            except Diverged as exc:
                return self._diverged(epoch, exc)
            except NonFiniteFeatures:
                return self._diverged(epoch, Diverged(epoch, self.step - 1, "non-finite features"))
        return outcome

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
            self._mirror_log(board=True)

    def _mirror_log(self, board: bool = False) -> None:
        """A worker group's rank 0 may run on another node than the driver, whose run directory is the one
        that counts: what rank 0 writes there (the metrics log, the TensorBoard scalars) goes to the run's
        store, from which the driver fetches it (in process, the driver wrote them itself)."""
        # spec.mirror is set for worker groups only (in process, the context pushes the run)
        stored = StoredRun(RunDir(self.spec.run_dir), self.spec.mirror)
        stored.push(stored.run.board_files() if board else [METRICS_FILE])

    def _train(self, epoch: int) -> tuple[EpochStats, np.ndarray]:
        world = self.ctx.world
        self.stepper.net.train()
        bad = BadImages(self.cfg.data.max_bad_fraction, expected=self.spec.train_size // world)
        batches = train_batches(self.ctx.epoch_stream(self.cfg, epoch), self.cfg.optim.batch_size // world)
        if self.verbose and sys.stderr.isatty():  # progress within long epochs, on a terminal only
            batches = tqdm(batches, total=self.spec.train_size // self.cfg.optim.batch_size, desc=f"epoch {epoch + 1}",
                           unit="batch", leave=False, dynamic_ncols=True)
        stats, self.step, index = train_epoch(self.stepper, batches, epoch, self.step, bad)
        check_weights(self.stepper.model, epoch, self.step)
        return stats, index

    def _diverged(self, epoch: int, exc: Diverged) -> LoopOutcome:
        final = scalars({"status": RunStatus.DIVERGED, "diverged_at": str(exc), "epoch": exc.epoch,
                         "config_hash": config_hash(self.cfg)})
        if self.verbose:
            print(f"[{run_name(self.cfg)}] {exc}: {exc.cause}, stopping", flush=True)
        state = TrainState(config_hash(self.cfg), epoch=exc.epoch, final=final, status=RunStatus.DIVERGED.value)
        self.ctx.report(final, state, epoch_dir_name(epoch, diverged=True))
        return LoopOutcome(final)

    def _record(self, epoch: int, stats: EpochStats, index: np.ndarray) -> LoopOutcome:
        """Gather the epoch's row, score it (rank 0), log it, checkpoint and report it."""
        first = epoch == self.start
        shards = gather_objects(index if first else len(index), self.ctx.world)
        metrics = epoch_row(stats, shards, first, self.workers, self.start)
        outcome = LoopOutcome()
        if self.ctx.rank == 0:
            outcome = self._score(epoch, metrics)
            self.history.append(scalars(metrics))
            append_jsonl(RunDir(self.spec.run_dir).metrics, scalars(metrics))
            self.board.write(scalars(metrics), epoch)
            self._mirror_log()
            if self.verbose:
                print(progress_line(self.cfg, metrics), flush=True)
        model = self.stepper.model
        state = TrainState(config_hash(self.cfg), epoch=epoch, step=self.step, history=self.history,
                           final=outcome.metrics, records=outcome.records, model=model.state_dict(),
                           optimizer=self.stepper.optimizer.state_dict(), torch_rng=torch.get_rng_state())
        self.ctx.report(metrics, state, epoch_dir_name(epoch))
        return outcome

    def _score(self, epoch: int, metrics: dict) -> LoopOutcome:
        """The evaluation after the last epoch (the final row); the online kNN after the others."""
        cfg, ctx = self.cfg, self.ctx
        if epoch == cfg.optim.epochs - 1:
            if self.verbose:  # the evaluation of a large split takes a while: say what is happening
                print(f"[{run_name(cfg)}] trained {epoch + 1} epochs; {EVALUATING} the frozen encoder "
                      f"({self.spec.train_size:,} training images and the test split)", flush=True)
            evaluation = stage.evaluate(self.stepper.model, cfg, ctx.dataset("train_eval"), ctx.dataset("test"),
                                        self.spec.num_classes, self.device, train_size=self.spec.train_size,
                                        corruption_cache=self.spec.corruption_cache, verbose=self.verbose)
            metrics.update(evaluation.scalars)
            metrics.update(run_record(cfg, ctx.world, epoch, self.start, self.workers))
            return LoopOutcome(scalars(fail_if_not_finite(metrics)), evaluation.records())
        if self.online is not None:
            metrics["knn_top1"] = stage.online_knn(self.stepper.model, cfg, *self.online, self.spec.num_classes,
                                                   self.device)
        return LoopOutcome()


def _prepare_process(spec: LoopSpec) -> torch.device:
    """Threads, logging, seeds and determinism of this process; returns the training device."""
    torch.set_num_threads(max(1, spec.torch_threads))
    quiet_ray_data()
    torch.manual_seed(spec.cfg.seed)
    device = training_device(spec.cfg)
    if device.type == "cpu":  # with the platform's data order, a CPU run repeats bit for bit (same threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
    return device


def training_device(cfg: RunConfig) -> torch.device:
    if cfg.use_gpu and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def precision(cfg: RunConfig, device: torch.device) -> str:
    """``auto``: bf16 autocast on a GPU (the losses upcast to fp32), fp32 on the CPU."""
    if cfg.precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return cfg.precision


def make_stepper(cfg: RunConfig, num_classes: int, train_size: int, world: int, device: torch.device) -> Stepper:
    """Model, loss, optimiser and schedule of a run, wired into a :class:`Stepper`."""
    model = build_model(cfg, num_classes, head_of(cfg)).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if cfg.model.sync_bn and world > 1:  # batch statistics over the global batch, not each worker's share
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = ray.train.torch.prepare_model(model) if world > 1 else model
    if cfg.optim.compile:
        net = torch.compile(net)
    steps_per_epoch = max(1, train_size // cfg.optim.batch_size)
    schedule = partial(lr_at, total_steps=steps_per_epoch * cfg.optim.epochs,
                       warmup_steps=steps_per_epoch * cfg.optim.warmup_epochs, base_lr=cfg.optim.effective_lr(),
                       min_lr_ratio=cfg.optim.min_lr_ratio)
    return Stepper(net=net, model=model, loss_fn=build_loss(cfg.loss, num_classes), family=loss_family(cfg.loss.name),
                   optimizer=build_optimizer(model, cfg.optim), device=device,
                   make_views=lambda batch, epoch: make_views(batch, cfg, epoch, device),
                   lr_at=schedule, grad_clip=cfg.optim.grad_clip, precision=precision(cfg, device), world=world,
                   channels_last=device.type == "cuda")


def restore(stepper: Stepper, state: TrainState | None) -> None:
    if state is not None:
        stepper.model.load_state_dict(state.model)
        stepper.optimizer.load_state_dict(state.optimizer)
        torch.set_rng_state(state.torch_rng)


def epoch_row(stats: EpochStats, shards: list, first: bool, workers: list[dict], start_epoch: int) -> dict[str, Any]:
    """The metrics row of an epoch: its stats, per-rank shard sizes and, in an attempt's first
    epoch, how the ranks' shards overlap and where the workers ran."""
    row: dict[str, Any] = {**stats.row(), "status": RunStatus.RUNNING,
                           "samples_per_rank": [x if isinstance(x, int) else len(x) for x in shards]}
    if first:
        all_index = np.concatenate([np.asarray(x).reshape(-1) for x in shards])
        row.update(shard_overlap=int(all_index.size - np.unique(all_index).size), resumed_from_epoch=start_epoch,
                   worker_nodes=[w["node_id"] for w in workers], worker_pids=[w["pid"] for w in workers])
    return row


def run_record(cfg: RunConfig, world: int, epoch: int, start_epoch: int, workers: list[dict]) -> dict[str, Any]:
    """What every final result row records besides the metrics."""
    return {"eval_epoch": epoch, "seed": cfg.seed, "world_size": world, "global_batch": cfg.optim.batch_size,
            "effective_lr": cfg.optim.effective_lr(), "lr_scaling": cfg.optim.lr_scaling,
            "config_hash": config_hash(cfg), "loss_name": cfg.loss.name, "status": RunStatus.FINISHED,
            "resumed_from_epoch": start_epoch, "worker_nodes": [w["node_id"] for w in workers],
            "worker_pids": [w["pid"] for w in workers]}


def fail_if_not_finite(metrics: dict[str, Any]) -> dict[str, Any]:
    """A run whose headline metrics are not finite is ``failed``, never ``finished``."""
    nonfinite = sorted(k for k in HEADLINE if k in metrics and not np.isfinite(metrics[k]))
    if nonfinite:
        metrics.update(status=RunStatus.FAILED, error=f"non-finite evaluation metrics: {', '.join(nonfinite)}")
    return metrics


def progress_line(cfg: RunConfig, m: dict) -> str:
    knn = f" knn {m['knn_top1']:.1f}%" if "knn_top1" in m else ""
    probe = f" probe {m['probe_top1']:.1f}%" if "probe_top1" in m else ""
    return (f"[{run_name(cfg)}] epoch {m['epoch'] + 1}/{cfg.optim.epochs} loss {m['loss']:.4f} lr {m['lr']:.4g} "
            f"{m['views_per_s']:.0f} views/s {m['classes_per_batch']:.1f} classes/batch{knn}{probe}")
