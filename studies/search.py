"""Hyperparameter search: Optuna TPE through Ray Tune's OptunaSearch, ASHA early stopping on the
per-epoch online kNN accuracy, over temperature, batch size, augmentation strength and KL weight
(or, with --space FILE.yaml, over any config fields).

--objectives take a direction (probe_top1:max corruption_error:min; without one, the metric glossary's).
With two or more the search is multi-objective (no early stopping: schedulers take one metric) and the
report plots the Pareto front. --optuna-storage (sqlite:///study.db or a journal file path ending in
.log) keeps the Optuna study for optuna-dashboard, named --study-name; --overwrite deletes it there.

    python studies/search.py --loss varcon --num-samples 16
    python studies/search.py --loss vsupcon --objectives probe_top1 corruption_error:min --optuna-storage study.log
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from core.config import RunConfig
from core.errors import ConfigError
from core.results import RunStatus
from core.study import Search, Study, base_config, main_for, question
from core.study.space import Objective, OptunaSpace, SearchSpace

DEFAULT = RunConfig().with_overrides(["optim.epochs=8", "eval.probe_epochs=50"])
PER_EPOCH = ("knn_top1",)  # metrics every epoch reports (what ASHA can read)


def pareto_front(values: np.ndarray, objectives: list[Objective]) -> list[int]:
    """Rows of ``values`` ([n, k]) that no other row beats on every objective (each in its direction)."""
    signed = values * np.array([1.0 if o.mode == "max" else -1.0 for o in objectives])
    return [i for i in range(len(signed))
            if not any((signed >= signed[i]).all(1) & (signed > signed[i]).any(1))]


def pareto_plot(df: pd.DataFrame, out: Path, objectives: list[Objective]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [o.name for o in objectives[:2]]
    ok = df[(df["status"] == RunStatus.FINISHED)].dropna(subset=names) if set(names) <= set(df) else df.iloc[0:0]
    if len(objectives) < 2 or ok.empty:
        return []
    values = ok[names].to_numpy(float)
    front = pareto_front(values, objectives[:2])
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(values[:, 0], values[:, 1], alpha=0.5, label="trials")
    fx, fy = zip(*sorted(zip(values[front, 0], values[front, 1])))
    ax.plot(fx, fy, "r-o", label="Pareto front")
    ax.set_xlabel(f"{names[0]} ({objectives[0].mode})")
    ax.set_ylabel(f"{names[1]} ({objectives[1].mode})")
    ax.legend()
    fig.tight_layout()
    path = out / "pareto_front.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _storage(spec: str | None):
    if not spec:
        return None
    import optuna

    if spec.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(spec))
    return optuna.storages.RDBStorage(spec)


class _Searcher:
    """Builds the OptunaSearch when the study runs (after --overwrite has deleted the old Optuna study:
    OptunaSearch loads an existing one as it is built)."""

    def __init__(self, space, objectives: list[Objective], seed: int, name: str, storage: str | None) -> None:
        self.space, self.objectives, self.seed, self.name, self.storage = space, objectives, seed, name, storage

    def __call__(self):
        from ray.tune.search.optuna import OptunaSearch

        multi = len(self.objectives) > 1
        return OptunaSearch(self.space, metric=[o.name for o in self.objectives] if multi else self.objectives[0].name,
                            mode=[o.mode for o in self.objectives] if multi else self.objectives[0].mode,
                            seed=self.seed, study_name=self.name, storage=_storage(self.storage))

    def reset(self) -> None:
        """Delete this search's Optuna study from its storage (``--overwrite``)."""
        import optuna

        if self.storage is None:
            return
        storage = _storage(self.storage)
        if self.name in [s.study_name for s in optuna.get_all_study_summaries(storage)]:
            optuna.delete_study(study_name=self.name, storage=storage)


def make_study(args: argparse.Namespace) -> Study:
    from ray.tune.schedulers import ASHAScheduler

    objectives = [Objective.parse(o) for o in args.objectives]  # before any trial runs
    if len({o.name for o in objectives}) != len(objectives):
        raise ConfigError(f"--objectives {' '.join(args.objectives)}: an objective is given twice")
    base = base_config(args, DEFAULT)
    loss = args.loss or base.loss.name  # the flag wins over --config and overrides
    needs_corruptions = any(o.name.startswith(("corruption", "imagenet_c", "ece_s")) for o in objectives)
    base = base.with_(**{"loss.name": loss, "eval.robustness": base.eval.robustness or needs_corruptions})
    space = SearchSpace.from_yaml(args.space, base, args.seed) if args.space else OptunaSpace(loss, args.seed)
    searcher = _Searcher(space, objectives, args.seed, args.study_name or f"search-{loss}", args.optuna_storage)
    single = objectives[0] if len(objectives) == 1 else None
    scheduler = ASHAScheduler(metric=single.name, mode=single.mode, time_attr="training_iteration",
                              max_t=base.optim.epochs + 1, grace_period=args.grace_period) \
        if single and single.name in PER_EPOCH else None
    return Study(name=f"search_{loss}", question=question(__doc__), base=base,
                 trials=Search(searcher, num_samples=args.num_samples or 8, scheduler=scheduler,
                               objectives=tuple(objectives)),
                 seeds=[args.seed], summary_metrics=[*(o.name for o in objectives), "knn_top1"],
                 plots=lambda df, out: pareto_plot(df, out, objectives))


def extra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--loss", default=None, choices=["supcon", "simclr", "varcon", "vsupcon", "vsimclr"],
                   help="the loss searched (default: loss.name of the config, supcon unless set)")
    p.add_argument("--objectives", nargs="+", default=["knn_top1"],
                   help="metric[:max|:min] (default direction: the glossary's, python -m core.eval.glossary). One: "
                        "optimised by TPE, with ASHA early stopping when it is reported every epoch (knn_top1); "
                        "several: final metrics, multi-objective, no early stopping")
    p.add_argument("--space", default=None, metavar="FILE.yaml",
                   help="search space over any config fields, e.g. 'optim.lr: {float: [0.01, 1], log: true}' "
                        "(default: the loss's knobs, batch size, augmentation strength)")
    p.add_argument("--study-name", default=None, help="Optuna study name (default search-<loss>)")
    p.add_argument("--optuna-storage", default=None, help="Optuna storage: sqlite:///file.db or a journal path *.log")
    p.add_argument("--grace-period", type=int, default=2, help="ASHA: epochs before a trial may be stopped")
    p.add_argument("--seed", type=int, default=0)


if __name__ == "__main__":
    sys.exit(main_for(make_study, __doc__, extra_args=extra_args))
