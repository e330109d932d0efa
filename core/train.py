"""Pretraining inside a Ray Train ``TorchTrainer`` (Train V2), then the evaluation stage.

``fit(cfg)`` runs one config: ``num_workers=0`` runs the loop in this process (no worker start-up:
the laptop and small-study path); ``num_workers>=1`` starts a DDP worker group (gloo on CPU, nccl
on GPU). The run is named by the config hash, so re-running the same config resumes from its last
checkpoint and a different config never picks up another's. The loop's pieces live in
``core.loop``; the frozen-encoder evaluation in ``core.evaluate``.

CLI: ``python -m core.train --config FILE.yaml [section.key=value ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.tune
import torch
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    DataConfig,
    FailureConfig,
    ScalingConfig,
)
from ray.train.torch import TorchTrainer
from tqdm.auto import tqdm

from core import evaluate as stage
from core.config import CONFIG_HELP, ConfigError, RunConfig, layered
from core.data.pipeline import epoch_dataset, make_views, quiet_ray_data, train_batches
from core.data.sources import ImageSource, TrainRows, as_dataset, load_source
from core.distributed import is_distributed
from core.io import (
    DirectoryLock,
    LockedError,
    ScalarBoard,
    append_jsonl,
    remove_paths,
    unlocked_entries,
    write_atomic,
    write_json_atomic,
)
from core.loop import (
    BadImageCounter,
    Diverged,
    ResumePoint,
    Stepper,
    choose_state,
    diverged_record,
    load_state_file,
    resume_point,
    train_epoch,
)
from core.losses import build_loss
from core.losses.registry import loss_family
from core.models import build_model
from core.optim import build_optimizer, lr_at
from core.results import EpochStats, RunResult, RunStatus, scalars

STATE_FILE = "state.pt"
LOCAL_STATE_FILE = "latest_state.pt"  # in-process (num_workers=0) checkpoint in the run directory
LOCAL_RUNS_DIR = "~/.cache/contrastive-platform/runs"  # run logs when storage_path is a URI
__all__ = ["fit", "RunResult", "RunStatus", "train_loop", "write_json_atomic", "format_summary"]


def _gather_objects(obj: Any, world: int) -> list[Any]:
    """``obj`` from every worker, in rank order (just ``[obj]`` in one process)."""
    if world == 1 or not is_distributed():
        return [obj]
    out: list[Any] = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


class TrainContext:
    """What the loop needs from Ray Train inside a TorchTrainer worker."""

    def __init__(self, train_rows: TrainRows) -> None:
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.train_rows = train_rows

    def dataset(self, name: str):
        return ray.train.get_dataset_shard(name)

    def epoch_stream(self, cfg: RunConfig, epoch: int):
        """This rank's share of the epoch's training stream: rank 0 builds the epoch's dataset (its
        own shuffled order and seeds) and splits it into one iterator per rank."""
        if self.world == 1:
            return epoch_dataset(self.train_rows, cfg, epoch)
        iterators: list[Any] = [None] * self.world
        if self.rank == 0:
            iterators = epoch_dataset(self.train_rows, cfg, epoch).streaming_split(self.world, equal=True)
        torch.distributed.broadcast_object_list(iterators, src=0)
        return iterators[self.rank]

    def load_state(self, device: torch.device) -> dict | None:
        checkpoint = ray.train.get_checkpoint()
        if not checkpoint:
            return None
        with checkpoint.as_directory() as d:
            return load_state_file([os.path.join(d, STATE_FILE)], device)

    def report(self, metrics: dict, state: dict, dir_name: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if self.rank == 0:
                torch.save(state, os.path.join(d, STATE_FILE))
                ckpt = Checkpoint.from_directory(d)
            ray.train.report(scalars(metrics), checkpoint=ckpt, checkpoint_dir_name=dir_name)


class InProcessContext:
    """``num_workers=0``: the loop runs in this process (a laptop run, or one Tune trial) on the
    full datasets. The checkpoint is the run directory's state file (write-then-rename); inside a
    Tune trial (``tune_trial=True``) each epoch is also reported with the state as a Tune
    checkpoint, so ASHA sees every epoch and a trial retried on another node (or after a driver
    restart) resumes from Tune's storage, which may be shared or an object store. Resuming takes
    whichever of the two is further along."""

    rank, world = 0, 1

    def __init__(self, source: ImageSource, run_dir: str, tune_trial: bool = False) -> None:
        self.source, self.tune_trial = source, tune_trial
        self.state_path = os.path.join(run_dir, LOCAL_STATE_FILE)

    def dataset(self, name: str):
        return {"train_eval": self.source.train_eval, "test": self.source.test}[name]

    def epoch_stream(self, cfg: RunConfig, epoch: int):
        return epoch_dataset(self.source.train_rows, cfg, epoch)

    def load_state(self, device: torch.device) -> dict | None:
        states = []
        if self.tune_trial and (checkpoint := ray.tune.get_checkpoint()):
            with checkpoint.as_directory() as d:
                states.append(load_state_file([os.path.join(d, STATE_FILE)], device))
        states.append(load_state_file([self.state_path, self.state_path + ".previous"], device))
        return choose_state(states)

    def report(self, metrics: dict, state: dict, dir_name: str) -> None:
        # The local file is written synchronously, before Tune hears of the epoch: a driver killed
        # before Tune's next experiment snapshot restores the trial as unfinished, and the rerun
        # must find this file to return at once instead of training again.
        if os.path.exists(self.state_path):  # keep the previous good state: a torn newest one falls back to it
            os.replace(self.state_path, self.state_path + ".previous")
        write_atomic(self.state_path, partial(torch.save, state))
        if self.tune_trial:
            with tempfile.TemporaryDirectory() as d:
                torch.save(state, os.path.join(d, STATE_FILE))
                ray.tune.report(scalars(metrics), checkpoint=ray.tune.Checkpoint.from_directory(d))


def _device(cfg: RunConfig) -> torch.device:
    if cfg.use_gpu and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _precision(cfg: RunConfig, device: torch.device) -> str:
    """``auto``: bf16 autocast on a GPU (the losses upcast to fp32), fp32 on the CPU."""
    if cfg.precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return cfg.precision


def _make_stepper(cfg: RunConfig, num_classes: int, train_size: int, world: int, device: torch.device) -> Stepper:
    """Model, loss, optimiser and schedule of a run, wired into a :class:`Stepper`."""
    model = build_model(cfg, num_classes).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net = ray.train.torch.prepare_model(model) if world > 1 else model
    if cfg.optim.compile:
        net = torch.compile(net)
    steps_per_epoch = max(1, train_size // cfg.optim.batch_size)
    schedule = partial(lr_at, total_steps=steps_per_epoch * cfg.optim.epochs,
                       warmup_steps=steps_per_epoch * cfg.optim.warmup_epochs, base_lr=cfg.optim.effective_lr(),
                       min_lr_ratio=cfg.optim.min_lr_ratio)
    return Stepper(net=net, model=model, loss_fn=build_loss(cfg.loss), family=loss_family(cfg.loss.name),
                   optimizer=build_optimizer(model, cfg.optim), device=device,
                   make_views=lambda batch, epoch: make_views(batch, cfg, epoch, device),
                   lr_at=schedule, grad_clip=cfg.optim.grad_clip, precision=_precision(cfg, device), world=world,
                   channels_last=device.type == "cuda")


def _restore(stepper: Stepper, resume: ResumePoint) -> None:
    state = resume.state
    if state:
        stepper.model.load_state_dict(state["model"])
        stepper.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])


def _epoch_row(stats: EpochStats, shards: list, first: bool, workers: list[dict], start_epoch: int) -> dict[str, Any]:
    """The metrics row of an epoch: its stats, per-rank shard sizes and, in an attempt's first
    epoch, how the ranks' shards overlap and where the workers ran."""
    row: dict[str, Any] = {**stats.row(), "status": RunStatus.RUNNING,
                           "samples_per_rank": ",".join(str(x if isinstance(x, int) else len(x)) for x in shards)}
    if first:
        all_index = np.concatenate([np.asarray(x).reshape(-1) for x in shards])
        row.update(shard_overlap=int(all_index.size - np.unique(all_index).size), resumed_from_epoch=start_epoch,
                   worker_nodes=",".join(w["node_id"] for w in workers),
                   worker_pids=",".join(str(w["pid"]) for w in workers))
    return row


def _run_record(cfg: RunConfig, world: int, epoch: int, start_epoch: int, workers: list[dict]) -> dict[str, Any]:
    """What every final result row records besides the metrics."""
    return {"eval_epoch": epoch, "seed": cfg.seed, "world_size": world, "global_batch": cfg.optim.batch_size,
            "effective_lr": cfg.optim.effective_lr(), "lr_scaling": cfg.optim.lr_scaling,
            "config_hash": cfg.config_hash(), "loss_name": cfg.loss.name, "status": RunStatus.FINISHED,
            "resumed_from_epoch": start_epoch, "worker_nodes": ",".join(w["node_id"] for w in workers),
            "worker_pids": ",".join(str(w["pid"]) for w in workers)}


def _fail_if_not_finite(metrics: dict[str, Any]) -> dict[str, Any]:
    """A run whose headline metrics are not finite is ``failed``, never ``finished``."""
    nonfinite = sorted(k for k in ("knn_top1", "probe_top1", "probe_ece", "probe_nll", "corruption_acc", "mce")
                       if k in metrics and not np.isfinite(metrics[k]))
    if nonfinite:
        metrics.update(status=RunStatus.FAILED, error=f"non-finite evaluation metrics: {', '.join(nonfinite)}")
    return metrics


def train_loop(config: dict, ctx: TrainContext | InProcessContext | None = None) -> dict[str, Any]:
    """The per-worker loop (every Train worker runs it; with ``num_workers=0`` it runs in-process):
    resume, train epoch by epoch, report and checkpoint each epoch, evaluate at the end (rank 0)."""
    cfg = RunConfig.from_dict(config["cfg"])
    num_classes, train_size, run_dir = config["num_classes"], config["train_size"], config["run_dir"]
    ctx = ctx or TrainContext(config["train_rows"])
    rank, world = ctx.rank, ctx.world
    verbose = config.get("verbose", True) and rank == 0
    torch.set_num_threads(max(1, config.get("torch_threads", torch.get_num_threads())))
    quiet_ray_data()
    torch.manual_seed(cfg.seed)
    device = _device(cfg)
    if device.type == "cpu":  # with the platform's data order, a CPU run repeats bit for bit (same threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    workers = _gather_objects({"node_id": node_id, "pid": os.getpid()}, world)  # where each rank runs
    stepper = _make_stepper(cfg, num_classes, train_size, world, device)
    resume = resume_point(ctx.load_state(device), cfg)
    if resume.final is not None:
        return resume.final
    _restore(stepper, resume)
    if verbose and resume.state:
        print(f"[{cfg.run_name}] resumed from epoch {resume.start_epoch - 1}", flush=True)
    online = None
    if rank == 0 and cfg.eval.online_knn:  # small fixed subsets, held for the whole run
        online = (stage.bounded_images(ctx.dataset("train_eval")), stage.bounded_images(ctx.dataset("test")))
    step, history, final = resume.step, resume.history, {}
    board = ScalarBoard(run_dir) if rank == 0 else None
    for epoch in range(resume.start_epoch, cfg.optim.epochs):
        stepper.net.train()
        bad = BadImageCounter(cfg.data.max_bad_fraction)
        try:
            batches = train_batches(ctx.epoch_stream(cfg, epoch), cfg.optim.batch_size // world)
            if verbose and sys.stderr.isatty():  # progress within long epochs, on a terminal only
                batches = tqdm(batches, total=train_size // cfg.optim.batch_size, desc=f"epoch {epoch + 1}",
                               unit="batch", leave=False, dynamic_ncols=True)
            stats, step, index = train_epoch(stepper, batches, epoch, step, bad)
        except Diverged as exc:
            final = diverged_record(cfg, exc)
            if verbose:
                print(f"[{cfg.run_name}] {exc}: non-finite loss, stopping", flush=True)
            ctx.report(final, {"status": RunStatus.DIVERGED.value, "final": scalars(final),
                               "config_hash": cfg.config_hash()}, f"epoch={epoch:04d}-diverged")
            return scalars(final)
        first = epoch == resume.start_epoch
        shards = _gather_objects(index if first else len(index), world)
        metrics = _epoch_row(stats, shards, first, workers, resume.start_epoch)
        last = epoch == cfg.optim.epochs - 1
        if rank == 0:
            if last:
                metrics.update(stage.evaluate(stepper.model, cfg, ctx.dataset("train_eval"), ctx.dataset("test"),
                                              num_classes, device))
                metrics.update(_run_record(cfg, world, epoch, resume.start_epoch, workers))
                final = scalars(_fail_if_not_finite(metrics))
            elif online is not None:
                metrics["knn_top1"] = stage.online_knn(stepper.model, cfg, *online, num_classes, device)
            history.append(scalars(metrics))
            append_jsonl(Path(run_dir) / "metrics.jsonl", scalars(metrics))
            board.write(scalars(metrics), epoch)
            if verbose:
                print(_progress_line(cfg, metrics), flush=True)
        state = {"model": stepper.model.state_dict(), "optimizer": stepper.optimizer.state_dict(), "epoch": epoch,
                 "step": step, "history": history, "torch_rng": torch.get_rng_state(),
                 "config_hash": cfg.config_hash(), "final": final}
        ctx.report(metrics, state, f"epoch={epoch:04d}")
    if board is not None:
        board.close()
    return final


def _progress_line(cfg: RunConfig, m: dict) -> str:
    knn = f" knn {m['knn_top1']:.1f}%" if "knn_top1" in m else ""
    probe = f" probe {m['probe_top1']:.1f}%" if "probe_top1" in m else ""
    return (f"[{cfg.run_name}] epoch {m['epoch'] + 1}/{cfg.optim.epochs} loss {m['loss']:.4f} lr {m['lr']:.4g} "
            f"{m['views_per_s']:.0f} views/s {m['classes_per_batch']:.1f} classes/batch{knn}{probe}")


def _run_dir(cfg: RunConfig) -> tuple[str, str]:
    """(Train storage path, this run's log directory)."""
    remote = "://" in cfg.storage_path
    storage = cfg.storage_path if remote else os.path.abspath(cfg.storage_path)
    return storage, os.path.join(os.path.expanduser(LOCAL_RUNS_DIR) if remote else storage, cfg.run_name)


def fit(cfg: RunConfig, source: ImageSource | None = None, *, verbose: bool = True, max_failures: int = 0,
        torch_threads: int | None = None, callbacks: list | None = None, tune_trial: bool = False,
        placement_strategy: str = "PACK", overwrite: bool = False) -> RunResult:
    """Pretrain + evaluate one config; resumes if the run (named by config hash) has a checkpoint.

    ``num_workers>=1``: a TorchTrainer worker group (DDP) placed by ``placement_strategy``
    (``SPREAD``/``STRICT_SPREAD`` put workers on different nodes), restarted from the last
    checkpoint up to ``max_failures`` times. ``num_workers=0``: the same loop in this process, with
    no worker start-up (the laptop path and the Tune-trial path; ``tune_trial`` reports each epoch
    and its checkpoint to Tune). ``cfg.storage_path`` may be a local/shared path or a URI
    (``s3://``, ``gs://``); with a URI, the run's own log files go under ``LOCAL_RUNS_DIR``.
    ``overwrite`` deletes an existing run of this config first (local storage only).
    """
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=verbose)
    quiet_ray_data()
    if cfg.use_gpu:  # never fall back to the CPU silently, nor wait forever for a GPU that is not there
        if cfg.num_workers == 0 and not torch.cuda.is_available():
            raise ValueError("use_gpu=true but torch sees no CUDA device here; set use_gpu=false or run on a GPU")
        gpus = ray.cluster_resources().get("GPU", 0)
        if cfg.num_workers and gpus < cfg.num_workers:
            raise ValueError(f"use_gpu=true with num_workers={cfg.num_workers} but the Ray cluster has {gpus:g} GPU(s)")
    source = source or load_source(cfg.data, cfg.seed)
    train_size = source.train_size
    if train_size == 0:
        raise ValueError(f"training set of {source.description} is empty")
    if train_size < cfg.optim.batch_size:
        raise ValueError(f"training set has {train_size} images, fewer than optim.batch_size={cfg.optim.batch_size}")
    storage, run_dir = _run_dir(cfg)
    os.makedirs(run_dir, exist_ok=True)
    with DirectoryLock(run_dir, "run directory"):  # a second identical run refuses instead of interleaving
        if overwrite:
            if "://" in storage:
                raise ValueError(f"--overwrite does not delete object storage; remove {storage}/{cfg.run_name} "
                                 f"yourself or choose another storage_path")
            remove_paths(unlocked_entries(run_dir))  # all but the lock this process holds
        return _fit_locked(cfg, source, train_size, storage, run_dir, verbose=verbose, max_failures=max_failures,
                           torch_threads=torch_threads, callbacks=callbacks, tune_trial=tune_trial,
                           placement_strategy=placement_strategy)


def _fit_locked(cfg: RunConfig, source: ImageSource, train_size: int, storage: str, run_dir: str, *, verbose: bool,
                max_failures: int, torch_threads: int | None, callbacks: list | None, tune_trial: bool,
                placement_strategy: str) -> RunResult:
    write_json_atomic(Path(run_dir) / "config.json", {"config": cfg.to_dict(), "config_hash": cfg.config_hash()})
    loop_config = {"cfg": cfg.to_dict(), "num_classes": source.num_classes, "train_size": train_size,
                   "run_dir": run_dir, "verbose": verbose, "torch_threads": torch_threads or torch.get_num_threads()}
    if cfg.num_workers == 0:
        return _finish(run_dir, train_loop(loop_config, InProcessContext(source, run_dir, tune_trial)))
    loop_config["train_rows"] = source.train_rows  # rank 0 builds and splits each epoch's stream
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     placement_strategy=placement_strategy),
        datasets={"train_eval": as_dataset(source.train_eval), "test": as_dataset(source.test)},
        dataset_config=DataConfig(datasets_to_split=[]),
        run_config=ray.train.RunConfig(name=cfg.run_name, storage_path=storage,
                                       failure_config=FailureConfig(max_failures=max_failures),
                                       checkpoint_config=CheckpointConfig(num_to_keep=2),
                                       callbacks=callbacks or None),
    )
    result = trainer.fit()
    return _finish(run_dir, dict(result.return_value or {}) or dict(result.metrics or {}))


def finished_run(cfg: RunConfig) -> RunResult | None:
    """The result of this config's run if it already finished (its ``summary.json``), else None."""
    run_dir = _run_dir(cfg)[1]
    try:
        metrics = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return RunResult(metrics, run_dir, RunStatus.FINISHED) if metrics.get("status") == RunStatus.FINISHED else None


def _finish(run_dir: str, metrics: dict) -> RunResult:
    metrics = scalars(metrics)
    write_json_atomic(Path(run_dir) / "summary.json", metrics)
    return RunResult(metrics, run_dir, RunStatus(metrics.get("status", RunStatus.FINISHED)))


SUMMARY_KEYS = ("status", "epoch", "loss", "knn_top1", "knn_top5", "probe_top1", "probe_top5", "views_per_s",
                "classes_per_batch", "world_size", "global_batch", "effective_lr", "config_hash")


def format_summary(cfg: RunConfig, result: RunResult) -> str:
    rows = [(k, result.metrics[k]) for k in SUMMARY_KEYS if k in result.metrics]
    width = max(len(k) for k, _ in rows) if rows else 10
    lines = [f"run {cfg.run_name}  ({result.run_dir})"]
    lines += [f"  {k:<{width}}  {v:.4g}" if isinstance(v, float) else f"  {k:<{width}}  {v}" for k, v in rows]
    if "diverged_at" in result.metrics:
        lines.append(f"  {result.metrics['diverged_at']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, epilog=CONFIG_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[], metavar="FILE.yaml",
                        help="YAML run config layered onto the defaults (repeatable: later files win)")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster address")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.add_argument("--overwrite", action="store_true",
                        help="train again from scratch when this config's run already exists (its files are deleted)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = layered(RunConfig(), args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    earlier = finished_run(cfg)
    if earlier is not None and not args.overwrite:
        print(f"finished earlier: {earlier.run_dir}; --overwrite to train again\n{format_summary(cfg, earlier)}")
        return 0
    # locally, logical CPUs are oversubscribed 2x (as studies do): Train workers holding every core
    # must not leave Ray Data's decode tasks waiting for a CPU slot forever
    ray.init(address=args.address, include_dashboard=False) if args.address else \
        ray.init("local", num_cpus=2 * (os.cpu_count() or 2), include_dashboard=False)
    try:
        result = fit(cfg, overwrite=args.overwrite)
    except (ValueError, LockedError) as exc:  # bad data, a locked run directory, no GPU: named, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        ray.shutdown()
    print(format_summary(cfg, result))
    return 0 if result.status == RunStatus.FINISHED else 1


if __name__ == "__main__":
    sys.exit(main())
