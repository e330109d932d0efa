"""Trials per hour of a CIFAR-scale sweep (ResNet-18, 32 px) with one trial per GPU against four
trials packed on one GPU (``--gpus-per-trial 0.25``), same grid, measured in one run. Skips cleanly
without a GPU.

    python benchmarks/gpu_sweep_packing.py [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))


def sweep(root: str, gpus_per_trial: float, epochs: int, results: str) -> tuple[int, float]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("study", Path(__file__).parents[1] / "studies" /
                                                  "augmentation_robustness.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    argv = ["--losses", "supcon", "cross_entropy", "--policies", "simaugment", "--strengths", "0.5", "1.0",
            "--seeds", "0", "--epochs", str(epochs), "--gpus-per-trial", str(gpus_per_trial),
            "--cpus-per-trial", str(max(1, (os.cpu_count() or 4) // 4)), "--max-concurrent", str(int(1 / gpus_per_trial)),
            "--results-dir", results, "data.source=cifar10", f"data.root={root}", "data.image_size=32",
            "model.backbone=resnet18", "optim.batch_size=512", "eval.robustness=false", "eval.probe_epochs=5",
            "eval.few_shot_episodes=0"]
    t0 = time.perf_counter()
    study.main_for(study.make_study, "packing", argv, extra_args=study.extra_args)
    return 4, time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: sweep packing benchmark skipped")
        return 0
    from gpu_end_to_end import make_cifar_folder

    work = tempfile.mkdtemp(prefix="packing-")
    root = make_cifar_folder(os.path.join(work, "cifar"))
    rows = []
    for share in (1.0, 0.25):
        n, wall = sweep(root, share, args.epochs, os.path.join(work, f"results-{share}"))
        rows.append((share, n, wall, 3600 * n / wall))
    print("| GPUs per trial | trials | wall | trials per hour |\n|---|---|---|---|")
    for share, n, wall, tph in rows:
        print(f"| {share} | {n} | {wall:.0f} s | {tph:.1f} |")
    print(f"\npacking 4 trials per GPU: {rows[1][3] / rows[0][3]:.2f}x the trials per hour of one trial per GPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
