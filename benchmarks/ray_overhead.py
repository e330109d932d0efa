"""Ray overhead on the embedded default: the same runs called directly (in-process ``fit``)
against the same runs as Ray Tune trials of a study, measured in the same run.

Reports Ray start-up, per-trial overhead (study wall / trials - direct run time, one trial at a
time) and the speed-up from running trials concurrently on this machine's cores.

    python benchmarks/ray_overhead.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import ray

from core.config import RunConfig
from core.runtime import start_ray
from core.study import Grid, Study, add_study_args, run_study
from core.train import fit

OVERRIDES = ["optim.epochs=2", "model.width=16", "eval.probe_epochs=20", "eval.online_knn=false",
             "data.train_limit=1024", "optim.batch_size=128"]


def study_wall(base: RunConfig, seeds: list[int], concurrent: int, out: str) -> float:
    parser = argparse.ArgumentParser()
    add_study_args(parser)
    args = parser.parse_args(["--results-dir", out, "--max-concurrent", str(concurrent)])
    study = Study(name="overhead", question="Ray overhead", base=base, trials=Grid({"loss.name": ["supcon"]}), seeds=seeds)
    t0 = time.perf_counter()
    table, _ = run_study(study, args)
    wall = time.perf_counter() - t0
    assert (table["status"] == "finished").all(), table
    return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=4)
    args = p.parse_args()
    cores = os.cpu_count() or 2
    t0 = time.perf_counter()
    start_ray(num_cpus=2 * cores, log_to_driver=False)
    init_s = time.perf_counter() - t0
    base = RunConfig().with_overrides(OVERRIDES)
    with tempfile.TemporaryDirectory() as tmp:
        fit(base.with_(seed=99, storage_path=f"{tmp}/warm"), verbose=False)  # first-touch costs (imports, data)
        direct = []
        for seed in range(args.trials):
            t = time.perf_counter()
            fit(base.with_(seed=seed, storage_path=f"{tmp}/direct"), verbose=False, torch_threads=cores)
            direct.append(time.perf_counter() - t)
        per_run = sum(direct) / len(direct)
        seeds = list(range(100, 100 + args.trials))
        serial = study_wall(base, seeds, 1, f"{tmp}/serial")
        parallel = study_wall(base, [s + 100 for s in seeds], cores, f"{tmp}/parallel")
    ray.shutdown()
    print(f"{args.trials} SupCon runs on digits (2 epochs, width 16, 1024 images), {cores} cores")
    print(f"{'what':<58} {'seconds':>8}")
    print(f"{'ray.init (local)':<58} {init_s:>8.2f}")
    print(f"{'direct fit(), per run (in-process, all cores)':<58} {per_run:>8.2f}")
    print(f"{'study, 1 trial at a time: wall per trial':<58} {serial / args.trials:>8.2f}")
    print(f"{'  -> Tune overhead per trial':<58} {serial / args.trials - per_run:>8.2f}")
    print(f"{f'study, {cores} trials at a time: wall per trial':<58} {parallel / args.trials:>8.2f}")
    print(f"\nstudy wall ({cores} concurrent) vs summed direct compute: {sum(direct) / parallel:.2f}x "
          f"(1 trial at a time: {sum(direct) / serial:.2f}x)")


if __name__ == "__main__":
    main()
