"""Data-pipeline benchmark: two-view augmented images per second through our pipeline (Ray Data
iteration + hash-seeded batch augmentation, as in the training loop; and the same augmentation as a
Ray Data ``map_batches`` stage, ``data.augment_in=ray_data``) against a plain torchvision
``DataLoader`` with the same SimCLR transforms applied per sample (torchvision transforms v2), on
the same real images and the same CPU count, measured in the same run. Also splits our time into
Ray Data iteration and augmentation.

    python benchmarks/data_pipeline.py                   # digits upscaled to 32 px, 8192 images
    python benchmarks/data_pipeline.py --size 64 --images 4096
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import ray
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from core.config import RunConfig
from core.data.augment import augment_views

MEAN, STD = 0.5, 0.25  # the platform's default normalisation (data.mean, data.std), applied by the baseline too
from core.data.pipeline import epoch_views
from core.data.sources import arrays_to_dataset, digits_arrays
from core.runtime import start_ray


def simclr_transform(size: int) -> v2.Compose:
    """SimCLR's per-sample recipe (strength 1): crop, flip, colour jitter, grayscale, normalise."""
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([MEAN] * 3, [STD] * 3),
    ])


class TwoViews(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int) -> None:
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # uint8 [N, C, H, W]
        self.labels = torch.from_numpy(labels)
        self.transform = simclr_transform(size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = self.images[i]
        return torch.stack([self.transform(x), self.transform(x)]), self.labels[i]


def timed(fn, repeats: int) -> float:
    """Best of ``repeats`` (seconds): the steady state, not the first-touch warm-up."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=8192)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    base_images, base_labels, _ = digits_arrays(args.size)["train"]
    reps = -(-args.images // len(base_images))
    images = np.concatenate([base_images] * reps)[: args.images]
    labels = np.concatenate([base_labels] * reps)[: args.images]
    index = np.arange(len(images))
    n, b, views = len(images), args.batch_size, 2
    torch.set_num_threads(args.cpus)
    if not ray.is_initialized():
        start_ray(num_cpus=2 * args.cpus, log_to_driver=False)
    ds = arrays_to_dataset(images, labels, index).materialize()
    print(f"{n} digits images at {args.size} px, batch {b}, 2 views, {args.cpus} CPUs, torch {torch.__version__}, "
          f"ray {ray.__version__}")

    def ray_iterate(augment: bool) -> None:
        for batch in ds.iter_batches(batch_size=b, drop_last=True, batch_format="numpy",
                                     local_shuffle_buffer_size=4 * b, local_shuffle_seed=0):
            if augment:
                augment_views(torch.from_numpy(np.require(batch["image"], requirements="W")), batch["index"],
                              policy="simaugment", strength=1.0, views=views, seed=0, epoch=0)

    stage_cfg = RunConfig().with_overrides(["augment.policy=simaugment", "augment.strength=1.0"])

    def ray_data_stage() -> None:
        for _ in epoch_views(ds, stage_cfg, 0).iter_batches(batch_size=b, drop_last=True, batch_format="numpy",
                                                            local_shuffle_buffer_size=4 * b, local_shuffle_seed=0):
            pass

    def augment_only() -> None:
        x = torch.from_numpy(images)
        for start in range(0, n - b + 1, b):
            augment_views(x[start: start + b], index[start: start + b], policy="simaugment", strength=1.0,
                          views=views, seed=0, epoch=0)

    loader = DataLoader(TwoViews(images, labels, args.size), batch_size=b, shuffle=True, drop_last=True,
                        num_workers=args.cpus, persistent_workers=True, multiprocessing_context="forkserver")

    def torchvision_loader() -> None:
        for _ in loader:
            pass

    steps = n // b
    results = {
        "ours: Ray Data + batch augmentation": timed(lambda: ray_iterate(True), args.repeats),
        "ours, augment_in=ray_data: map_batches stage on Ray tasks": timed(ray_data_stage, args.repeats),
        f"baseline: DataLoader({args.cpus} workers) + torchvision v2 per sample": timed(torchvision_loader,
                                                                                       args.repeats),
        "  ours, Ray Data iteration only": timed(lambda: ray_iterate(False), args.repeats),
        "  ours, augmentation only (in memory)": timed(augment_only, args.repeats),
    }
    baseline = results[f"baseline: DataLoader({args.cpus} workers) + torchvision v2 per sample"]
    print(f"{'pipeline':<62} {'s/epoch':>8} {'views/s':>10} {'vs baseline':>11}")
    for name, sec in results.items():
        rate = steps * b * views / sec
        ratio = f"{baseline / sec:.2f}x" if not name.startswith("  ") else ""
        print(f"{name:<62} {sec:>8.3f} {rate:>10.0f} {ratio:>11}")
    ours = results["ours: Ray Data + batch augmentation"]
    print(f"\nours vs baseline: {baseline / ours:.2f}x the views/s (goal >= 0.9x); of our epoch, "
          f"{100 * results['  ours, Ray Data iteration only'] / ours:.0f}% is Ray Data iteration and "
          f"{100 * results['  ours, augmentation only (in memory)'] / ours:.0f}% augmentation")
    ray.shutdown()


if __name__ == "__main__":
    main()
