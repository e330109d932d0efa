"""Where a run lives, decided once: a local or shared path, or a working copy on this machine mirrored
to an object store; and the copies between the two.

With ``storage_path=s3://bucket/runs`` a run's working copy is ``LOCAL_RUNS_DIR/<store>-<hash>/<run name>``,
its record ``s3://bucket/runs/<run name>`` (the truth: a working copy is refreshed from it before use): the in-process loop mirrors it every epoch, a worker group's
checkpoints go there through Ray Train, and another machine fetches it to resume, to find it
finished, to re-score or to export it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pyarrow.fs as pafs

from core.errors import CheckpointError, StorageError
from core.fs import filesystem, is_uri, join, list_dir, read_bytes
from core.io import write_atomic
from core.runs.checkpoint import TrainState, save_state
from core.runs.identity import run_names
from core.runs.rundir import (
    CONFIG_FILE,
    EPOCH_PREFIX,
    EVALUATION_FILE,
    LOCAL_STATE_FILE,
    METRICS_FILE,
    STATE_FILE,
    SUMMARY_FILE,
    TENSORBOARD_DIR,
    RunDir,
)

LOCAL_RUNS_DIR = "~/.cache/contrastive-platform/runs"  # working copies of runs whose storage is a URI
MIRRORED = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, EVALUATION_FILE, LOCAL_STATE_FILE)


@dataclass(frozen=True)
class RunPlace:
    """Where one run lives: ``storage`` (Ray Train's storage path: absolute, or a URI), ``run_dir`` (the
    directory this machine reads and writes) and ``mirror`` (the run's URI in an object store, or None)."""

    storage: str
    name: str
    run_dir: str
    mirror: str | None

    def stored(self) -> "StoredRun":
        return StoredRun(RunDir(self.run_dir), self.mirror)


def place(cfg) -> RunPlace:
    """Where the run of ``cfg`` lives. A run written under an earlier hash version is found under its old
    name (``<loss>-<version-2 or version-1 hash>``) when no run of the current name exists: re-running its
    config resumes it or finds it finished instead of training a second copy."""
    storage = cfg.storage_path if is_uri(cfg.storage_path) else os.path.abspath(cfg.storage_path)
    if not is_uri(storage) and os.path.exists(storage) and not os.path.isdir(storage):
        raise StorageError(f"storage_path={cfg.storage_path!r} is a file, not a directory: runs are directories "
                           f"under it")
    names = run_names(cfg)
    name = names[0]
    if len(names) > 1 and not _has_run(storage, name):  # a run of an earlier hash version keeps its name
        name = next((old for old in names[1:] if _has_run(storage, old)), name)
    if is_uri(storage):
        return RunPlace(storage, name, working_copy(storage, name), join(storage, name))
    return RunPlace(storage, name, os.path.join(storage, name), None)


def working_copy(storage: str, name: str) -> str:
    """This machine's directory for the run ``name`` stored at ``storage`` (a URI): keyed by the store and
    the run, so two stores' runs of one config never share a working copy."""
    store = storage.rstrip("/")
    readable = re.sub(r"[^A-Za-z0-9]+", "-", store.split("://", 1)[-1]).strip("-")[-48:]
    key = hashlib.sha1(store.encode()).hexdigest()[:8]
    return os.path.join(os.path.expanduser(LOCAL_RUNS_DIR), f"{readable}-{key}", name)


def _has_run(storage: str, name: str) -> bool:
    """Whether ``storage/name`` holds a run (its ``config.json``)."""
    fs, base = filesystem(storage)
    try:
        return fs.get_file_info(join(base, name, CONFIG_FILE)).type == pafs.FileType.File
    except OSError as exc:
        raise StorageError(f"cannot read {join(storage, name)}: {exc}") from None


@dataclass(frozen=True)
class StoredRun:
    """A run directory on this machine and, for a run kept in an object store, its record there (``mirror``,
    a URI; the truth). The one owner of the copies between the two: every place that reads or writes a
    stored run (the trainer, the loop's rank 0, the in-process checkpoint, re-scoring, export) pulls and
    pushes through it. Without a mirror, pulling and pushing do nothing: the run directory is the record."""

    run: RunDir
    mirror: str | None = None

    @classmethod
    def open(cls, run_dir: str | Path) -> "StoredRun":
        """A stored run named by a local path or a URI; a URI's run is pulled into its working copy first
        and refused if the store holds no run there."""
        run_dir = str(run_dir)
        if not is_uri(run_dir):
            return cls(RunDir(run_dir))
        store, _, name = run_dir.rstrip("/").rpartition("/")
        stored = cls(RunDir(working_copy(store, name)), run_dir)
        stored.run.path.mkdir(parents=True, exist_ok=True)
        if not stored.pull() and not stored.run.config.exists():
            raise CheckpointError(f"{run_dir}: no run there ({CONFIG_FILE})")
        return stored

    def pull(self) -> list[str]:
        """The record brought into the run directory, the store being the truth: each mirrored file and, of a
        worker group's run, the newest ``epoch=*/state.pt`` the store holds replaces this directory's copy
        where it differs (a run resumed and finished on another machine is not mistaken for this machine's
        stale epoch); TensorBoard event files (append-only) are copied where missing. A file only this
        directory has is kept (the run's own ``config.json`` before its first upload). Returns the names
        fetched."""
        if not self.mirror:
            return []
        fs, base = filesystem(self.mirror)
        epochs = sorted(i.base_name for i in list_dir(self.mirror) if i.type == pafs.FileType.Directory
                        and i.base_name.startswith(EPOCH_PREFIX))
        board = [f"{TENSORBOARD_DIR}/{i.base_name}" for i in list_dir(join(self.mirror, TENSORBOARD_DIR))
                 if i.type == pafs.FileType.File]
        names = [*MIRRORED, *board, *([f"{epochs[-1]}/{STATE_FILE}"] if epochs else [])]
        self.run.path.mkdir(parents=True, exist_ok=True)
        fetched = []
        for name in names:
            local = self.run.path / name
            if name.startswith(TENSORBOARD_DIR) and local.exists():
                continue
            data = read_bytes(fs, join(base, name))
            if data is not None and (not local.exists() or local.read_bytes() != data):
                write_atomic(local, lambda tmp, data=data: tmp.write_bytes(data))
                fetched.append(name)
        return fetched

    def push(self, names: Iterable[str] = MIRRORED) -> None:
        """The run directory's files ``names`` (those that exist) copied to the record. An object is published
        whole when its upload completes (a reader never sees half a checkpoint)."""
        if not self.mirror:
            return
        fs, base = filesystem(self.mirror)
        for name in names:
            local = self.run.path / name
            if local.exists():
                try:
                    with fs.open_output_stream(join(base, name)) as out:
                        out.write(local.read_bytes())
                except OSError as exc:
                    raise StorageError(f"cannot write {join(self.mirror, name)}: {exc}") from None

    def save_state(self, state: TrainState) -> None:
        """An in-process run's checkpoint: the run directory's state file (written before anyone hears of the
        epoch), then the state and the metrics log pushed to the record."""
        save_state(self.run.local_state, state)
        self.push([LOCAL_STATE_FILE, METRICS_FILE])
