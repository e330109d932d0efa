"""Shared study machinery: a grid (or searcher) of configs run as Ray Tune trials, each trial one
``core.train.fit`` run, then the tidy table, markdown report and plots of ``core.report``.

A trial's Train run is named by its config hash under ``RESULTS/runs``, so ``--resume`` after a
killed driver finishes the study without rerunning completed trials (their runs return at once),
and a killed trial picks up from its last epoch. A failing trial is recorded with its reason
(status ``failed``/``diverged``) and the study continues.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import ray
from ray import tune
from ray.tune.logger import LoggerCallback

from core.config import CONFIG_HELP, ConfigError, RunConfig, layered
from core.data.sources import load_source
from core.io import DirectoryLock, LockedError, remove_paths, unlocked_entries, write_json_atomic, write_text_atomic
from core.losses.registry import loss_family
from core.report import (
    FAMILY_NOTE,
    Claim,
    adjust_family,
    config_columns,
    summary_table,
    to_markdown,
    verdict_line,
    write_table,
)
from core.results import RunStatus, scalars
from core.train import fit


@dataclass
class Study:
    """What a study script declares: the question, the base config, the grid and the claims."""

    name: str
    question: str
    base: RunConfig
    # dotted config key -> values, full factorial; a list of such dicts is the union of their factorials
    grid: dict[str, list] | list[dict[str, list]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    claims: list[Claim] = field(default_factory=list)
    summary_metrics: list[str] = field(default_factory=lambda: ["probe_top1", "knn_top1"])
    plots: Callable[[pd.DataFrame, Path], list[Path]] | None = None
    tables: Callable[[pd.DataFrame], list[str]] | None = None  # extra markdown sections for the report
    variants: dict[str, dict[str, Any]] | None = None  # named one-factor variations (ablations)
    group: str = "cfg.loss.name"  # column the summary table groups by
    # searches: a Tune search algorithm (e.g. OptunaSearch over dotted keys) and scheduler replace the grid
    search_alg: Any = None
    scheduler: Any = None
    num_samples: int = 0

    def points(self) -> list[dict[str, Any]]:
        """Every trial's overrides (seed included); a variant's name rides along as ``variant``."""
        if self.variants is not None:
            return [{**overrides, "variant": name, "seed": seed}
                    for name, overrides in self.variants.items() for seed in self.seeds]
        out = []
        for block in (self.grid if isinstance(self.grid, list) else [self.grid]):
            keys = list(block)
            for combo in itertools.product(*(block[k] for k in keys), self.seeds):
                out.append({**dict(zip(keys, combo[:-1])), "seed": combo[-1]})
        return out


def grid_study_defaults(epochs: int) -> RunConfig:
    """Base config shared by the grid studies on the embedded data: robustness metrics on, no
    per-epoch kNN (no scheduler reads it), a 24-wide CNN (same accuracy as 32, ~1.5x faster here)."""
    return RunConfig().with_overrides([f"optim.epochs={epochs}", "model.width=24", "eval.robustness=true",
                                       "eval.probe_epochs=50", "eval.online_knn=false"])


def question(doc: str) -> str:
    """A study's question: the first two paragraphs of its script's docstring."""
    return "\n\n".join(doc.strip().split("\n\n")[:2])


class OptunaSpace:
    """Define-by-run Optuna space over temperature, batch size, augmentation strength and the loss's
    KL weight (a class, not a closure: Tune pickles its searcher)."""

    def __init__(self, loss: str, seed: int, batch_sizes: tuple[int, ...] = (64, 128, 256)) -> None:
        self.loss, self.seed, self.batch_sizes = loss, seed, list(batch_sizes)

    def __call__(self, trial) -> dict[str, Any]:
        family = loss_family(self.loss)
        if family.search_space:  # the family's own knobs (temperature, KL weight, ...)
            family.search_space(trial)
        trial.suggest_categorical("optim.batch_size", self.batch_sizes)
        trial.suggest_float("augment.strength", 0.0, 1.0)
        return {"seed": self.seed}


def point_config(base: RunConfig | dict, point: dict[str, Any], **extra: Any) -> RunConfig:
    """The config of one trial: base + the point's overrides (its ``variant`` label is not a field)."""
    base = base if isinstance(base, RunConfig) else RunConfig.from_dict(base)
    return base.with_(**{k: v for k, v in point.items() if k != "variant"}, **extra)


def add_study_args(parser: argparse.ArgumentParser) -> None:
    """Flags every study accepts."""
    parser.add_argument("--results-dir", default=None, help="where the table, report and logs go (default results/NAME)")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                        help="Ray cluster address (default: $RAY_ADDRESS, else a local instance)")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="grid studies: repeats of every point (default 1); searches: trials (default 8)")
    parser.add_argument("--storage", default=None,
                        help="Tune results and checkpoints: a shared path or s3://, gs:// URI (default: the "
                             "results dir; a multi-node cluster needs shared storage)")
    parser.add_argument("--cpus-per-trial", type=float, default=1,
                        help="CPUs reserved per trial (its torch threads on a cluster)")
    parser.add_argument("--gpus-per-trial", type=float, default=0)
    parser.add_argument("--workers-per-trial", type=int, default=0, help="Train workers per trial (0: local mode)")
    parser.add_argument("--max-concurrent", type=int, default=0, help="concurrent trials (0: CPU cores locally)")
    parser.add_argument("--resume", action="store_true", help="finish an interrupted study in --results-dir")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing study in --results-dir first")
    parser.add_argument("--epochs", type=int, default=None, help="override optim.epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: the study's)")
    parser.add_argument("--logger", action="append", choices=LOGGERS, default=None,
                        help="where trial metrics go, through Tune's logger callbacks (repeatable; default "
                             "tensorboard): tensorboard (event files under RESULTS/tune), mlflow (--mlflow-uri, "
                             "default file:RESULTS/mlruns; pip install -e '.[trackers]'), wandb (offline unless "
                             "WANDB_MODE/WANDB_API_KEY say otherwise; project = the study's name)")
    parser.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default file:RESULTS/mlruns)")
    parser.add_argument("--dashboard", action="store_true",
                        help="start the Ray dashboard of a local study on 127.0.0.1 and print its URL "
                             "(pip install -e '.[viz]'); a cluster's dashboard: ray dashboard cluster.yaml")
    parser.add_argument("--config", action="append", default=[], metavar="FILE.yaml",
                        help="YAML config layered onto the study's defaults (repeatable: later files win)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the study's resolved base config as YAML and exit (starts nothing)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides of the base config")


def _trial(params: dict, base: dict, runs_dir: str, torch_threads: int, workers: int, gpus: float,
           per_epoch: bool = True) -> None:
    point = dict(params.get("point", params))  # grid trials: {"point": {...}}; searchers: flat dotted keys
    t0 = time.perf_counter()
    row: dict[str, Any] = {}
    try:
        cfg = point_config(base, point, storage_path=runs_dir, num_workers=workers, use_gpu=gpus > 0)
        res = fit(cfg, verbose=False, torch_threads=torch_threads, tune_trial=workers == 0 and per_epoch,
                  max_failures=1)
        row = {**res.metrics, "status": res.status, "config_hash": cfg.config_hash(),
               "node_id": ray.get_runtime_context().get_node_id(), "machine": socket.gethostname()}
    except Exception as exc:  # recorded in the table; the study goes on
        row = {"status": RunStatus.FAILED, "error": f"{type(exc).__name__}: {exc}"[:500]}
    row["trial_seconds"] = time.perf_counter() - t0
    tune.report(scalars(row))


LOGGERS = ("tensorboard", "mlflow", "wandb")


class TensorBoardLogger(LoggerCallback):
    """Tune's TensorBoard logger (event files in every trial's directory under the study's ``tune/``),
    wrapped so that Tune does not also print its local staging directory as the TensorBoard path:
    the study prints one path, the one the files end up in."""

    def __init__(self) -> None:
        from ray.tune.logger import TBXLoggerCallback

        self._inner = TBXLoggerCallback()

    def log_trial_start(self, trial) -> None:
        self._inner.log_trial_start(trial)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        self._inner.log_trial_result(iteration, trial, result)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        self._inner.log_trial_end(trial, failed)


def logger_callbacks(names: list[str], study_name: str, results: Path, mlflow_uri: str | None = None) -> list:
    """Tune logger callbacks for ``--logger`` names (plus Tune's CSV and JSON logs, always)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    callbacks: list = [CSVLoggerCallback(), JsonLoggerCallback()]
    for name in dict.fromkeys(names):
        if name == "tensorboard":
            callbacks.append(TensorBoardLogger())
        elif name == "mlflow":
            try:
                import mlflow  # noqa: F401
                from ray.air.integrations.mlflow import MLflowLoggerCallback
            except ImportError:
                raise SystemExit("error: --logger mlflow needs MLflow: pip install -e '.[trackers]'") from None
            uri = mlflow_uri or (results / "mlruns").as_uri()
            if uri.startswith("file:"):  # MLflow 3 asks for an opt-in to its file store (kept: no server, no DB)
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            callbacks.append(MLflowLoggerCallback(tracking_uri=uri, experiment_name=study_name))
        elif name == "wandb":
            try:
                import wandb  # noqa: F401
                from ray.air.integrations.wandb import WandbLoggerCallback
            except ImportError:
                raise SystemExit("error: --logger wandb needs wandb: pip install -e '.[trackers]'") from None
            mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
            callbacks.append(WandbLoggerCallback(project=study_name, mode=mode, dir=str(results)))
        else:
            raise SystemExit(f"error: unknown --logger {name!r} (choose from {list(LOGGERS)})")
    return callbacks


class Progress(tune.Callback):
    """One console line per finished trial: done/running/failed and the best so far."""

    def __init__(self, total: int, metric: str) -> None:
        self.total, self.metric, self.done, self.failed, self.stopped, self.best = total, metric, 0, 0, 0, None
        self.t0 = time.perf_counter()

    def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: D401
        self.done += 1
        r = trial.last_result or {}
        status = r.get("status", RunStatus.FAILED.value)
        if status == RunStatus.RUNNING:  # its last report was an epoch: the scheduler stopped it
            status = RunStatus.STOPPED_EARLY
            self.stopped += 1
        elif status != RunStatus.FINISHED:
            self.failed += 1
        point = trial.config.get("point", {k: v for k, v in trial.config.items() if k != "seed"})
        value = r.get(self.metric)
        if isinstance(value, (int, float)) and (self.best is None or value > self.best[0]):
            self.best = (value, point)
        running = sum(t.status == "RUNNING" for t in trials)
        best = f"best {self.metric} {self.best[0]:.2f} at {self.best[1]}" if self.best else ""
        print(f"[{time.perf_counter() - self.t0:6.0f}s] {self.done}/{self.total} done, {running} running, "
              f"{self.stopped} stopped early, {self.failed} failed | {status} {point} "
              f"{self.metric}={value if value is None else round(value, 2)} | {best}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.on_trial_complete(iteration, trials, trial)


def _init_ray(address: str | None, dashboard: bool = False) -> None:
    # Trials checkpoint every epoch (num_to_keep=2), which forces frequent experiment snapshots; they
    # are cheap here, so Tune's "snapshotting may become a bottleneck" warning is noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # the study passes its loggers (--logger)
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address)
        return
    # logical CPUs oversubscribed 2x: trial drivers and Ray Data tasks never wait on each other
    context = ray.init("local", num_cpus=2 * (os.cpu_count() or 2), include_dashboard=dashboard,
                       dashboard_host="127.0.0.1", log_to_driver=False)
    if dashboard:
        url = getattr(context, "dashboard_url", None)
        print(f"Ray dashboard: http://{url}" if url else "Ray dashboard did not start (pip install -e '.[viz]')",
              flush=True)


def _prepare_corruptions(base: RunConfig) -> None:
    """Corrupt the evaluation split once, batch by batch as the evaluation stage reads it, in
    parallel Ray tasks, before the trials start (they read the cache)."""
    if not (base.eval.robustness and base.eval.corruption_suite == "imagenet_c") or base.eval.corruption_root:
        return
    from core.evaluate import generated_corruptions, iter_numpy

    for _ in generated_corruptions(iter_numpy(load_source(base.data).test), base, parallel=True, progress=True):
        pass  # each batch's corrupted sets are computed and cached as the generator reaches them


def study_spec(study: Study, args: argparse.Namespace) -> dict[str, Any]:
    """What defines a study's trials: a ``--resume`` must find the same (its table would mislabel them otherwise)."""
    return {"name": study.name, "base": study.base.to_dict(), "points": study.points(),
            "num_samples": args.num_samples or 0, "search": bool(study.search_alg),
            "workers_per_trial": args.workers_per_trial, "gpus_per_trial": args.gpus_per_trial}


def _spec_difference(old: dict, new: dict) -> list[str]:
    from core.report import flatten

    a, b = flatten("", {k: v for k, v in old.items() if k != "points"}), \
        flatten("", {k: v for k, v in new.items() if k != "points"})
    diff = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if json.dumps(old.get("points"), sort_keys=True, default=str) != json.dumps(new.get("points"), sort_keys=True,
                                                                                 default=str):
        diff.append(f"grid: {len(old.get('points') or [])} points -> {len(new.get('points') or [])} points "
                    f"(losses, settings or seeds changed)")
    return diff


def run_study(study: Study, args: argparse.Namespace) -> tuple[pd.DataFrame, Path]:
    """Run (or resume) every trial, then write table, report and plots. Returns (table, report path).
    The results directory is locked while the study runs: a second study there is refused."""
    results = Path(args.results_dir or os.path.join("results", study.name)).resolve()
    with DirectoryLock(results, "results directory") as lock:
        try:
            return _run_study_locked(study, args, results)
        finally:
            lock.release()


def _run_study_locked(study: Study, args: argparse.Namespace, results: Path) -> tuple[pd.DataFrame, Path]:
    storage = args.storage or str(results)  # where Tune's experiment and the trials' checkpoints live
    tune_dir = f"{storage.rstrip('/')}/tune"
    exists = (results / "tune").exists() or bool(args.storage and tune.Tuner.can_restore(tune_dir))
    if exists and not args.resume:
        if not args.overwrite:
            raise SystemExit(f"error: {results} (storage {storage}) already holds a study; pass --resume to "
                             f"finish it or --overwrite to start again")
        if "://" in storage:
            raise SystemExit(f"error: --overwrite does not delete object storage; remove {tune_dir} yourself "
                             f"or pass another --storage")
        # everything of the old study but the lock this process holds (--storage may be a shared dir:
        # only tune/ and runs/ there)
        remove_paths([*unlocked_entries(results), Path(storage) / "tune", Path(storage) / "runs"])
    results.mkdir(parents=True, exist_ok=True)
    spec, spec_file = study_spec(study, args), results / "study.json"
    if args.resume and spec_file.exists():
        diff = _spec_difference(json.loads(spec_file.read_text()), json.loads(json.dumps(spec, default=str)))
        if diff:
            raise SystemExit("error: --resume with flags that change the study (its trials would be mislabelled):\n  "
                             + "\n  ".join(diff) + "\nrerun with the original flags, or --overwrite to start again")
    write_json_atomic(spec_file, spec)
    points = [] if study.search_alg else [p for p in study.points() for _ in range(args.num_samples or 1)]
    total = study.num_samples if study.search_alg else len(points)
    cores = os.cpu_count() or 2
    concurrent = args.max_concurrent or (1 if args.workers_per_trial else cores)
    threads = max(1, cores // concurrent) if not args.address else max(1, int(args.cpus_per_trial))
    trainable = tune.with_parameters(_trial, base=study.base.to_dict(), runs_dir=f"{storage.rstrip('/')}/runs",
                                     torch_threads=threads, workers=args.workers_per_trial, gpus=args.gpus_per_trial,
                                     # a searcher without a scheduler reads final metrics only (Tune's
                                     # strict check rejects epoch reports that lack them)
                                     per_epoch=not (study.search_alg and study.scheduler is None))
    resources = {"CPU": args.cpus_per_trial if not args.workers_per_trial else 0.5,
                 "GPU": args.gpus_per_trial if not args.workers_per_trial else 0}
    trainable = tune.with_resources(trainable, resources)
    _init_ray(args.address, dashboard=args.dashboard)
    _prepare_corruptions(study.base)
    print(f"study {study.name}: {total} trials, {concurrent} at a time -> {results}", flush=True)
    t0 = time.perf_counter()
    chosen = args.logger or ["tensorboard"]
    loggers = logger_callbacks(chosen, study.name, results, args.mlflow_uri)
    if "tensorboard" in chosen:
        print(f"TensorBoard: tensorboard --logdir {tune_dir}", flush=True)
    run_config = tune.RunConfig(name="tune", storage_path=storage, verbose=0,
                                callbacks=[Progress(total, study.summary_metrics[0]), *loggers],
                                # a trial lost with its node is retried (elsewhere) from its last checkpoint
                                failure_config=tune.FailureConfig(max_failures=2),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=2))
    if args.resume and tune.Tuner.can_restore(tune_dir):
        tuner = tune.Tuner.restore(tune_dir, trainable, resume_unfinished=True, resume_errored=True)
    elif study.search_alg:
        tuner = tune.Tuner(trainable, run_config=run_config, tune_config=tune.TuneConfig(
            search_alg=study.search_alg, scheduler=study.scheduler, num_samples=study.num_samples,
            max_concurrent_trials=concurrent, reuse_actors=True))
    else:
        tuner = tune.Tuner(trainable, param_space={"point": tune.grid_search(points)},
                           # reused trial processes skip the per-trial Python/torch start-up
                           tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True),
                           run_config=run_config)
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    table = _table(grid, study)
    write_table(table, results / "trials.parquet")
    report = write_report(study, table, results, wall, storage)
    return table, report


def _table(grid, study: Study) -> pd.DataFrame:
    rows = []
    for res in grid:
        config = res.config or {}
        point = dict(config.get("point", config))
        try:
            cfg_cols = config_columns(point_config(study.base, point))
        except ConfigError as exc:
            cfg_cols = {"error": str(exc)}
        if "variant" in point:
            cfg_cols["variant"] = point["variant"]
        metrics = dict(res.metrics or {})
        if res.error is not None and metrics.get("status") in (None, RunStatus.RUNNING):
            metrics.update(status=RunStatus.FAILED, error=str(res.error)[:500])
        elif metrics.get("status") == RunStatus.RUNNING:  # last report was an epoch: the scheduler stopped it
            metrics["status"] = RunStatus.STOPPED_EARLY
        rows.append({**cfg_cols, **{k: v for k, v in metrics.items() if not k.startswith(("config/", "time_", "date",
                     "hostname", "node_ip", "pid", "timestamp", "training_iteration", "iterations_since",
                     "done", "trial_id", "checkpoint_dir", "experiment_tag"))}})
    df = pd.DataFrame(rows)
    df["status"] = df["status"].fillna(RunStatus.FAILED).astype(str) if "status" in df else str(RunStatus.FAILED)
    return df


def write_report(study: Study, df: pd.DataFrame, results: Path, wall_seconds: float,
                 storage: str | None = None) -> Path:
    """Markdown report with summary tables, verdicts, overhead and plots; returns its path."""
    finished = int((df["status"] == RunStatus.FINISHED).sum())
    lines = [f"# Study: {study.name}", "", study.question, "",
             f"{len(df)} trials: {finished} finished, {len(df) - finished} not "
             f"({', '.join(f'{k}: {v}' for k, v in df['status'].value_counts().items())}). "
             f"Table: `trials.parquet` (one row per trial, full config as `cfg.*` columns).", ""]
    lines += ["## Summary (mean ± 95% CI half-width over trials)", "",
              to_markdown(summary_table(df, study.group, study.summary_metrics)), ""]
    verdicts = adjust_family([r for c in study.claims for r in c.evaluate(df)])
    if verdicts:
        tested = sum(np.isfinite(r["p_holm"]) for r in verdicts)
        lines += ["## Claims", "", FAMILY_NOTE.format(m=tested), ""] + [verdict_line(r) for r in verdicts] + [""]
        write_table(pd.DataFrame(verdicts), results / "claims.parquet")
    if study.tables:
        lines += study.tables(df)
    compute = float(df["trial_seconds"].sum()) if "trial_seconds" in df else float("nan")
    lines += ["## Overhead", "",
              f"Study wall time {wall_seconds:.0f} s; summed trial time {compute:.0f} s "
              f"(trials run concurrently, so the ratio shows parallelism minus Ray overhead: "
              f"{compute / max(wall_seconds, 1e-9):.2f}x).", ""]
    failed = df[df["status"] != RunStatus.FINISHED]
    if not failed.empty:
        lines += ["## Trials that did not finish", ""]
        for _, r in failed.iterrows():
            lines.append(f"- {r.get(study.group, '?')} seed {r.get('cfg.seed', '?')}: {r['status']} "
                         f"{r.get('diverged_at', '') if isinstance(r.get('diverged_at'), str) else ''}"
                         f"{r.get('error', '') if isinstance(r.get('error'), str) else ''}")
        lines.append("")
    if study.plots:
        pngs = [p for p in study.plots(df, results) if p]
        if pngs:
            lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs] + [""]
    storage = (storage or str(results)).rstrip("/")
    lines += ["## Logs", "", f"Trials ran on {machine_count(df)} machine(s). Tune logs and trial checkpoints: `{storage}/tune` "
              f"(TensorBoard: `tensorboard --logdir {storage}/tune`); per-run metrics under `{storage}/runs`.", ""]
    return write_text_atomic(results / "report.md", "\n".join(lines))


def machine_count(df: pd.DataFrame) -> int:
    """Machines the trials ran on: distinct host names (a Ray node id is per Ray session, so a study
    resumed on the same machine would count twice)."""
    for col in ("machine", "node_id"):
        if col in df and df[col].notna().any():
            return int(df[col].dropna().nunique())
    return 1


def base_config(args: argparse.Namespace, default: RunConfig) -> RunConfig:
    """The study's base config, validated now: built-in defaults < the study's ``default`` < each
    ``--config`` file in order < ``section.key=value`` overrides < ``--epochs``."""
    cfg = layered(default, args.config, args.overrides)
    return cfg.with_(**{"optim.epochs": args.epochs}) if args.epochs else cfg


def main_for(make_study: Callable[[argparse.Namespace], Study], description: str, argv: list[str] | None = None,
             extra_args: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """Entry point shared by study scripts: parse flags, build the study, run it, print where the report is."""
    parser = argparse.ArgumentParser(description=description, epilog=CONFIG_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_study_args(parser)
    if extra_args:
        extra_args(parser)
    args = parser.parse_intermixed_args(argv)  # overrides may sit between flags
    try:
        study = make_study(args)
        for p in study.points():
            point_config(study.base, p)  # validate every grid point before any Ray work
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(f"# {study.name}: base config of {len(study.points())} grid point(s)"
              + (f" over {sorted({k for p in study.points() for k in p} - {'seed', 'variant'})}"
                 if not study.search_alg else f"; a search of {study.num_samples} trials"))
        print(study.base.to_yaml(), end="")
        return 0
    try:
        table, report = run_study(study, args)
    except LockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{report.read_text()}\nreport: {report}\ntable:  {report.parent / 'trials.parquet'}")
    return 0 if (table["status"] == RunStatus.FINISHED).any() else 1
