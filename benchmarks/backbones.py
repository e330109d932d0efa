"""Backbones researchers bring, on this CPU: forward + backward time per batch and parameter count,
with the platform's own ResNet-18 against torchvision's and timm's ResNet-18 in the same run; then
what re-scoring saves: a study whose trials differ only in evaluation trains once.

    python benchmarks/backbones.py [--batch 8] [--reps 3]     # ~3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from core.config import RunConfig
from core.losses import head_of
from core.models import build_model, check_backbone

BACKBONES = [  # (name, stem, image size it needs)
    ("resnet18", "imagenet", 224),
    ("torchvision:resnet18", "imagenet", 224),
    ("timm:resnet18", "imagenet", 224),
    ("torchvision:convnext_tiny", "imagenet", 224),
    ("timm:vit_small_patch16_224", "imagenet", 224),
]


def step_time(name: str, stem: str, size: int, batch: int, reps: int) -> tuple[float, int]:
    cfg = RunConfig().with_overrides([f"model.backbone={name}", f"model.stem={stem}", f"data.image_size={size}"])
    check_backbone(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, 10, head_of(cfg))
    loss_fn = torch.nn.functional.mse_loss
    x = torch.rand(batch, 3, size, size)
    times = []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        out = model(x).z
        loss_fn(out, torch.zeros_like(out)).backward()
        model.zero_grad(set_to_none=True)
        if i:  # the first pass warms up allocators
            times.append(time.perf_counter() - t0)
    return statistics.median(times), sum(p.numel() for p in model.parameters())


def rescore_saving() -> tuple[float, float]:
    """Wall time of a 2-loss x 3-kNN-k ablation on digits (15 epochs: training dominates, as in real
    studies): trials differing only in eval.knn_k share
    one training per loss (re-scored) against the same grid where each trial trains (a dummy training
    change makes each point its own run)."""

    from core.study import StudyOptions, Variants, run_study
    from core.study.spec import Study

    base = RunConfig().with_overrides(["optim.epochs=15", "eval.probe_epochs=20", "model.width=24",
                                       "eval.online_knn=false"])
    out = []
    for retrain in (False, True):
        variants = {f"{loss}-k{k}": {"loss.name": loss, "eval.knn_k": k,
                                     **({"optim.min_lr_ratio": 1e-3 + i * 1e-9} if retrain else {})}
                    for loss in ("supcon", "varcon") for i, k in enumerate((5, 50, 200))}
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            run_study(Study("rescore", "q", base, Variants(variants), seeds=[0], group="variant"),
                      StudyOptions(results_dir=tmp))
            out.append(time.perf_counter() - t0)
    return out[0], out[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--skip-study", action="store_true")
    p.add_argument("--skip-backbones", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    print(f"forward + backward of a batch of {args.batch}, median of {args.reps}, {torch.get_num_threads()} threads")
    print(f"{'backbone':32s} {'px':>4s} {'params (M)':>11s} {'s / batch':>10s} {'vs resnet18':>12s}")
    base = None
    for name, stem, size in ([] if args.skip_backbones else BACKBONES):
        seconds, params = step_time(name, stem, size, args.batch, args.reps)
        base = base or seconds
        print(f"{name:32s} {size:4d} {params / 1e6:11.2f} {seconds:10.3f} {seconds / base:11.2f}x", flush=True)
    if not args.skip_study:
        from core.runtime import start_ray

        start_ray(log_to_driver=False)
        rescored, retrained = rescore_saving()
        print(f"\n6-trial ablation (2 losses x 3 eval.knn_k): {rescored:.0f} s re-scoring (2 trainings) vs "
              f"{retrained:.0f} s training each trial; saved {retrained - rescored:.0f} s "
              f"({1 - rescored / retrained:.0%})")


if __name__ == "__main__":
    main()
