"""ImageNet-shape data path on realistic JPEGs: two augmented 224 px views per image per second
per CPU core, ours against torchvision's ``ImageFolder`` + ``DataLoader`` with the standard
RandomResizedCrop(224) recipe, measured in the same run on the same files.

The JPEGs are made from real photographs shipped inside scikit-learn and scikit-image
(``core.tools.photos``), cropped and resized to 500 x 375, quality 90 (ImageNet's typical size).

- **baseline** (SupContrast style): ``ImageFolder`` + a ``TwoCropTransform`` of
  RandomResizedCrop(224, scale 0.08-1) -> flip -> ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8 ->
  RandomGrayscale(0.2) -> ToTensor -> Normalize, in a ``DataLoader`` with ``num_workers=0`` (one core).
- **ours, one core**: ``decode_view_batch`` (each view cut from the original at decode time, JPEG
  draft when the crop allows) + ``augment_cropped`` (vectorised photometric part, simaugment at
  strength 1), in this process.
- **ours, Ray Data**: the same two stages as the training stream (``epoch_dataset`` +
  ``train_batches``) over every core of the machine, reported per core.

Prints views/s and the ratio, and how many cores feed ResNet-50 on one H100 at the measured
3,700 views/s (bf16, channels_last, ``benchmarks/RESULTS.md``).

    python benchmarks/jpeg_pipeline.py                # 20 classes x 40 images, about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from core.runtime import start_ray

H100_RESNET50_VIEWS_PER_S = 3700.0


def torchvision_baseline(root: str, size: int, images: int) -> float:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    normalize = transforms.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    tf = transforms.Compose([
        transforms.RandomResizedCrop(size=size, scale=(0.08, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2),
        transforms.ToTensor(),
        normalize,
    ])

    class TwoCrop:
        def __call__(self, x):
            return [tf(x), tf(x)]

    ds = datasets.ImageFolder(os.path.join(root, "train"), transform=TwoCrop())
    loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=0)
    t0, n = time.perf_counter(), 0
    for views, _ in loader:
        n += 2 * views[0].shape[0]
        if n >= 2 * images:
            break
    return n / (time.perf_counter() - t0)


def ours_one_core(root: str, size: int, images: int, photometric: bool = True) -> tuple[float, dict[str, float]]:
    """Read + decode-time crops (+ the photometric part unless it runs on the GPU), batch by batch in
    this process (one core)."""
    from core.data.augment import augment_cropped
    from core.data.decode import decode_view_batch
    from core.data.sources import image_folder_rows

    rows, _ = image_folder_rows(os.path.join(root, "train"))
    order = np.random.default_rng(0).permutation(rows.count())[:images]
    t_read = t_decode = t_aug = 0.0
    n = 0
    for start in range(0, len(order), 32):
        sel = order[start: start + 32]
        t0 = time.perf_counter()
        data = []
        for p in rows.paths[sel]:
            with open(p, "rb") as fh:
                data.append(fh.read())
        t1 = time.perf_counter()
        batch = decode_view_batch({"bytes": data, "label": rows.labels[sel], "index": rows.index[sel]},
                                  size=size, views=2, strength=1.0, seed=0, epoch=0, min_area=0.08)
        t2 = time.perf_counter()
        if photometric:
            augment_cropped(torch.from_numpy(batch["views"]), batch["index"], policy="simaugment", strength=1.0,
                            seed=0, epoch=0)
        t3 = time.perf_counter()
        t_read, t_decode, t_aug = t_read + t1 - t0, t_decode + t2 - t1, t_aug + t3 - t2
        n += 2 * len(sel)
    total = t_read + t_decode + t_aug
    return n / total, {"read": t_read / total, "decode+crop": t_decode / total, "photometric": t_aug / total}


def ours_ray_data(root: str, size: int, images: int) -> float:
    import ray

    from core.config import RunConfig
    from core.data.pipeline import epoch_dataset, make_views, train_batches
    from core.data.sources import load_source

    cfg = RunConfig().with_(**{"data.source": "imagefolder", "data.root": root, "data.image_size": size,
                               "augment.min_crop_area": 0.08, "augment.strength": 1.0, "optim.batch_size": 64})
    src = load_source(cfg.data)
    start, t0, n = time.perf_counter(), None, 0
    for batch in train_batches(epoch_dataset(src.train_rows, cfg, 0), 64):
        make_views(batch, cfg, 0, torch.device("cpu"))
        if t0 is None:  # steady state: from the first batch on (the pipeline's start-up is reported apart)
            t0, startup = time.perf_counter(), time.perf_counter() - start
            continue
        n += 2 * len(batch["label"])
    rate = n / (time.perf_counter() - t0)
    ray.shutdown()
    print(f"Ray Data stream: {startup:.1f} s to the first batch, then {rate:.0f} views/s")
    return rate


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--per-class", type=int, default=60)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--root", default=None, help="reuse a folder made earlier (default: a temporary one)")
    args = p.parse_args()
    torch.set_num_threads(1)
    from core.tools.photos import make_photo_folder

    root = args.root or tempfile.mkdtemp(prefix="jpegs-")
    if not os.path.isdir(os.path.join(root, "train")):
        t0 = time.perf_counter()
        make_photo_folder(root, args.classes, {"train": args.per_class, "val": 2}, size=(500, 375), quality=90)
        print(f"made {args.classes * args.per_class} JPEGs (500 x 375, q90) in {time.perf_counter() - t0:.1f} s "
              f"under {root}")
    n = args.classes * args.per_class
    cores = os.cpu_count() or 1
    base = torchvision_baseline(root, args.size, n)
    ours, split = ours_one_core(root, args.size, n)
    cpu_part, _ = ours_one_core(root, args.size, n, photometric=False)

    start_ray(num_cpus=cores, log_to_driver=False)
    torch.set_num_threads(1)
    streamed = ours_ray_data(root, args.size, n)
    print(f"\n{n} images, two {args.size} px views each, this machine: {cores} cores")
    print("| pipeline | views/s | views/s per core | vs baseline per core |\n|---|---|---|---|")
    print(f"| torchvision ImageFolder + DataLoader(num_workers=0), RandomResizedCrop recipe (baseline) | "
          f"{base:.0f} | {base:.0f} | 1.00x |")
    print(f"| ours, one core: decode-time crops + vectorised photometric | {ours:.0f} | {ours:.0f} | {ours / base:.2f}x |")
    print(f"| ours, one core, CPU part only (photometric part on the GPU, data.augment_in=trainer) | {cpu_part:.0f} | "
          f"{cpu_part:.0f} | {cpu_part / base:.2f}x |")
    print(f"| ours, Ray Data stream on {cores} cores (epoch_dataset + make_views) | {streamed:.0f} | "
          f"{streamed / cores:.0f} | {streamed / cores / base:.2f}x |")
    print("\none-core time split: " + ", ".join(f"{k} {v:.0%}" for k, v in split.items()))
    print(f"cores to feed ResNet-50 on one H100 at {H100_RESNET50_VIEWS_PER_S:.0f} views/s: "
          f"{H100_RESNET50_VIEWS_PER_S / ours:.0f} with decode + photometric on CPU; "
          f"{H100_RESNET50_VIEWS_PER_S / cpu_part:.0f} with the photometric "
          f"part on the GPU (data.augment_in=trainer); torchvision's recipe would need "
          f"{H100_RESNET50_VIEWS_PER_S / base:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
