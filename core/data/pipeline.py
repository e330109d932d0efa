"""Augmentation as a Ray Data stage: ``map_batches`` on CPU tasks turns uint8 images into V
augmented, normalised views, so augmentation scales out to CPU nodes instead of running in the
(GPU) training process (``data.augment_in=ray_data``).

Views are seeded by (seed, epoch, view, sample index), never by the task or batch, so the stage
is rebuilt every epoch with that epoch's number and a sample gets the same views whatever the
worker count, block layout or order. Function tasks, not an actor pool: they cannot wait for a
CPU that a Train worker holds (no deadlock on a 2-CPU machine).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray
import torch

from core.config import RunConfig
from core.data.augment import augment_views

AUGMENT_BATCH = 128  # images per map_batches call


def augment_batch(batch: dict[str, np.ndarray], policy: str, strength: float, views: int, seed: int,
                  epoch: int) -> dict[str, np.ndarray]:
    """One ``map_batches`` call: ``image`` (uint8 [B, H, W, C]) -> ``views`` (float32 [B, V, C, H, W]).
    Other columns (label, index, and ok/path for decoded files) pass through."""
    images = torch.from_numpy(np.require(batch["image"], requirements="W"))
    out = {k: v for k, v in batch.items() if k != "image"}
    out["views"] = augment_views(images, np.asarray(batch["index"]), policy=policy, strength=strength,
                                 views=views, seed=seed, epoch=epoch).numpy()
    return out


def epoch_views(ds: ray.data.Dataset, cfg: RunConfig, epoch: int) -> ray.data.Dataset:
    """The training set of one epoch with its augmented views computed by Ray Data tasks."""
    kwargs: dict[str, Any] = {"policy": cfg.augment.policy, "strength": cfg.augment.strength,
                              "views": cfg.augment.views, "seed": cfg.seed, "epoch": epoch}
    return ds.map_batches(augment_batch, fn_kwargs=kwargs, batch_size=AUGMENT_BATCH, batch_format="numpy",
                          num_cpus=1)
