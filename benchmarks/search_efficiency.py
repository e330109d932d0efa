"""Search efficiency: Optuna TPE + ASHA against the full grid on the same discrete space
(SupCon temperature x augmentation strength on the embedded digits), measured in the same run.

Compute is counted in trial-epochs. The grid must train every point to the end to know its best;
the search stops when a trial it trained to the end is within ``--tolerance`` kNN points of the
grid's best, and the ratio of the two costs is reported.

    python benchmarks/search_efficiency.py
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import ray

from core.config import RunConfig
from core.runtime import start_ray
from core.study import Grid, Search, Study, StudyOptions, run_study

SPACE = {"loss.temperature": [0.03, 0.07, 0.1, 0.2, 0.5], "augment.strength": [0.0, 0.5, 1.0]}
BASE = ["model.width=16", "eval.probe_epochs=5", "eval.online_knn=true", "optim.batch_size=128",
        "data.train_limit=1024"]


class GridSpace:
    """Define-by-run Optuna space over the grid's own values (picklable for Tune)."""

    def __init__(self, space: dict[str, list]) -> None:
        self.space = space

    def __call__(self, trial) -> dict:
        for key, values in self.space.items():
            trial.suggest_categorical(key, values)
        return {"seed": 0}


def _args(out: str, concurrent: int) -> StudyOptions:
    return StudyOptions(results_dir=out, max_concurrent=concurrent)


def timeline(results: Path) -> list[dict]:
    """Every epoch every trial trained, in the order trained (trials run one at a time)."""
    runs = sorted((results / "runs").iterdir(), key=lambda d: (d / "config.json").stat().st_mtime)
    return [{"run": d.name, **json.loads(line)} for d in runs for line in (d / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--samples", type=int, default=8, help="search trials")
    p.add_argument("--tolerance", type=float, default=0.5)
    args = p.parse_args()
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    cores = os.cpu_count() or 2
    start_ray(num_cpus=2 * cores, log_to_driver=False)
    base = RunConfig().with_overrides([*BASE, f"optim.epochs={args.epochs}"])
    with tempfile.TemporaryDirectory() as tmp:
        grid, _ = run_study(Study(name="grid", question="grid", base=base, trials=Grid(SPACE), seeds=[0]),
                            _args(f"{tmp}/grid", cores))
        best = float(grid["knn_top1"].max())
        grid_cost = len(grid) * args.epochs
        search = Study(name="search", question="search", base=base, seeds=[0], trials=Search(
            OptunaSearch(GridSpace(SPACE), metric="knn_top1", mode="max", seed=0), num_samples=args.samples,
            scheduler=ASHAScheduler(metric="knn_top1", mode="max", time_attr="training_iteration",
                                    max_t=args.epochs + 1, grace_period=1, reduction_factor=2)))
        table, _ = run_study(search, _args(f"{tmp}/search", 1))
        epochs = timeline(Path(tmp) / "search")
    ray.shutdown()
    cost, reached_at, best_seen = 0, None, float("-inf")
    for row in epochs:
        cost += 1
        if row["epoch"] == args.epochs - 1:  # trained to the end: its final kNN counts
            best_seen = max(best_seen, row["knn_top1"])
            if reached_at is None and row["knn_top1"] >= best - args.tolerance:
                reached_at = cost
    print(f"space: {' x '.join(f'{k} {v}' for k, v in SPACE.items())}; SupCon, digits, {args.epochs} epochs, kNN top-1")
    print(f"grid: {len(grid)} points x {args.epochs} epochs = {grid_cost} trial-epochs, best kNN {best:.2f}")
    print(f"TPE + ASHA: {len(table)} trials, {cost} trial-epochs in all "
          f"({(table['status'] == 'stopped early').sum()} stopped early), best kNN {best_seen:.2f}")
    if reached_at:
        print(f"within {args.tolerance} points of the grid's best after {reached_at} trial-epochs: "
              f"{grid_cost / reached_at:.2f}x less compute than the grid")
    else:
        print(f"never within {args.tolerance} points of the grid's best in {cost} trial-epochs "
              f"(the grid used {grid_cost})")


if __name__ == "__main__":
    main()
