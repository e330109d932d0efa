"""Is SupCon stable across hyperparameters, and ahead of cross-entropy at every batch size?

SupCon's Fig. 4 claims top-1 accuracy that varies little across temperatures, optimisers and
learning rates, and beats cross-entropy at every batch size. This study sweeps temperature for the
contrastive losses (cross-entropy has none), and batch size, learning rate and optimiser for both.

    python studies/hyperparameter_stability.py                 # embedded digits
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from core.config import RunConfig
from core.report import Claim, plot_lines
from core.study import Study, base_config, main_for

DEFAULT = RunConfig().with_overrides(["optim.epochs=8", "model.width=24", "eval.robustness=true", "eval.probe_epochs=50",
                                    "eval.online_knn=false"])  # grid study: no scheduler needs per-epoch kNN


def plots(df: pd.DataFrame, out: Path) -> list[Path]:
    made = [plot_lines(df[df["cfg.loss.name"] != "cross_entropy"], "cfg.loss.temperature", "probe_top1",
                       "cfg.loss.name", None, out / "accuracy_vs_temperature.png", "probe accuracy vs temperature"),
            plot_lines(df, "cfg.optim.batch_size", "probe_top1", "cfg.loss.name", "cfg.optim.optimizer",
                       out / "accuracy_vs_batch.png", "probe accuracy vs batch size"),
            plot_lines(df, "cfg.optim.batch_size", "corruption_acc", "cfg.loss.name", "cfg.optim.optimizer",
                       out / "corruption_vs_batch.png", "corruption accuracy vs batch size")]
    return [p for p in made if p]


def make_study(args: argparse.Namespace) -> Study:
    optim = {"optim.batch_size": args.batch_sizes, "optim.optimizer": args.optimizers}
    return Study(
        name="hyperparameter_stability",
        question=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        base=base_config(args, DEFAULT),
        grid=[{"loss.name": ["supcon"], "loss.temperature": args.temperatures, **optim},
              {"loss.name": ["cross_entropy"], **optim}],
        seeds=args.seeds or [0, 1],
        summary_metrics=["probe_top1", "corruption_acc", "fewlabel_1_acc", "knn_top1"],
        claims=[Claim("SupCon is ahead of cross-entropy at every batch size and optimiser", "probe_top1",
                      settings=("cfg.optim.batch_size", "cfg.optim.optimizer")),
                Claim("SupCon varies less across batch size and optimiser than cross-entropy", "probe_top1",
                      kind="spread", better="lower", settings=("cfg.optim.batch_size", "cfg.optim.optimizer"))],
        plots=plots,
    )


def extra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.05, 0.1, 0.5])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    p.add_argument("--optimizers", nargs="+", default=["sgd", "adamw"])


if __name__ == "__main__":
    sys.exit(main_for(make_study, __doc__, extra_args=extra_args))
