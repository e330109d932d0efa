"""Hyperparameter search: Optuna TPE through Ray Tune's OptunaSearch, ASHA early stopping on the
per-epoch online kNN accuracy, over temperature, batch size, augmentation strength and KL weight.

With two or more --objectives the search is multi-objective (no early stopping: schedulers take one
metric) and the report plots the Pareto front. --optuna-storage (sqlite:///study.db or a journal file
path ending in .log) keeps the Optuna study for optuna-dashboard.

    python studies/search.py --loss varcon --num-samples 16
    python studies/search.py --loss vsupcon --objectives probe_top1 corruption_acc --optuna-storage study.log
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from core.config import RunConfig
from core.eval.glossary import require
from core.results import RunStatus
from core.study import OptunaSpace, Search, Study, base_config, main_for, question

DEFAULT = RunConfig().with_overrides(["optim.epochs=8", "eval.probe_epochs=50"])


def pareto_plot(df: pd.DataFrame, out: Path, objectives: list[str]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[(df["status"] == RunStatus.FINISHED)].dropna(subset=objectives[:2]) if set(objectives[:2]) <= set(df) else df.iloc[0:0]
    if len(objectives) < 2 or ok.empty:
        return []
    x, y = ok[objectives[0]].values, ok[objectives[1]].values
    front = [i for i in range(len(x)) if not any((x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i])))]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(x, y, alpha=0.5, label="trials")
    fx, fy = zip(*sorted(zip(x[front], y[front])))
    ax.plot(fx, fy, "r-o", label="Pareto front")
    ax.set_xlabel(objectives[0])
    ax.set_ylabel(objectives[1])
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


def make_study(args: argparse.Namespace) -> Study:
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    require(args.objectives, "--objectives")  # before any trial runs
    base = base_config(args, DEFAULT)
    loss = args.loss or base.loss.name  # the flag wins over --config and overrides
    base = base.with_(**{"loss.name": loss,
                         "eval.robustness": base.eval.robustness or "corruption_acc" in args.objectives})

    multi = len(args.objectives) > 1
    search = OptunaSearch(OptunaSpace(loss, args.seed), metric=args.objectives if multi else args.objectives[0],
                          mode=["max"] * len(args.objectives) if multi else "max", seed=args.seed,
                          study_name=f"search-{loss}", storage=_storage(args.optuna_storage))
    scheduler = None if multi else ASHAScheduler(metric="knn_top1", mode="max", time_attr="training_iteration",
                                                 max_t=base.optim.epochs + 1, grace_period=args.grace_period)
    return Study(name=f"search_{loss}", question=question(__doc__), base=base,
                 trials=Search(search, num_samples=args.num_samples or 8, scheduler=scheduler), seeds=[args.seed],
                 summary_metrics=[*args.objectives, "knn_top1"],
                 plots=lambda df, out: pareto_plot(df, out, args.objectives))


def extra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--loss", default=None, choices=["supcon", "simclr", "varcon", "vsupcon", "vsimclr"],
                   help="the loss searched (default: loss.name of the config, supcon unless set)")
    p.add_argument("--objectives", nargs="+", default=["knn_top1"],
                   help="one: maximised per epoch with ASHA (knn_top1 is reported every epoch); "
                        "several: final metrics, multi-objective, no early stopping")
    p.add_argument("--optuna-storage", default=None, help="Optuna storage: sqlite:///file.db or a journal path *.log")
    p.add_argument("--grace-period", type=int, default=2, help="ASHA: epochs before a trial may be stopped")
    p.add_argument("--seed", type=int, default=0)


if __name__ == "__main__":
    sys.exit(main_for(make_study, __doc__, extra_args=extra_args))
