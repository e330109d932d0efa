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

from core.config import RunConfig
from core.study import Study, base_config, main_for, question
from core.study.search import optuna_search, parse_objectives, search_plots, searchable_losses
from core.study.space import OptunaSpace, SearchSpace

DEFAULT = RunConfig().with_overrides(["optim.epochs=8", "eval.probe_epochs=50"])


def make_study(args: argparse.Namespace) -> Study:
    objectives = parse_objectives(args.objectives)  # before any trial runs
    base = base_config(args, DEFAULT)
    loss = args.loss or base.loss.name  # the flag wins over --config and overrides
    needs_corruptions = any(o.name.startswith(("corruption", "imagenet_c", "ece_s")) for o in objectives)
    base = base.with_(**{"loss.name": loss, "eval.robustness": base.eval.robustness or needs_corruptions})
    space = SearchSpace.from_yaml(args.space, base, args.seed) if args.space else OptunaSpace(loss, args.seed)
    search = optuna_search(space, objectives, seed=args.seed, name=args.study_name or f"search-{loss}",
                           storage=args.optuna_storage, num_samples=args.num_samples or 8, epochs=base.optim.epochs,
                           grace_period=args.grace_period)
    return Study(name=f"search_{loss}", question=question(__doc__), base=base, trials=search, seeds=[args.seed],
                 summary_metrics=[*(o.name for o in objectives), "knn_top1"], plots=search_plots(objectives))


def extra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--loss", default=None, choices=searchable_losses(),
                   help="the loss searched (default: loss.name of the config, supcon unless set)")
    p.add_argument("--objectives", nargs="+", default=["knn_top1"],
                   help="metric[:max|:min] (default direction: the glossary's, python -m core.metrics). One: "
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
