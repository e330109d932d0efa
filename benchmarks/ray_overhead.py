"""Ray overhead on the embedded default: the same runs called directly (in-process ``fit``)
against the same runs as Ray Tune trials of a study, measured in the same run.

Reports Ray start-up, per-trial overhead (study wall / trials - direct run time, one trial at a
time) and the speed-up from running trials concurrently on this machine's cores.

    python benchmarks/ray_overhead.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import ray

from core.config import RunConfig
from core.runtime import start_ray
from core.study import Grid, Study, StudyOptions, add_study_args, run_study
from core.train import fit

OVERRIDES = ["optim.epochs=2", "model.width=16", "eval.probe_epochs=20", "eval.online_knn=false",
             "data.train_limit=1024", "optim.batch_size=128"]


def study_wall(base: RunConfig, seeds: list[int], concurrent: int, out: str) -> float:
    study = Study(name="overhead", question="Ray overhead", base=base, trials=Grid({"loss.name": ["supcon"]}), seeds=seeds)
    t0 = time.perf_counter()
    table, _ = run_study(study, StudyOptions(results_dir=out, max_concurrent=concurrent))
    wall = time.perf_counter() - t0
    assert (table["status"] == "finished").all(), table
    return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=4, help="direct runs, and the trials of the larger study")
    p.add_argument("--main-trial-seconds", type=float, default=None,
                   help="a main-study trial's own time, for the overhead's share (default: measured on one trial)")
    args = p.parse_args()
    cores = os.cpu_count() or 2
    t0 = time.perf_counter()
    start_ray(num_cpus=2 * cores, log_to_driver=False)
    init_s = time.perf_counter() - t0
    base = RunConfig().with_overrides(OVERRIDES)
    small, big = 2, max(3, args.trials + 2)
    with tempfile.TemporaryDirectory() as tmp:
        fit(base.with_(seed=99, storage_path=f"{tmp}/warm"), verbose=False)  # first-touch costs (imports, data)
        direct = []
        for seed in range(args.trials):
            t = time.perf_counter()
            fit(base.with_(seed=seed, storage_path=f"{tmp}/direct"), verbose=False, torch_threads=cores)
            direct.append(time.perf_counter() - t)
        per_run = sum(direct) / len(direct)
        # the marginal wall of one more trial (two study sizes) separates the per-trial overhead from
        # the study's fixed costs (Tuner set-up, table, report and plots)
        walls = {n: study_wall(base, list(range(100 * n, 100 * n + n)), 1, f"{tmp}/serial{n}") for n in (small, big)}
        per_trial = (walls[big] - walls[small]) / (big - small)
        fixed = walls[small] - small * per_trial
        parallel = study_wall(base, list(range(1000, 1000 + big)), cores, f"{tmp}/parallel")
        main_trial = args.main_trial_seconds or _main_study_trial(tmp)
    ray.shutdown()
    overhead = per_trial - per_run
    print(f"SupCon runs on digits (2 epochs, width 16, 1024 images), {cores} cores")
    print(f"{'what':<64} {'seconds':>8}")
    print(f"{'ray.init (local)':<64} {init_s:>8.2f}")
    print(f"{'direct fit(), per run (in-process, all cores)':<64} {per_run:>8.2f}")
    print(f"{f'study of {small} / {big} trials, 1 at a time: wall':<64} {walls[small]:>8.1f} / {walls[big]:.1f}")
    print(f"{'  -> marginal wall per trial':<64} {per_trial:>8.2f}")
    print(f"{'  -> Tune overhead per trial (marginal wall - direct run)':<64} {overhead:>8.2f}")
    print(f"{'  -> fixed cost per study (Tuner, table, report, plots)':<64} {fixed:>8.2f}")
    print(f"{f'study of {big} trials, {cores} at a time: wall per trial':<64} {parallel / big:>8.2f}")
    print(f"{'a main-study trial (10 epochs + robustness evaluation), direct':<64} {main_trial:>8.2f}")
    print(f"\nTune overhead per trial: {overhead:.2f} s = {100 * overhead / main_trial:.0f}% of a main-study trial "
          f"(goal: under 10%)")


def _main_study_trial(tmp: str) -> float:
    """One trial of the main study's default grid, run directly (its config as the study builds it)."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "studies"))
    import augmentation_robustness as study_module

    from core.study import trial_config

    parser = argparse.ArgumentParser()
    add_study_args(parser)
    study_module.extra_args(parser)
    study = study_module.make_study(parser.parse_args([]))
    cfg = trial_config(study.base, study.points()[0]).with_(storage_path=f"{tmp}/main")
    fit(cfg, verbose=False, torch_threads=1)  # the corrupted split is built and cached once
    t = time.perf_counter()
    fit(cfg.with_(seed=cfg.seed + 1000), verbose=False, torch_threads=1)  # 2 concurrent trials: 1 thread each
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
