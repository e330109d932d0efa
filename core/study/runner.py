"""Run a study: its trials as Ray Tune trials, each trial one ``core.train.trainer`` run, then the tidy
table, markdown report and plots of ``core.study.report``.

A trial's run is named by its config hash under ``<storage>/runs``, so ``--resume`` after a killed
driver finishes the study without rerunning completed trials (their runs return at once), and a
killed trial picks up from its last epoch. A failing trial is recorded with its reason (status
``failed``/``diverged``) and the study continues.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from ray import tune

from core.config import RunConfig, config_differences
from core.errors import ConfigError, platform_cause
from core.eval.corrupted import prepare_corruptions
from core.fs import filesystem, is_uri, join, read_bytes, write_bytes_atomic
from core.io import DirectoryLock, refuse_symlink, remove_paths, unlocked_entries, write_json_atomic
from core.metrics import config_columns, metric
from core.results import RunStatus, scalars
from core.runs.identity import config_hash
from core.runtime import check_fits, require_shared, start_ray
from core.study.loggers import Progress, logger_callbacks
from core.study.options import StudyOptions
from core.study.report import write_report, write_table
from core.study.spec import Study, trial_config, trial_point
from core.study.studydir import (
    OWNER_FILE,
    RUNS,
    SPEC_FILE,
    TABLE_FILE,
    TUNE,
    TUNER_RECORD,
    TUNER_STATE,
    StudyDirs,
)
from core.train.trainer import FitOptions, fit

TUNE_COLUMNS_DROPPED = ("config/", "time_", "date", "hostname", "node_ip", "pid", "timestamp", "training_iteration",
                        "iterations_since", "done", "trial_id", "checkpoint_dir", "checkpoint_path", "experiment_tag")


@dataclass(frozen=True)
class TrialSetup:
    """How every trial of a study runs (the same for all of them)."""

    base: RunConfig
    runs_dir: str
    torch_threads: int
    workers: int
    gpus: float
    per_epoch: bool  # trials report every epoch to Tune (schedulers read them), worker groups too
    custom: tuple[tuple[str, float], ...] = ()  # --trial-resource: per trial, or per Train worker of a group
    corruption_cache: str | None = None  # StudyDirs.corruption_cache


def run_trial(params: dict, setup: TrialSetup) -> None:
    """One Tune trial: the point's config through :func:`fit`, its final row reported to Tune."""
    t0 = time.perf_counter()
    try:
        cfg = trial_config(setup.base, trial_point(params), storage_path=setup.runs_dir,
                           num_workers=setup.workers, use_gpu=setup.gpus > 0)
        res = fit(cfg, options=FitOptions(
            verbose=False, torch_threads=setup.torch_threads, tune_trial=setup.per_epoch, max_failures=1,
            worker_resources=dict(setup.custom), corruption_cache=setup.corruption_cache,
            wait=True))  # trials that differ only in evaluation share a run: the second re-scores it
        row: dict[str, Any] = {**res.metrics, "status": res.status, "config_hash": config_hash(cfg),
                               "node_id": ray.get_runtime_context().get_node_id(), "machine": socket.gethostname()}
        records = res.records
    except Exception as exc:  # recorded in the table; the study goes on
        cause = platform_cause(exc) or exc
        row, records = {"status": RunStatus.FAILED, "error": f"{type(cause).__name__}: {cause}"[:500]}, {}
    row["trial_seconds"] = time.perf_counter() - t0
    tune.report({**scalars(row), **records})


def run_study(study: Study, options: StudyOptions) -> tuple[pd.DataFrame, Path]:
    """Run (or resume) every trial, then write table, report and plots. Returns (table, report path).
    The results directory is locked while the study runs: a second study there is refused."""
    results = Path(os.path.abspath(options.results_dir or default_results_dir(study, options)))
    refuse_symlink(results, "results directory")
    with DirectoryLock(results, "results directory"), _claim_storage(StudyDirs(results, options.storage or str(results))):
        dirs = StudyDirs(results, options.storage or str(results))
        _clear_or_resume(dirs, options, study)
        results.mkdir(parents=True, exist_ok=True)
        _record_spec(study, options, dirs)
        start_study_ray(options)
        _check_trial_resources(options)
        _check_shared(study, dirs)
        prepare_corruptions(study.base, dirs.corruption_cache)
        total = study.total()
        concurrent = options.max_concurrent or (1 if options.workers_per_trial else os.cpu_count() or 2)
        print(f"study {study.name}: {total} trials, {concurrent} at a time -> {results}", flush=True)
        t0 = time.perf_counter()
        with interruption_noted() as interrupted:
            grid = _tuner(study, options, dirs, total, concurrent).fit()
        table = results_table(grid, study, interrupted=interrupted.seen)
        write_table(table, dirs.file(TABLE_FILE))
        report = write_report(study, table, results, time.perf_counter() - t0, dirs.storage)
        if interrupted.seen:
            again = " ".join(shlex.quote(a) for a in sys.argv if a != "--overwrite")
            print(f"\nstudy interrupted: every finished trial and each running trial's last epoch are saved; finish it "
                  f"with:\n  python {again}{'' if '--resume' in sys.argv else ' --resume'}", flush=True)
        return table, report


class _Interruption(logging.Filter):
    """Tune's own advice after Ctrl-C names ``Tuner.restore(...)``; the platform resumes with ``--resume``.
    The record is dropped and remembered."""

    seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(("Experiment has been interrupted", "Training has been interrupted")):
            self.seen = True
            return False
        return True


@contextlib.contextmanager
def interruption_noted():
    """While a Tuner runs: whether it was interrupted, with Tune's ``Tuner.restore`` advice kept off the console."""
    note = _Interruption()
    tune_logger = logging.getLogger("ray.tune.tune")
    tune_logger.addFilter(note)
    try:
        yield note
    finally:
        tune_logger.removeFilter(note)


def default_results_dir(study: Study, options: StudyOptions) -> str:
    """``results/<study>``, suffixed by what the command changes about the data: the ``--config`` files'
    names (``augmentation_robustness_cifar10_laptop``), else a data source other than the default, so a
    CIFAR study never lands in (or ``--overwrite``s) the digits study's directory."""
    suffix = [Path(p).stem for p in options.config_files]
    if not suffix and study.base.data.source != RunConfig().data.source:
        suffix = [study.base.data.source]
    return os.path.join("results", "_".join([study.name, *suffix]))


def start_study_ray(options: StudyOptions) -> None:
    """Join ``--address`` or start the local instance (``--dashboard``: with Ray's dashboard on 127.0.0.1,
    its URL printed)."""
    if ray.is_initialized():
        return
    context = start_ray(options.address, dashboard=options.dashboard, log_to_driver=bool(options.address))
    if options.dashboard:
        url = getattr(context, "dashboard_url", None)
        print(f"Ray dashboard: http://{url}" if url else "Ray dashboard did not start (pip install -e '.[viz]')",
              flush=True)




@contextlib.contextmanager
def _claim_storage(dirs: StudyDirs):
    """A separate local ``--storage`` is locked for the study and belongs to one results directory (recorded
    in its owner file): another study's storage is refused, so ``--overwrite`` never deletes what this
    study did not write."""
    storage = Path(dirs.storage)
    if is_uri(dirs.storage) or storage == dirs.results:
        yield
        return
    refuse_symlink(storage, "storage directory")
    with DirectoryLock(storage, "study storage"):
        owner_file = storage / OWNER_FILE
        owner = json.loads(owner_file.read_text()).get("results_dir") if owner_file.exists() else None
        if owner and Path(owner) != dirs.results:
            raise ConfigError(f"storage {storage} belongs to the study in {owner}; pass --results-dir {owner} to "
                              f"resume or overwrite it, or choose another --storage")
        if owner is None and any((storage / d).exists() for d in (TUNE, RUNS)):
            raise ConfigError(f"storage {storage} holds a study that no results directory recorded; choose another "
                              f"--storage or remove its tune/ and runs/ yourself")
        write_json_atomic(owner_file, {"results_dir": str(dirs.results)})
        yield


def _check_shared(study: Study, dirs: StudyDirs) -> None:
    """On a cluster of several nodes, before any trial starts: every path a trial reads or writes (its data,
    weights, ImageNet-C folder, the study's storage) must reach every node, not only this machine's disk."""
    for cfg in [trial_config(study.base, p) for p in study.points()] or [study.base]:
        require_shared({"data.root": cfg.data.root, "eval.corruption_root": cfg.eval.corruption_root,
                        "model.weights": cfg.model.weights, "--storage": dirs.storage},
                       "the trials run on any of them")


def _check_trial_resources(options: StudyOptions) -> None:
    """A trial (and its Train workers) must fit on the nodes the cluster has or can add."""
    if options.workers_per_trial:
        check_fits({"CPU": 1, "GPU": 1 if options.gpus_per_trial else 0, **options.custom_resources()},
                   f"--workers-per-trial {options.workers_per_trial}", options.workers_per_trial)
    else:
        check_fits({"CPU": options.cpus_per_trial, "GPU": options.gpus_per_trial, **options.custom_resources()},
                   f"a trial (--cpus-per-trial {options.cpus_per_trial:g} --gpus-per-trial {options.gpus_per_trial:g})")


def _clear_or_resume(dirs: StudyDirs, options: StudyOptions, study: Study) -> None:
    """An existing study there is resumed (``--resume``), deleted (``--overwrite``, with a search's own
    Optuna study) or refused."""
    if options.overwrite and study.search:
        study.search.reset()
    here = dirs.file(TUNE).exists()
    stored = bool(options.storage and tune.Tuner.can_restore(dirs.tune))
    if not (here or stored) or options.resume:
        return
    if not options.overwrite:
        holder = f"the results directory {dirs.results}" if here else f"--storage {dirs.storage}"
        raise ConfigError(f"{holder} already holds a study; pass another "
                          f"{'--results-dir' if here else '--storage'}, --resume to finish it, or --overwrite to "
                          f"start it again")
    if is_uri(dirs.storage):
        raise ConfigError(f"--overwrite does not delete object storage; remove {dirs.tune} yourself "
                          f"or pass another --storage")
    _refuse_other_data(dirs.results, study)
    # everything of the old study but the lock this process holds (--storage may be a shared dir:
    # only tune/ and runs/ there)
    remove_paths([*unlocked_entries(dirs.results), Path(dirs.tune), Path(dirs.runs)])


def _refuse_other_data(results: Path, study: Study) -> None:
    """``--overwrite`` deletes a study of the same data only: one recorded (``study.json``) with another data
    section is another study's results (the digits' under a CIFAR command), refused with the differences."""
    spec_file = results / SPEC_FILE  # results: the directory --overwrite would empty
    if not spec_file.exists():
        return
    old = json.loads(spec_file.read_text()).get("base", {}).get("data")
    new = json.loads(json.dumps(study.base.to_dict()["data"], default=str))
    diff = config_differences({"data": old}, {"data": new}) if old is not None else []
    if diff:
        raise ConfigError(f"--overwrite would delete the study in {results}, which ran on other data ("
                          f"{'; '.join(diff[:3])}); pass another --results-dir, or delete it yourself")


def study_spec(study: Study, options: StudyOptions) -> dict[str, Any]:
    """What defines a study's trials: a ``--resume`` must find the same (its table would mislabel them otherwise)."""
    return {"name": study.name, "base": study.base.to_dict(), "points": study.points(),
            "num_samples": options.num_samples or 0, "search": study.search is not None,
            "workers_per_trial": options.workers_per_trial, "gpus_per_trial": options.gpus_per_trial}


def _record_spec(study: Study, options: StudyOptions, dirs: StudyDirs) -> None:
    """Write the study's record (:func:`study_spec`); with ``--resume``, first refuse flags that change the
    study against the record kept with Tune's state (``--storage``: a resume from another results directory,
    or another machine, is checked too) or, where the storage is the results directory, the record there."""
    spec = json.loads(json.dumps(study_spec(study, options), default=str))
    local, apart = dirs.file(SPEC_FILE), dirs.apart
    fs, stored = filesystem(dirs.storage) if apart else (None, None)
    if options.resume:
        raw = read_bytes(fs, join(stored, SPEC_FILE)) if apart else (local.read_bytes() if local.exists() else None)
        where = join(dirs.storage, SPEC_FILE) if apart else str(local)
        if raw is None and (tune.Tuner.can_restore(dirs.tune) if apart else dirs.file(TUNE).exists()):
            raise ConfigError(f"--resume: {where} (the record of what the study ran) is missing, so its flags "
                              f"cannot be checked against this command; --overwrite to start again")
        diff = _spec_difference(json.loads(raw), spec) if raw is not None else []
        if diff:
            raise ConfigError(f"--resume with flags that change the study recorded in {where} (its trials would be "
                              f"mislabelled):\n  " + "\n  ".join(diff) + "\nrerun with the original flags, or "
                              "--overwrite to start again")
    write_json_atomic(local, spec)
    if apart:
        fs.create_dir(stored, recursive=True)
        write_bytes_atomic(fs, join(stored, SPEC_FILE), json.dumps(spec, indent=2).encode())


def _spec_difference(old: dict, new: dict) -> list[str]:
    diff = config_differences({k: v for k, v in old.items() if k != "points"},
                              {k: v for k, v in new.items() if k != "points"})
    if json.dumps(old.get("points"), sort_keys=True, default=str) != json.dumps(new.get("points"), sort_keys=True,
                                                                                 default=str):
        diff.append(f"grid: {len(old.get('points') or [])} points -> {len(new.get('points') or [])} points "
                    f"(losses, settings or seeds changed)")
    return diff


def _trainable(study: Study, options: StudyOptions, dirs: StudyDirs, concurrent: int):
    cores = os.cpu_count() or 2
    setup = TrialSetup(study.base, dirs.runs,
                       max(1, cores // concurrent) if not options.address else max(1, int(options.cpus_per_trial)),
                       options.workers_per_trial, options.gpus_per_trial,
                       # a searcher without a scheduler reads final metrics only (Tune's strict check
                       # rejects epoch reports that lack them)
                       per_epoch=not (study.search and study.search.scheduler is None),
                       custom=tuple(options.custom_resources().items()), corruption_cache=dirs.corruption_cache)
    resources = {"CPU": options.cpus_per_trial if not options.workers_per_trial else 0.5,
                 "GPU": options.gpus_per_trial if not options.workers_per_trial else 0,
                 **({} if options.workers_per_trial else options.custom_resources())}
    return tune.with_resources(tune.with_parameters(run_trial, setup=setup), resources)


def tune_environment(options: StudyOptions) -> None:
    """The environment Tune reads (set before the Tuner is made; a variable the user set is kept)."""
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # under an autoscaler Tune warns when no trial has started for 60 s: a cloud GPU node takes minutes to boot, so
    # it warned at the start of every cluster study; 15 minutes without a trial is worth a warning
    os.environ.setdefault("TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S_AUTOSCALER", "900")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # the study passes its loggers (--logger)
    # a failed trial reports its reason without the objective: Tune's strict check would end the whole search
    # there; without it ASHA lets the row pass and Optuna records the trial as pruned (TPE's worst)
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    if options.workers_per_trial:  # a trial ASHA stops is inside TorchTrainer.fit(): end its process (and so its
        os.environ.setdefault("TUNE_FORCE_TRIAL_CLEANUP_S", "10")  # worker group) instead of waiting 600 s


def _tuner(study: Study, options: StudyOptions, dirs: StudyDirs, total: int, concurrent: int) -> tune.Tuner:
    """A new Tuner for the study's trials, or the interrupted one restored (``--resume``)."""
    tune_environment(options)
    trainable = _trainable(study, options, dirs, concurrent)
    if options.resume and tune.Tuner.can_restore(dirs.tune):
        check_tuner_state(dirs)  # Tune unpickles it: only the file this study wrote
        return tune.Tuner.restore(dirs.tune, trainable, resume_unfinished=True, resume_errored=True)
    tuner = _new_tuner(study, options, dirs, total, concurrent, trainable)
    record_tuner_state(dirs)
    return tuner


def _tuner_sha256(dirs: StudyDirs) -> str | None:
    fs, base = filesystem(dirs.tune)
    data = read_bytes(fs, join(base, TUNER_STATE))
    return None if data is None else hashlib.sha256(data).hexdigest()


def record_tuner_state(dirs: StudyDirs) -> None:
    """The sha256 of the ``tuner.pkl`` Tune just wrote, kept in the results directory (the driver's disk)."""
    write_json_atomic(dirs.file(TUNER_RECORD), {"file": join(dirs.tune, TUNER_STATE), "sha256": _tuner_sha256(dirs)})


def check_tuner_state(dirs: StudyDirs) -> None:
    """``--resume`` makes Tune unpickle ``<storage>/tune/tuner.pkl``: whoever can write the storage could run
    code in the driver. It is loaded only when it is the file this study wrote (its recorded sha256)."""
    record = dirs.file(TUNER_RECORD)
    expected = json.loads(record.read_text()).get("sha256") if record.exists() else None
    found = _tuner_sha256(dirs)
    if expected is None or found != expected:
        why = (f"no record of the file this study wrote ({record} is missing: a study started before this check)"
               if expected is None else f"its sha256 {str(found)[:12]}... is not the {expected[:12]}... this study "
                                        f"recorded when it started")
        raise ConfigError(f"--resume: refusing to load {join(dirs.tune, TUNER_STATE)} (a pickle, run as code when "
                          f"loaded): {why}; --overwrite starts the study again")


def _new_tuner(study: Study, options: StudyOptions, dirs: StudyDirs, total: int, concurrent: int,
               trainable) -> tune.Tuner:
    chosen = list(options.loggers)
    loggers = logger_callbacks(chosen, study.name, dirs.results, options.mlflow_uri)
    if "tensorboard" in chosen:
        print(f"TensorBoard: tensorboard --logdir {dirs.tune}", flush=True)
    run_config = tune.RunConfig(name=TUNE, storage_path=dirs.storage, verbose=0,
                                callbacks=[Progress(total, *progress_metric(study)), *loggers],
                                # a trial lost with its node is retried (elsewhere) from its last checkpoint
                                failure_config=tune.FailureConfig(max_failures=2),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=2))
    if study.search:
        return tune.Tuner(trainable, run_config=run_config, tune_config=tune.TuneConfig(
            search_alg=study.search.searcher(), scheduler=study.search.scheduler, num_samples=study.search.num_samples,
            # a stopped worker-group trial's process is still in TorchTrainer.fit(): it cannot be reused
            max_concurrent_trials=concurrent, reuse_actors=not options.workers_per_trial))
    return tune.Tuner(trainable, param_space={"point": tune.grid_search(interleaved(study))},
                      # reused trial processes skip the per-trial Python/torch start-up
                      tune_config=tune.TuneConfig(max_concurrent_trials=concurrent,
                                                  reuse_actors=not options.workers_per_trial),
                      run_config=run_config)


def interleaved(study: Study) -> list[dict]:
    """The study's points with those sharing a training identity (differing only in evaluation) spread
    apart, round robin: concurrent trials then train different runs instead of waiting on one. A study
    without such points keeps its order."""
    groups: dict[str, list[dict]] = {}
    for point in study.points():
        groups.setdefault(config_hash(trial_config(study.base, point)), []).append(point)
    rounds = max((len(g) for g in groups.values()), default=0)
    return [g[i] for i in range(rounds) for g in groups.values() if i < len(g)]


def progress_metric(study: Study) -> tuple[str, str]:
    """(metric, "max"/"min") the progress line's "best" tracks: a search's first objective, else the
    first summary metric in its glossary direction."""
    if study.search and study.search.objectives:
        return study.search.objectives[0].name, study.search.objectives[0].mode
    entry = metric(study.summary_metrics[0])
    return study.summary_metrics[0], entry.mode if entry and entry.better else "max"


def results_table(grid, study: Study, interrupted: bool = False) -> pd.DataFrame:
    """One row per trial: its full config as ``cfg.*`` columns, its final metrics and status (``interrupted``:
    the study was, so a trial without a final row had not ended, rather than stopped or failed)."""
    rows, seen = [], []
    for res in grid:
        point = trial_point(res.config or {})
        try:
            cfg_cols = config_columns(trial_config(study.base, point))
        except ConfigError as exc:
            cfg_cols = {"error": str(exc)}
        if "variant" in point:
            cfg_cols["variant"] = point["variant"]
        metrics = dict(res.metrics or {})
        if res.error is not None and metrics.get("status") in (None, RunStatus.RUNNING):
            metrics.update(status=RunStatus.FAILED, error=str(res.error)[:500])
        else:
            metrics["status"] = RunStatus.of_trial(metrics.get("status"))
        if interrupted and metrics["status"] != RunStatus.FINISHED and not metrics.get("error"):
            metrics["status"] = RunStatus.INTERRUPTED
        rows.append({**cfg_cols, **{k: v for k, v in metrics.items() if not k.startswith(TUNE_COLUMNS_DROPPED)}})
        seen.append(point)
    if interrupted and not study.search:  # Tune creates a grid's trials as it starts them: name those it never did
        for point in (p for p in study.points() if p not in seen):
            cfg_cols = config_columns(trial_config(study.base, point))
            rows.append({**cfg_cols, **({"variant": point["variant"]} if "variant" in point else {}),
                         "status": RunStatus.INTERRUPTED})
    df = pd.DataFrame(rows)
    df["status"] = df["status"].fillna(RunStatus.FAILED).astype(str) if "status" in df else str(RunStatus.FAILED)
    return df
