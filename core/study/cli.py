"""The command line every study shares: its flags, the base config they layer, and ``main_for``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

from core.config import CONFIG_HELP, Layer, Resolved, RunConfig, resolve_layers, split_overrides
from core.errors import ConfigError, cli_main
from core.results import RunStatus
from core.runs.identity import config_hash
from core.study.loggers import LOGGERS
from core.study.options import StudyOptions
from core.study.spec import Study, trial_config
from core.study.studydir import TABLE_FILE
from core.train.trainer import preflight


def add_study_args(parser: argparse.ArgumentParser) -> None:
    """Flags every study accepts."""
    parser.add_argument("--results-dir", default=None, help="where the table, report and logs go (default results/NAME)")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                        help="Ray cluster address (default: $RAY_ADDRESS, else a local instance)")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="searches: trials (default 8); grid studies take --seeds for replicates (a repeat of a "
                             "grid point would be the same run)")
    parser.add_argument("--storage", default=None,
                        help="Tune results and checkpoints: a shared path or s3://, gs:// URI (default: the "
                             "results dir; a multi-node cluster needs shared storage)")
    _placement_args(parser)
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


def _placement_args(parser: argparse.ArgumentParser) -> None:
    """What each trial reserves, and how many run at once."""
    parser.add_argument("--cpus-per-trial", type=float, default=1,
                        help="CPUs reserved per trial (its torch threads on a cluster)")
    parser.add_argument("--gpus-per-trial", type=float, default=0,
                        help="GPUs reserved per trial (each Train worker with --workers-per-trial); a fraction packs "
                             "trials on one GPU (0.25: four at a time); 0, the default: CPU only")
    parser.add_argument("--trial-resource", action="append", default=[], type=resource_amount, metavar="NAME=AMOUNT",
                        help="a custom Ray resource each trial (each Train worker with --workers-per-trial) "
                             "reserves, e.g. local_gpu=1 on the local cluster (repeatable)")
    parser.add_argument("--accelerator-type", default=None, metavar="NAME",
                        help="trials only on nodes with this accelerator (Ray's accelerator_type:NAME resource, e.g. "
                             "A10G): without it the autoscaler may start an 8-GPU node for 1-GPU trials")
    parser.add_argument("--workers-per-trial", type=int, default=0, help="Train workers per trial (0: local mode)")
    parser.add_argument("--max-concurrent", type=int, default=0, help="concurrent trials (0: CPU cores locally)")


def resource_amount(text: str) -> tuple[str, float]:
    """``NAME=AMOUNT`` of ``--trial-resource``."""
    name, sep, amount = text.partition("=")
    try:
        value = float(amount)
    except ValueError:
        value = -1.0
    if not sep or not name or value <= 0 or name in ("CPU", "GPU", "memory"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=AMOUNT with a custom resource name and an amount "
                                         f"> 0 (CPUs and GPUs have --cpus-per-trial / --gpus-per-trial)")
    return name, value


def base_config(args: argparse.Namespace, default: RunConfig) -> RunConfig:
    """The study's base config (:func:`study_config`)."""
    return study_config(args, default).config


def study_base(args: argparse.Namespace, default: "RunConfig | Layer") -> dict[str, Any]:
    """``Study(base=..., origins=...)``'s two arguments from the command line (:func:`study_config`)."""
    resolved = study_config(args, default)
    return {"base": resolved.config, "origins": dict(resolved.origins)}


def study_config(args: argparse.Namespace, default: "RunConfig | Layer") -> Resolved:
    """The study's base config, validated now, and where each value came from: built-in defaults < the data
    source's < the study's ``default`` < each ``--config`` file in order < ``section.key=value`` overrides <
    ``--epochs``. ``--epochs`` scales a warm-up a file or the study's defaults set with the epochs (5 of 100 ->
    0 of 2) rather than leaving one longer than the run, and says so; one given as an override is kept."""
    flags: dict[str, Any] = {}
    if args.epochs is not None:
        flags["optim.epochs"] = args.epochs
        resolved = resolve_layers(default, args.config, args.overrides, base_origin="study defaults")
        below = resolved.config.optim
        if below.warmup_epochs and below.epochs != args.epochs and resolved.origin("optim.warmup_epochs") != "override":
            warmup = min(round(below.warmup_epochs * args.epochs / below.epochs), args.epochs - 1)
            flags["optim.warmup_epochs"] = warmup
            print(f"--epochs {args.epochs}: optim.warmup_epochs {below.warmup_epochs} -> {warmup} (scaled with the "
                  f"epochs, {below.warmup_epochs} of {below.epochs}; set optim.warmup_epochs=N to choose)", flush=True)
    return resolve_layers(default, args.config, args.overrides, base_origin="study defaults", flags=flags)


def main_for(make_study: Callable[[argparse.Namespace], Study], description: str, argv: list[str] | None = None,
             extra_args: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """Entry point shared by study scripts: parse flags, build the study, run it, print where the report is."""
    parser = argparse.ArgumentParser(description=description, epilog=CONFIG_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_study_args(parser)
    if extra_args:
        extra_args(parser)
    flags, overrides = split_overrides(sys.argv[1:] if argv is None else argv)  # overrides stand anywhere
    args = parser.parse_intermixed_args(flags)
    args.overrides = [*args.overrides, *overrides]
    return cli_main(lambda: _run(make_study, args))


def validate_trials(study: Study, options: StudyOptions) -> None:
    """Every trial's config is valid and distinct before any Ray work: a repeated point (``--seeds 0 0``,
    ``--num-samples 2`` on a grid, a value given twice) would be the same run twice, and a shared
    ``name=`` would put every trial in one run directory."""
    if len(set(study.seeds)) != len(study.seeds):
        raise ConfigError(f"--seeds {' '.join(map(str, study.seeds))}: a seed given twice is the same run twice "
                          f"(runs repeat exactly); give distinct seeds")
    if (options.num_samples or 1) > 1 and not study.search:
        raise ConfigError(f"--num-samples {options.num_samples} repeats each grid point as the same run (same config, "
                          f"same seed); pass more seeds instead (--seeds 0 1 2 ...)")
    seen: dict[tuple[str, str], dict] = {}
    for point in study.points():
        cfg = trial_config(study.base, point)
        key = (config_hash(cfg), json.dumps(cfg.to_dict()["eval"], sort_keys=True))  # what it trains and scores
        if key in seen and seen[key] != point:
            raise ConfigError(f"trials {seen[key]} and {point} are the same config; remove the repeat")
        if key in seen:
            raise ConfigError(f"trial {point} is listed twice; remove the repeat")
        seen[key] = point
    preflight([trial_config(study.base, p) for p in study.points()] or [study.base])  # before Ray starts
    if study.base.name and (len(seen) > 1 or study.search):
        raise ConfigError(f"name={study.base.name} would put every trial in one run directory; remove name= "
                          f"(trials are named by their config hash)")


def _run(make_study: Callable[[argparse.Namespace], Study], args: argparse.Namespace) -> int:
    from core.study.runner import run_study

    study = make_study(args)
    options = StudyOptions.from_args(args)  # how it runs, a value from here on
    validate_trials(study, options)
    if args.print_config:
        print(f"# {study.name}: base config of {len(study.points())} grid point(s)"
              + (f" over {sorted({k for p in study.points() for k in p} - {'seed', 'variant'})}"
                 if not study.search else f"; a search of {study.search.num_samples} trials"))
        print((Resolved(study.base, study.origins) if study.origins else study.base).to_yaml(), end="")
        return 0
    table, report = run_study(study, options)
    print(f"\n{report.read_text()}\nreport: {report}\ntable:  {report.parent / TABLE_FILE}")
    if (table["status"] == RunStatus.INTERRUPTED).any():
        return 130  # as a shell reports Ctrl-C
    return 0 if (table["status"] == RunStatus.FINISHED).any() else 1
