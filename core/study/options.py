"""How a study runs, as a value: where it writes, which cluster, what each trial reserves, how it is tracked.

None of it changes what a trial computes (that is the study's base config and its trials, ``core.study.spec``).
The command line builds one :class:`StudyOptions` (``core.study.cli``); a study runs from Python with one
made directly: ``run_study(study, StudyOptions(results_dir="results/mine"))``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class StudyOptions:
    """Every option of ``core.study.runner.run_study`` (the study flags of ``python studies/*.py --help``)."""

    results_dir: str | None = None  # the table, report and plots (default results/<study>[_<config>])
    storage: str | None = None  # Tune's state and every run: a shared path or a URI (default: the results dir)
    address: str | None = None  # a Ray cluster to join (default: a private local instance)
    resume: bool = False  # finish an interrupted study
    overwrite: bool = False  # delete an existing study of the same data first
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 0  # Train workers per trial (0: the loop runs in the trial's process)
    trial_resources: tuple[tuple[str, float], ...] = ()  # custom Ray resources per trial (per Train worker)
    accelerator_type: str | None = None  # trials only on nodes with this accelerator (e.g. A10G)
    max_concurrent: int = 0  # trials at a time (0: the CPU cores, locally; 1 with worker groups)
    loggers: tuple[str, ...] = ("tensorboard",)
    mlflow_uri: str | None = None
    dashboard: bool = False  # the Ray dashboard of a local study, on 127.0.0.1
    num_samples: int | None = None  # a search's trials
    config_files: tuple[str, ...] = ()  # the --config files (they name the default results directory)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "StudyOptions":
        """The options of a parsed study command line (``core.study.cli.add_study_args``)."""
        return cls(results_dir=args.results_dir, storage=args.storage, address=args.address, resume=args.resume,
                   overwrite=args.overwrite, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                   workers_per_trial=args.workers_per_trial, trial_resources=tuple(args.trial_resource),
                   accelerator_type=args.accelerator_type, max_concurrent=args.max_concurrent,
                   loggers=tuple(args.logger or ("tensorboard",)), mlflow_uri=args.mlflow_uri,
                   dashboard=args.dashboard, num_samples=args.num_samples, config_files=tuple(args.config or ()))

    def custom_resources(self) -> dict[str, float]:
        """What a trial (each Train worker of a group) reserves besides CPUs and GPUs: the trial resources and
        the accelerator type (Ray's own convention: a sliver of ``accelerator_type:NAME``)."""
        accelerator = {f"accelerator_type:{self.accelerator_type}": 0.001} if self.accelerator_type else {}
        return {**dict(self.trial_resources), **accelerator}
