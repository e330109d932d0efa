"""Is SupCon stable across hyperparameters, and ahead of cross-entropy at every batch size?

SupCon's Fig. 4 claims top-1 accuracy that varies little across temperatures, optimisers and
learning rates, and beats cross-entropy at every batch size. This study sweeps temperature for SupCon
(cross-entropy has none), and batch size, optimiser and a learning rate per optimiser for both.

    python studies/hyperparameter_stability.py                 # embedded digits
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from core.study import Grid, Study, grid_study_defaults, main_for, question, study_base
from core.study.claims import Claim
from core.study.report import plot_lines

DEFAULT = grid_study_defaults(epochs=6)


def plots(df: pd.DataFrame, out: Path) -> list[Path]:
    made = [plot_lines(df[df["cfg.loss.name"] != "cross_entropy"], "cfg.loss.temperature", "probe_top1",
                       "cfg.loss.name", None, out / "accuracy_vs_temperature.png", "probe accuracy vs temperature"),
            plot_lines(df, "cfg.optim.batch_size", "probe_top1", "cfg.loss.name", "cfg.optim.optimizer",
                       out / "accuracy_vs_batch.png", "probe accuracy vs batch size"),
            plot_lines(df, "cfg.optim.batch_size", "corruption_acc", "cfg.loss.name", "cfg.optim.optimizer",
                       out / "corruption_vs_batch.png", "corruption accuracy vs batch size")]
    return made


def make_study(args: argparse.Namespace) -> Study:
    blocks = []  # learning-rate ranges differ by optimiser, so each optimiser is its own block
    for optimizer, lrs in (("sgd", args.sgd_lrs), ("adamw", args.adamw_lrs)):
        if optimizer in args.optimizers:
            common = {"optim.batch_size": args.batch_sizes, "optim.optimizer": [optimizer], "optim.lr": lrs}
            blocks += [{"loss.name": ["supcon"], "loss.temperature": args.temperatures, **common},
                       {"loss.name": ["cross_entropy"], **common}]
    settings = ("cfg.optim.batch_size", "cfg.optim.optimizer", "cfg.optim.lr")
    return Study(
        name="hyperparameter_stability",
        question=question(__doc__),
        **study_base(args, DEFAULT),
        trials=Grid(*blocks),
        seeds=args.seeds or [0, 1],
        summary_metrics=["probe_top1", "corruption_acc", "fewlabel_1_acc", "knn_top1"],
        claims=[Claim("SupCon is ahead of cross-entropy at every batch size, optimiser and learning rate",
                      "probe_top1", settings=settings),
                Claim("SupCon varies less across hyperparameters (temperature, batch, optimiser, LR) than "
                      "cross-entropy (across batch, optimiser, LR)", "probe_top1", kind="spread", better="lower",
                      settings=settings)],
        plots=plots,
    )


def extra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.05, 0.2])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    p.add_argument("--optimizers", nargs="+", default=["sgd", "adamw"], choices=["sgd", "adamw"])
    p.add_argument("--sgd-lrs", type=float, nargs="+", default=[0.02, 0.1])
    p.add_argument("--adamw-lrs", type=float, nargs="+", default=[1e-3])


if __name__ == "__main__":
    sys.exit(main_for(make_study, __doc__, extra_args=extra_args))
