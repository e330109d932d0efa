"""How much memory the data path and the evaluation may hold, decided in one place.

- **Object store.** Ray Data runs a dataset's tasks ahead of its consumer until its object-store budget
  is full: by default half the store, gigabytes, which the epoch's decoded views filled (pages that
  stay mapped after the objects are freed, so memory grew with the data set). Every dataset the
  platform builds (training epochs, evaluation splits, corruption folders, shard reads) carries a
  budget of a few batches of what it yields (decoded views or evaluation images), and at least the
  output of the decode tasks that run at once; ``data.object_store_mb`` sets it. The budget travels
  with the dataset, so it holds on a cluster too. A run's private Ray instance gets a store of a few
  times those budgets (:func:`run_store_bytes`): with Ray's default store of gigabytes, one run at
  16,000 images held 327 MiB of shared store pages at its evaluation's peak against budgets of under
  80 MB; a store no larger than a few budgets bounds those pages by construction.
- **A scheduler that waits while the budget is full.** Ray Data's scheduling loop does not block while an
  operator's finished output is held back by the budget (``ray.wait`` returns at once on it), so behind
  a slow consumer it turned about 400 times a second, 20-45% of a core on 2 cores; the training step's
  threads lost that core share and more (an epoch took 1.3-1.7x as long). :class:`PauseWhileHeldBack`
  rides along with every budget and makes each such turn wait (``core/data/scheduler_pause.py``).
- **Evaluation chunks.** Images are encoded ``chunk`` at a time (at most ``MAX_CHUNK``), sized from the
  model's activations by ``core.eval.chunk``.
"""

from __future__ import annotations

import ray.data

from core.config import DataConfig, RunConfig
from core.data.block_ops import ROWS_PER_BLOCK
from core.data.scheduler_pause import PauseWhileHeldBack
from core.registry import SOURCES

MIN_MB = 16
BATCHES_IN_FLIGHT = 4  # training batches the pipeline may hold ahead of its consumer
CHUNKS_IN_FLIGHT = 2  # evaluation chunks (up to MAX_CHUNK images each) ahead of the encoder
TASKS_IN_FLIGHT = 2  # decode tasks' outputs (ROWS_PER_BLOCK rows each): fewer and the tasks wait for each other
MAX_CHUNK = 512  # evaluation images per forward pass at most


def store_budget(data: DataConfig, rows: int, views: int = 1, float_views: bool = False,
                 in_flight: int = BATCHES_IN_FLIGHT) -> int:
    """Object-store bytes for a dataset yielding ``rows``-image batches of ``views`` views each
    (uint8, or float32 when the photometric part ran in Ray Data): ``in_flight`` batches, or the
    outputs of ``TASKS_IN_FLIGHT`` decode tasks if more, at least ``MIN_MB``."""
    if data.object_store_mb is not None:
        return data.object_store_mb << 20
    view_bytes = data.image_size ** 2 * 3 * (4 if float_views else 1)
    return max(MIN_MB << 20, max(in_flight * rows, TASKS_IN_FLIGHT * ROWS_PER_BLOCK) * views * view_bytes)


def training_budget(cfg: RunConfig) -> int:
    """The budget of one epoch's training stream: a rank's budget for each rank, since rank 0 builds one
    stream and splits it across the worker group (a single rank's budget shared by 16 ranks was a quarter
    of a batch each, and less than one decode task's output)."""
    ranks = max(1, cfg.num_workers)
    return ranks * store_budget(cfg.data, cfg.optim.batch_size // ranks, cfg.augment.views,
                                float_views=cfg.data.augment_in == "ray_data")


def evaluation_budget(data: DataConfig) -> int:
    """The budget of an evaluation split's stream (chunks of at most ``MAX_CHUNK`` images)."""
    return store_budget(data, MAX_CHUNK, in_flight=CHUNKS_IN_FLIGHT)


RUN_STORE_FLOOR = 256 << 20
RUN_STORE_BUDGETS = 4  # a run's store holds this many of its training + evaluation budgets


def run_store_bytes(cfg: RunConfig) -> int | None:
    """The object store of a run's private Ray instance: ``RUN_STORE_BUDGETS`` x (training + evaluation
    budget), at least ``RUN_STORE_FLOOR``; None (Ray's default, a share of the RAM) for a source whose
    arrays go into the store whole, whose size the config does not say."""
    if SOURCES.get(cfg.data.source).in_memory:
        return None
    return max(RUN_STORE_FLOOR, RUN_STORE_BUDGETS * (training_budget(cfg) + evaluation_budget(cfg.data)))


def bounded(ds: ray.data.Dataset, nbytes: int) -> ray.data.Dataset:
    """``ds`` with its object-store budget set and its scheduler paused while the budget holds it
    back (its own context: other datasets are not affected)."""
    context = ds.context
    context.execution_options.resource_limits = context.execution_options.resource_limits.copy(
        object_store_memory=nbytes)
    if PauseWhileHeldBack is not None and PauseWhileHeldBack not in context.custom_execution_callback_classes:
        context.custom_execution_callback_classes = [*context.custom_execution_callback_classes, PauseWhileHeldBack]
    return ds


def execution_options(cfg: RunConfig):
    """Ray Data execution options for the evaluation splits handed to a Train worker group (Train sets
    these on the datasets it is given): ordered, within the budget."""
    from ray.data import ExecutionOptions, ExecutionResources

    return ExecutionOptions(preserve_order=True,
                            resource_limits=ExecutionResources(object_store_memory=evaluation_budget(cfg.data)))
