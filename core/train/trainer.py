"""Pretraining inside a Ray Train ``TorchTrainer`` (Train V2), then the evaluation stage.

``fit(cfg)`` runs one config: ``num_workers=0`` runs the loop in this process (no worker start-up:
the laptop and small-study path); ``num_workers>=1`` starts a DDP worker group (gloo on CPU, nccl
on GPU). The run is named by the config hash, so re-running the same config resumes from its last
checkpoint and a different config never picks up another's. The loop lives in ``core.train.loop``,
the run directory's format in ``core.runs.rundir`` and its checkpoints in ``core.runs.checkpoint``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import ray
import ray.train
import torch
from ray.train import CheckpointConfig, DataConfig, FailureConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from core.config import RunConfig
from core.data.budget import execution_options, run_store_bytes
from core.data.pipeline import quiet_ray_data
from core.data.sources import ImageSource, as_dataset, load_source
from core.errors import DataError, ResourceError
from core.eval.corrupted import check_corruptions, prepare_corruptions
from core.eval.rescore import rescore
from core.io import DirectoryLock, refuse_symlink, remove_paths, unlocked_entries
from core.models import check_backbone
from core.registry import SOURCES
from core.results import RunResult, RunStatus, scalars
from core.runs.rundir import RunDir
from core.runs.storage import RunPlace, place
from core.runtime import check_fits, run_cpus, start_ray
from core.train.context import InProcessContext
from core.train.loop import LoopOutcome, LoopSpec, train_loop, training_device


@dataclass(frozen=True)
class FitOptions:
    """How a run is executed (none of it changes what it computes)."""

    verbose: bool = True
    max_failures: int = 0  # worker-group restarts from the last checkpoint
    torch_threads: int | None = None
    callbacks: tuple = ()  # Ray Train callbacks (e.g. Tune's report callback)
    tune_trial: bool = False  # inside a Tune trial: every epoch reaches Tune (in process, or rank 0 of workers)
    placement_strategy: str = "PACK"  # SPREAD / STRICT_SPREAD put workers on different nodes
    overwrite: bool = False  # delete an existing run of this config first (local storage only)
    wait: bool = False  # wait for a run directory another process holds (trials sharing a training identity)
    worker_resources: dict = field(default_factory=dict)  # custom Ray resources per Train worker (num_workers > 0)
    corruption_cache: str | None = None  # a path or URI every node reaches holding the corrupted split, if built


def fit(cfg: RunConfig, source: ImageSource | None = None, options: FitOptions | None = None,
        **changes: Any) -> RunResult:
    """Pretrain + evaluate one config; resumes if the run (named by config hash) has a checkpoint.
    ``options`` says how it runs; ``changes`` are a shorthand for fields of it (``fit(cfg, verbose=False)``;
    an unknown one is a TypeError naming it). ``cfg.storage_path`` may be a local/shared path or a URI
    (``s3://``, ``gs://``); with a URI, the run's working copy is under ``LOCAL_RUNS_DIR``, mirrored to the store."""
    opts = replace(options or FitOptions(), **changes)
    if not ray.is_initialized() and needs_ray(cfg):
        start_ray(log_to_driver=opts.verbose, num_cpus=run_cpus(cfg.num_workers),
                  object_store_memory=run_store_bytes(cfg))
    quiet_ray_data()
    _check_resources(cfg, opts.worker_resources)
    preflight([cfg])  # a backbone or corruption root that cannot work fails before any data is read
    source = source or load_source(cfg.data, cfg.eval.test_limit)
    check_corruptions(cfg, source.test_size)  # and a suite too slow to generate for this many images
    if source.train_size == 0:
        raise DataError(f"training set of {source.description} is empty")
    if source.train_size < cfg.optim.batch_size:
        raise DataError(f"training set has {source.train_size} images, fewer than "
                        f"optim.batch_size={cfg.optim.batch_size}")
    where = place(cfg)
    refuse_symlink(where.run_dir, "run directory")
    os.makedirs(where.run_dir, exist_ok=True)
    with DirectoryLock(where.run_dir, "run directory", wait=opts.wait):  # a second identical run refuses (or waits)
        return _fit_held(cfg, source, where, opts)


def preflight(configs: Iterable[RunConfig], test_size: int | None = None) -> None:
    """The checks that fail a bad run in seconds, before any data is read or Ray work starts: every backbone
    builds, takes ``data.image_size`` and its weights fit; every evaluation's corruption suite can be had (an
    ``eval.corruption_root`` holds what it names). One run's (:func:`fit`), or a study's for all its trials
    (``core.study.cli``), each distinct model and evaluation checked once."""
    configs = list(configs)
    for cfg in {(c.model, c.data.image_size): c for c in configs}.values():
        check_backbone(cfg)
    for cfg in {(c.eval.robustness, c.eval.corruption_root, c.eval.corruption_suite,
                 tuple(c.eval.corruption_names())): c for c in configs}.values():
        check_corruptions(cfg, test_size)


def needs_ray(cfg: RunConfig) -> bool:
    """Whether a run needs a Ray instance of its own: a worker group, or a stream of encoded images (Ray Data).
    An in-memory source (digits, CIFAR) trained in this process gathers its batches from its arrays and needs
    none: Ray's services would only take CPU from the step (4-10% of a CIFAR epoch on 2 cores, measured)."""
    return cfg.num_workers > 0 or not SOURCES.get(cfg.data.source).in_memory or cfg.data.augment_in == "ray_data"


def _fit_held(cfg: RunConfig, source: ImageSource, where: RunPlace, opts: FitOptions) -> RunResult:
    """The run, its directory held: re-scored if only its evaluation changed, else trained (or resumed)
    and evaluated. In process with object storage, the run directory is mirrored to the store (and
    fetched from it first, so a run resumes or is found finished on another machine); a worker group's
    checkpoints go there through Ray Train."""
    stored = where.stored()
    run = stored.run
    if not opts.overwrite:
        stored.pull()
    run.check_identity(cfg)  # before --overwrite: another config's run is never deleted
    if not opts.overwrite and (done := run.finished_as_asked(cfg)) is not None:
        return done  # nothing to train, score or write (a resumed study's finished trials land here)
    if opts.overwrite:
        if where.mirror:
            raise DataError(f"--overwrite does not delete object storage; remove {where.mirror} "
                            f"yourself or choose another storage_path")
        remove_paths(unlocked_entries(str(run.path)))  # all but the lock this process holds
    if not opts.tune_trial:  # a study's driver built it before its trials; a run builds it now, with progress
        prepare_corruptions(cfg, opts.corruption_cache, source)
    if not opts.overwrite and (changed := run.evaluation_changed(cfg)) is not None:
        result = _rescore(run, cfg, source, changed, opts.verbose, opts.corruption_cache)
    else:
        run.write_config(cfg)
        spec = LoopSpec(cfg, source.num_classes, source.train_size, str(run.path), opts.verbose,
                        opts.torch_threads or torch.get_num_threads(), corruption_cache=opts.corruption_cache)
        if cfg.num_workers == 0:
            outcome = train_loop({"spec": spec}, InProcessContext(source, stored, opts.tune_trial))
        else:
            outcome = _fit_worker_group(replace(spec, mirror=where.mirror), source, where, opts)
            stored.pull()  # what rank 0 wrote on its node (the metrics log, the scalars)
        result = run.write_result(outcome.metrics, outcome.records)
    stored.push()
    return result


def _rescore(run: RunDir, cfg: RunConfig, source: ImageSource, changed: str, verbose: bool,
             corruption_cache: str | None = None) -> RunResult:
    """A finished run scored again with the new evaluation protocol, not trained again."""
    if verbose:
        print(f"[{run.path.name}] finished earlier; re-scoring its checkpoint with the new evaluation protocol "
              f"({changed}), no retraining", flush=True)
    _, records = rescore(run, cfg, source, training_device(cfg), note=changed, corruption_cache=corruption_cache)
    summary = run.read_json(run.summary)
    return RunResult(scalars(summary), str(run.path), RunStatus(summary.get("status", RunStatus.FINISHED)), records)


def _check_resources(cfg: RunConfig, custom: dict) -> None:
    """Never fall back to the CPU silently, nor wait forever for workers or a GPU that are not there."""
    if cfg.use_gpu and cfg.num_workers == 0 and not torch.cuda.is_available():
        raise ResourceError("use_gpu=true but torch sees no CUDA device here; set use_gpu=false or run on a GPU")
    if cfg.num_workers:
        check_fits({"CPU": 1, "GPU": 1 if cfg.use_gpu else 0, **custom}, f"num_workers={cfg.num_workers}",
                   cfg.num_workers)


def _fit_worker_group(spec: LoopSpec, source: ImageSource, where: RunPlace, opts: FitOptions) -> LoopOutcome:
    """A TorchTrainer worker group (DDP), restarted from its last checkpoint up to ``max_failures`` times;
    rank 0 builds and splits each epoch's stream."""
    cfg = spec.cfg
    callbacks = list(opts.callbacks)
    if opts.tune_trial:  # rank 0's epoch reports (metrics and checkpoint path) go on to Tune: ASHA reads them
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"spec": replace(spec, train_rows=source.train_rows)},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": 1, **({"GPU": 1} if cfg.use_gpu else {}),
                                                           **opts.worker_resources} if opts.worker_resources else None,
                                     placement_strategy=opts.placement_strategy),
        datasets={"train_eval": as_dataset(source.train_eval), "test": as_dataset(source.test)},
        dataset_config=DataConfig(datasets_to_split=[], execution_options=execution_options(cfg)),
        run_config=ray.train.RunConfig(name=where.name, storage_path=where.storage,
                                       failure_config=FailureConfig(max_failures=opts.max_failures),
                                       checkpoint_config=CheckpointConfig(num_to_keep=2),
                                       callbacks=callbacks or None),
    )
    result = trainer.fit()
    if isinstance(result.return_value, LoopOutcome):
        return result.return_value
    return LoopOutcome(dict(result.metrics or {}))


def finished_run(cfg: RunConfig) -> RunResult | None:
    """The result of this config's run if it already finished (its ``summary.json``, fetched from
    object storage when the run is stored there), else None."""
    where = place(cfg)
    stored = where.stored()
    stored.pull()
    stored.run.check_identity(cfg)
    return stored.run.finished_as_asked(cfg)
