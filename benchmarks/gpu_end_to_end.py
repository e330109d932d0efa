"""End-to-end GPU training speed through the platform against the bare training step, and against a
plain PyTorch loop in the SupContrast reference style, measured in one run per model.

- **ceiling**: the bare bf16 + channels_last training step on synthetic on-device images
  (``benchmarks/gpu_training.py``'s step): the model's speed limit.
- **platform**: ``core.train.trainer`` (Ray Data stream -> decode/crop -> photometric on the GPU ->
  bf16 step), views/s of its last epoch.
- **reference**: torchvision ``ImageFolder``/tensor dataset + ``DataLoader(num_workers=cores)`` with the
  SupContrast transforms per sample (TwoCropTransform), same model, loss, batch and precision.

Models: ``resnet18`` (CIFAR stem, 32 px, batch 512, from CIFAR-format arrays made from the bundled
photographs: no download) and ``resnet50`` (ImageNet stem, 224 px, batch 256, from parquet shards of
500 x 375 real-photo JPEGs). Skips cleanly without a GPU.

    python benchmarks/gpu_end_to_end.py --model resnet18
    python benchmarks/gpu_end_to_end.py --model resnet50 --augment-in trainer
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from core.runtime import start_ray

SETUPS = {"resnet18": {"stem": "cifar", "size": 32, "batch": 512},
          "resnet50": {"stem": "imagenet", "size": 224, "batch": 256}}


def make_cifar_folder(root: str, n_train: int = 20000, n_test: int = 1000) -> str:
    """CIFAR-10's on-disk python format (``cifar-10-batches-py``) filled with 32 px crops of the photographs."""
    from PIL import Image

    from core.tools.photos import sample_photos

    photos = [Image.fromarray(p) for p in sample_photos()]
    rng = np.random.default_rng(0)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def images(n: int) -> tuple[np.ndarray, list[int]]:
        out, labels = np.empty((n, 3072), np.uint8), []
        for i in range(n):
            c = int(rng.integers(0, 10))
            p = photos[c % len(photos)]
            w, h = p.size
            s = int(rng.integers(32, min(w, h)))
            x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
            out[i] = np.asarray(p.resize((32, 32), Image.BILINEAR, box=(x, y, x + s, y + s))).transpose(2, 0, 1).ravel()
            labels.append(c)
        return out, labels

    for k in range(1, 6):
        data, labels = images(n_train // 5)
        with open(folder / f"data_batch_{k}", "wb") as fh:
            pickle.dump({"data": data, "labels": labels}, fh)
    data, labels = images(n_test)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({"data": data, "labels": labels}, fh)
    return root


def make_jpeg_shards(root: str, per_class: int = 150) -> str:
    from core.data.shard import shard_dataset
    from core.tools.photos import make_photo_folder

    make_photo_folder(os.path.join(root, "jpegs"), 20, {"train": per_class, "val": 5}, size=(500, 375), quality=90)
    shard_dataset(os.path.join(root, "jpegs"), os.path.join(root, "shards"), 256, workers=os.cpu_count() or 1)
    return os.path.join(root, "shards")


def ceiling(model: str, steps: int = 20) -> float:
    sys.path.insert(0, str(Path(__file__).parent))
    from gpu_training import bench

    s = SETUPS[model]
    return bench(model, s["stem"], s["size"], s["batch"], "supcon", "bf16+cl", steps)


def platform(model: str, data_overrides: list[str], epochs: int, out: str, extra: list[str]) -> dict:
    import ray

    from core.config import RunConfig
    from core.train import fit

    s = SETUPS[model]
    cfg = RunConfig().with_overrides([f"model.backbone={model}", f"model.stem={s['stem']}",
                                      f"data.image_size={s['size']}", f"optim.batch_size={s['batch']}",
                                      f"optim.epochs={epochs}", "use_gpu=true", "eval.online_knn=false",
                                      "eval.probe_epochs=1", "eval.few_shot_episodes=0", f"storage_path={out}",
                                      "augment.policy=simaugment", "augment.strength=1.0", *data_overrides, *extra])
    if not ray.is_initialized():
        start_ray(num_cpus=os.cpu_count(), num_gpus=1, log_to_driver=False)
    res = fit(cfg, verbose=True, torch_threads=4)
    rows = [json.loads(x) for x in (Path(res.run_dir) / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    return {"views_per_s": max(r["views_per_s"] for r in rows[1:] or rows), "data_wait_s": last["data_wait_seconds"],
            "epoch_s": last["epoch_seconds"], "classes_per_batch": last["classes_per_batch"]}


def reference(model: str, data_root: str, kind: str, epochs_batches: int = 30) -> float:
    """SupContrast-style plain loop: per-sample torchvision transforms in a DataLoader."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from core.config import RunConfig
    from core.losses import head_of, supcon_loss
    from core.models import build_model

    s = SETUPS[model]
    size = s["size"]
    normalize = transforms.Normalize(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    tf = transforms.Compose([transforms.RandomResizedCrop(size=size, scale=(0.2 if size == 32 else 0.08, 1.0)),
                             transforms.RandomHorizontalFlip(),
                             transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                             transforms.RandomGrayscale(p=0.2), transforms.ToTensor(), normalize])

    class TwoCrop:
        def __call__(self, x):
            return [tf(x), tf(x)]

    if kind == "cifar":
        ds = datasets.CIFAR10(data_root, train=True, transform=TwoCrop(), download=False)
    else:
        ds = datasets.ImageFolder(os.path.join(data_root, "train"), transform=TwoCrop())
    loader = DataLoader(ds, batch_size=s["batch"], shuffle=True, num_workers=os.cpu_count() or 1, pin_memory=True,
                        drop_last=True, persistent_workers=True)
    cfg = RunConfig().with_overrides([f"model.backbone={model}", f"model.stem={s['stem']}"])
    net = build_model(cfg, 10, head_of(cfg)).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    n, t0 = 0, None
    for epoch in range(100):
        for i, (views, labels) in enumerate(loader):
            if n == 0 and t0 is None and i == 3:  # skip the workers' start-up
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            x = torch.cat(views).cuda(non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = labels.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                z = net(x).z
            b = y.shape[0]
            loss = supcon_loss(torch.stack([z[:b], z[b:]], 1), y, 0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if t0 is not None:
                n += 2 * b
            if n >= epochs_batches * 2 * b:
                torch.cuda.synchronize()
                return n / (time.perf_counter() - t0)
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=list(SETUPS), default="resnet18")
    p.add_argument("--augment-in", choices=["trainer", "ray_data"], default="trainer")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--work", default=None, help="where to make the data (default: a temporary folder)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: GPU end-to-end benchmark skipped")
        return 0
    work = args.work or tempfile.mkdtemp(prefix="gpu-e2e-")
    t0 = time.perf_counter()
    if args.model == "resnet18":
        root = make_cifar_folder(os.path.join(work, "cifar"))
        data = ["data.source=cifar10", f"data.root={root}"]
        ref_kind, ref_root = "cifar", root
    else:
        shards = make_jpeg_shards(work)
        data = ["data.source=parquet", f"data.root={shards}", "augment.min_crop_area=0.08"]
        ref_kind, ref_root = "folder", os.path.join(work, "jpegs")
    print(f"data made in {time.perf_counter() - t0:.0f} s", flush=True)
    extra = [f"data.augment_in={args.augment_in}"] + (["optim.compile=true"] if args.compile else [])
    top = ceiling(args.model)
    ours = platform(args.model, data, args.epochs, os.path.join(work, "runs"), extra)
    ref = reference(args.model, ref_root, ref_kind)
    s = SETUPS[args.model]
    print(f"\n{torch.cuda.get_device_name()}, {os.cpu_count()} CPU cores, {args.model} {s['size']} px batch {s['batch']}, "
          f"bf16 + channels_last, augment_in={args.augment_in}{', compile' if args.compile else ''}")
    print("| path | views/s | of the ceiling |\n|---|---|---|")
    print(f"| bare training step (ceiling) | {top:.0f} | 1.00 |")
    print(f"| platform end to end (fit) | {ours['views_per_s']:.0f} | {ours['views_per_s'] / top:.2f} |")
    print(f"| SupContrast-style DataLoader loop | {ref:.0f} | {ref / top:.2f} |")
    print(f"\nplatform vs reference: {ours['views_per_s'] / ref:.2f}x; data wait {ours['data_wait_s']:.1f} s of a "
          f"{ours['epoch_s']:.1f} s epoch; {ours['classes_per_batch']:.1f} classes per batch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
