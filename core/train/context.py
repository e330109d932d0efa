"""Where the loop runs: a Ray Train worker (:class:`WorkerContext`) or this process
(:class:`InProcessContext`). Each gives the loop its rank, its data and its checkpoint store."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import ray.train
import ray.tune
import torch
from ray.train import Checkpoint

from core.config import RunConfig
from core.data.pipeline import epoch_dataset, epoch_stream, in_memory
from core.data.sources import ImageSource, TrainRows
from core.results import scalars
from core.runs.checkpoint import TrainState, choose_state, load_state, save_state
from core.runs.rundir import PREVIOUS, STATE_FILE
from core.runs.storage import StoredRun


class WorkerContext:
    """What the loop needs from Ray Train inside a TorchTrainer worker."""

    def __init__(self, train_rows: TrainRows) -> None:
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.train_rows = train_rows

    def dataset(self, name: str):
        return ray.train.get_dataset_shard(name)

    def epoch_stream(self, cfg: RunConfig, epoch: int):
        """This rank's share of the epoch's training stream: from in-memory arrays each rank gathers its
        own; otherwise rank 0 builds the epoch's dataset (its own shuffled order and seeds) and splits it
        into one iterator per rank."""
        if self.world == 1 or in_memory(self.train_rows, cfg):
            return epoch_stream(self.train_rows, cfg, epoch, self.rank, self.world)
        iterators: list[Any] = [None] * self.world
        if self.rank == 0:
            iterators = epoch_dataset(self.train_rows, cfg, epoch).streaming_split(self.world, equal=True)
        torch.distributed.broadcast_object_list(iterators, src=0)
        return iterators[self.rank]

    def load_state(self, device: torch.device) -> TrainState | None:
        checkpoint = ray.train.get_checkpoint()
        if not checkpoint:
            return None
        with checkpoint.as_directory() as d:
            return load_state([os.path.join(d, STATE_FILE)], device)

    def report(self, metrics: dict, state: TrainState, dir_name: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if self.rank == 0:
                save_state(os.path.join(d, STATE_FILE), state)
                ckpt = Checkpoint.from_directory(d)
            ray.train.report(scalars(metrics), checkpoint=ckpt, checkpoint_dir_name=dir_name)


class InProcessContext:
    """``num_workers=0``: the loop runs in this process (a laptop run, or one Tune trial) on the
    full datasets. The checkpoint is the run directory's state file (write-then-rename). Inside a
    Tune trial (``tune_trial=True``) each epoch is also reported to Tune, so ASHA sees every epoch.
    With object storage, the stored run pushes the state file to its record after every epoch:
    a trial retried on another node, or after a driver restart, fetches it and resumes (the run
    directory on a local or shared path is that record already). A state that Tune holds as a
    checkpoint (studies of earlier versions) is read too; resuming takes whichever is further along."""

    rank, world = 0, 1

    def __init__(self, source: ImageSource, stored: StoredRun, tune_trial: bool = False) -> None:
        self.source, self.stored, self.tune_trial = source, stored, tune_trial
        self.state_path = stored.run.local_state

    def dataset(self, name: str):
        return {"train_eval": self.source.train_eval, "test": self.source.test}[name]

    def epoch_stream(self, cfg: RunConfig, epoch: int):
        return epoch_stream(self.source.train_rows, cfg, epoch)

    def load_state(self, device: torch.device) -> TrainState | None:
        states = []
        if self.tune_trial and (checkpoint := ray.tune.get_checkpoint()):
            with checkpoint.as_directory() as d:
                states.append(load_state([os.path.join(d, STATE_FILE)], device))
        states.append(load_state([self.state_path, f"{self.state_path}{PREVIOUS}"], device))
        return choose_state(states)

    def report(self, metrics: dict, state: TrainState, dir_name: str) -> None:
        # The local file is written synchronously, before Tune hears of the epoch: a driver killed
        # before Tune's next experiment snapshot restores the trial as unfinished, and the rerun
        # must find this file to return at once instead of training again.
        self.stored.save_state(state)
        if self.tune_trial:
            ray.tune.report(scalars(metrics))
