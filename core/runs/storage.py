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
from core.runs.identity import legacy_run_name, run_name
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


def place(cfg) -> RunPlace:
    """Where the run of ``cfg`` lives. A run written under hash version 1 is found under its old name
    (``<loss>-<version-1 hash>``) when no run of the current name exists: re-running its config resumes
    it or finds it finished instead of training a second copy."""
    storage = cfg.storage_path if is_uri(cfg.storage_path) else os.path.abspath(cfg.storage_path)
    if not is_uri(storage) and os.path.exists(storage) and not os.path.isdir(storage):
        raise StorageError(f"storage_path={cfg.storage_path!r} is a file, not a directory: runs are directories "
                           f"under it")
    name = run_name(cfg)
    old = legacy_run_name(cfg)
    if old and not _has_run(storage, name) and _has_run(storage, old):
        name = old
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


def mirror_run(run: RunDir, remote: str, names: Iterable[str] = MIRRORED) -> None:
    """Copy the run directory's files ``names`` (those that exist) to ``remote``, a URI. An object is
    published whole when its upload completes (a reader never sees half a checkpoint)."""
    fs, base = filesystem(remote)
    for name in names:
        local = run.path / name
        if local.exists():
            try:
                with fs.open_output_stream(join(base, name)) as out:
                    out.write(local.read_bytes())
            except OSError as exc:
                raise StorageError(f"cannot write {join(remote, name)}: {exc}") from None


def fetch_run(remote: str, run: RunDir) -> list[str]:
    """The run stored at ``remote`` brought into this run directory, the store being the truth: each mirrored
    file and, of a worker group's run, the newest ``epoch=*/state.pt`` the store holds replaces this
    directory's copy where it differs (a run resumed and finished on another machine is not mistaken for this
    machine's stale epoch); TensorBoard event files (append-only) are copied where missing. A file only this
    directory has is kept (the run's own ``config.json`` before its first upload). Returns the names fetched."""
    fs, base = filesystem(remote)
    epochs = sorted(i.base_name for i in list_dir(remote) if i.type == pafs.FileType.Directory
                    and i.base_name.startswith(EPOCH_PREFIX))
    board = [f"{TENSORBOARD_DIR}/{i.base_name}" for i in list_dir(join(remote, TENSORBOARD_DIR))
             if i.type == pafs.FileType.File]
    names = [*MIRRORED, *board, *([f"{epochs[-1]}/{STATE_FILE}"] if epochs else [])]
    fetched = []
    for name in names:
        local = run.path / name
        if name.startswith(TENSORBOARD_DIR) and local.exists():
            continue
        data = read_bytes(fs, join(base, name))
        if data is not None and (not local.exists() or local.read_bytes() != data):
            write_atomic(local, lambda tmp, data=data: tmp.write_bytes(data))
            fetched.append(name)
    return fetched


def local_copy(run_dir: str) -> tuple[str, str | None]:
    """(a local run directory, the URI it mirrors or None) for a run directory given as a path or a URI."""
    if not is_uri(run_dir):
        return run_dir, None
    store, _, name = run_dir.rstrip("/").rpartition("/")
    local = Path(working_copy(store, name))
    local.mkdir(parents=True, exist_ok=True)
    if not fetch_run(run_dir, RunDir(local)) and not (local / CONFIG_FILE).exists():
        raise CheckpointError(f"{run_dir}: no run there (no {CONFIG_FILE})")
    return str(local), run_dir
