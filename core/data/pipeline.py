"""The training data path as Ray Data stages, rebuilt every epoch with the epoch in the seeds:

    rows.epoch(e, seed)                       file/row order drawn from (seed, e): class-mixed batches
      -> decode_view_batch   (encoded rows)   each view's crop cut from the full-resolution original
      -> photometric stage   (augment_in=ray_data only) colour/RandAugment on CPU tasks

Array rows (digits, CIFAR) skip Ray Data altogether: each rank gathers its batches of the epoch's
permutation from the arrays (:func:`epoch_stream`) and crops, flips and colours them on its device,
batched; with ``augment_in=ray_data`` their crop and photometric part run in one Ray Data stage
(:func:`augment_batch`) instead. Encoded rows reach the trainer as uint8 views, augmented there. The stream keeps its order
(``preserve_order``): batches depend on the seed, not on which task finished first. Views are
seeded by (seed, epoch, view, sample index), never by the task or batch, so a sample gets the
same views whatever the worker count, block layout or order. Function tasks, not an actor pool:
they cannot wait for a CPU that a Train worker holds (no deadlock on a 2-CPU machine).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import ray
import torch

from core.config import RunConfig
from core.data.augment import augment_cropped, augment_views
from core.data.budget import bounded, training_budget
from core.data.decode import decode_view_batch
from core.data.sources import ArrayRows, TrainRows, in_order
from core.registry import AUGMENTATIONS

AUGMENT_BATCH = 128  # images per map_batches call
DECODE_BATCH = 64  # encoded images per decode task call


class _DropRoutine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Progress bars disabled")


def quiet_ray_data() -> None:
    """In this process: Ray Data keeps its warnings and drops its routine INFO lines (about five per
    dataset pass: "Running Dataset", resources, "execution finished") and its per-dataset progress
    bars, which would bury the run's own progress lines."""
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    progress = logging.getLogger("ray.data._internal.progress")  # says once that the bars are off
    if not any(isinstance(f, _DropRoutine) for f in progress.filters):
        progress.addFilter(_DropRoutine())


def augment_batch(batch: dict[str, np.ndarray], policy: str, strength: float, views: int, seed: int,
                  epoch: int, min_area: float = 0.2) -> dict[str, np.ndarray]:
    """One ``map_batches`` call: ``image`` (uint8 [B, H, W, C]) -> ``views`` (float32 [B, V, C, H, W]).
    Other columns (label, index, and ok/path for decoded files) pass through."""
    images = torch.from_numpy(np.require(batch["image"], requirements="W"))
    out = {k: v for k, v in batch.items() if k != "image"}
    out["views"] = augment_views(images, np.asarray(batch["index"]), policy=policy, strength=strength,
                                 views=views, seed=seed, epoch=epoch, min_area=min_area).numpy()
    return out


def photometric_batch(batch: dict[str, np.ndarray], policy: str, strength: float, seed: int,
                      epoch: int) -> dict[str, np.ndarray]:
    """uint8 decoded ``views [B, V, S, S, C]`` -> normalised float32 ``views [B, V, C, S, S]``."""
    views = torch.from_numpy(np.require(batch["views"], requirements="W"))
    return {**batch, "views": augment_cropped(views, np.asarray(batch["index"]), policy=policy, strength=strength,
                                              seed=seed, epoch=epoch).numpy()}


def epoch_views(ds: ray.data.Dataset, cfg: RunConfig, epoch: int) -> ray.data.Dataset:
    """Array rows of one epoch with their augmented views computed by Ray Data tasks."""
    kwargs: dict[str, Any] = {"policy": cfg.augment.policy, "strength": cfg.augment.strength,
                              "views": cfg.augment.views, "seed": cfg.seed, "epoch": epoch,
                              "min_area": cfg.augment.min_crop_area}
    return ds.map_batches(augment_batch, fn_kwargs=kwargs, batch_size=AUGMENT_BATCH, batch_format="numpy",
                          num_cpus=1)


def in_memory(rows: TrainRows, cfg: RunConfig) -> bool:
    """Whether an epoch is gathered straight from in-memory arrays: an array source whose augmentation runs
    on the training device (``data.augment_in=ray_data`` keeps the Ray Data stage, which scales out)."""
    return isinstance(rows, ArrayRows) and cfg.data.augment_in == "trainer"


def epoch_stream(rows: TrainRows, cfg: RunConfig, epoch: int, rank: int = 0, world: int = 1):
    """Rank ``rank``'s stream of an epoch where every rank makes its own: in-memory arrays, batches gathered
    from them (:meth:`ArrayRows.share`), else the epoch's Ray Dataset (one rank of one)."""
    if in_memory(rows, cfg):
        return rows.share(epoch, cfg.seed, rank, world)  # type: ignore[union-attr]
    if world != 1:
        raise ValueError("a streamed epoch is built once by rank 0 and split (WorkerContext.epoch_stream)")
    return epoch_dataset(rows, cfg, epoch)


def epoch_dataset(rows: TrainRows, cfg: RunConfig, epoch: int) -> ray.data.Dataset:
    """The training stream of one epoch: rows in this epoch's order, decoded into cropped views
    where they are encoded, fully augmented where ``data.augment_in=ray_data``."""
    return bounded(_epoch_stages(rows, cfg, epoch), training_budget(cfg))


def _epoch_stages(rows: TrainRows, cfg: RunConfig, epoch: int) -> ray.data.Dataset:
    ds = rows.epoch(epoch, cfg.seed)
    a = cfg.augment
    if rows.encoded:
        ds = ds.map_batches(decode_view_batch, batch_size=DECODE_BATCH, batch_format="numpy", num_cpus=1,
                            fn_kwargs={"size": cfg.data.image_size, "views": a.views, "seed": cfg.seed,
                                       "epoch": epoch, "min_area": a.min_crop_area,
                                       "strength": 0.0 if AUGMENTATIONS.get(a.policy).identity else a.strength})
        if cfg.data.augment_in == "ray_data":
            ds = ds.map_batches(photometric_batch, batch_size=AUGMENT_BATCH, batch_format="numpy", num_cpus=1,
                                fn_kwargs={"policy": a.policy, "strength": a.strength, "seed": cfg.seed,
                                           "epoch": epoch})
        return in_order(ds)
    return in_order(epoch_views(ds, cfg, epoch) if cfg.data.augment_in == "ray_data" else ds)


def train_batches(stream: Any, batch_size: int):
    """This rank's numpy batches of an epoch's stream (a Dataset, a split iterator or an in-memory epoch), in the
    stream's order. There is no local shuffle buffer: the order was drawn by ``rows.epoch`` (a full
    permutation of arrays; listing, shard and in-shard order of encoded rows), and a buffer would
    make batches depend on which blocks arrived first (runs would not repeat) and, over decoded
    views, copy hundreds of MB per epoch."""
    return stream.iter_batches(batch_size=batch_size, drop_last=True, batch_format="numpy", prefetch_batches=2)


def make_views(batch: dict[str, np.ndarray], cfg: RunConfig, epoch: int, device: torch.device) -> torch.Tensor:
    """The trainer's side: whatever the stream carries -> normalised float views ``[B, V, C, H, W]`` on
    ``device``. uint8 data is copied to the device first and augmented there (the GPU when training
    on one), so the host only moves bytes."""
    a = cfg.augment
    if "views" in batch:
        views = _to_device(batch["views"], device)
        if views.dtype != torch.uint8:  # made by the Ray Data stage
            return views
        return augment_cropped(views, batch["index"], policy=a.policy, strength=a.strength, seed=cfg.seed,
                               epoch=epoch)
    images = _to_device(batch["image"], device)
    return augment_views(images, batch["index"], policy=a.policy, strength=a.strength, views=a.views,
                         seed=cfg.seed, epoch=epoch, min_area=a.min_crop_area)


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host array -> device tensor; through pinned memory to a GPU, so the copy overlaps compute."""
    t = torch.from_numpy(np.require(array, requirements="W"))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t
