"""Files that are never half-written: every writer here writes a temporary sibling and renames it
over the target (``os.replace`` is atomic on one file system), so a crash or a concurrent reader
sees the previous version or the new one, never a mixture."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable

from core.errors import DataError, LockedError


def cache_dir() -> Path:
    """Where what the platform derives from data and reuses across runs lives (decoded small data sets,
    corrupted evaluation splits): ``$CONTRASTIVE_CACHE``, else ``~/.cache/contrastive-platform``."""
    return Path(os.environ.get("CONTRASTIVE_CACHE") or os.path.expanduser("~/.cache/contrastive-platform"))


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` over ``path``; returns ``path``.
    The temporary name keeps the suffix (``x.tmp.parquet``) so writers that infer a format from it work."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """JSON (``default=str`` for paths, enums and the like), written then renamed."""
    return write_text_atomic(path, json.dumps(payload, indent=2, default=str))


def append_jsonl(path: str | Path, row: dict) -> None:
    """One JSON line appended (a line is one ``write``: readers never see half a row)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row, default=str) + "\n")


def remove_paths(paths: Iterable[str | Path]) -> None:
    """Delete files and directory trees, never following a symbolic link (a link is removed, not its
    target); missing ones are fine."""
    for path in map(Path, paths):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # rmtree removes links inside the tree without following them
        else:
            path.unlink(missing_ok=True)


def refuse_symlink(directory: str | Path, what: str) -> None:
    """A results or run directory must be a real directory: writing or deleting through a link would
    reach outside the tree it names."""
    if Path(directory).is_symlink():
        raise DataError(f"{what} {str(directory)!r} is a symbolic link (to {os.readlink(directory)!r}); refusing to "
                        f"write or delete through it: pass the real directory")


def unlocked_entries(directory: str | Path) -> list[Path]:
    """Everything in a directory but its ``.lock`` (what ``--overwrite`` deletes while holding the lock)."""
    refuse_symlink(directory, "directory")
    return [p for p in Path(directory).iterdir() if p.name != ".lock"]


class DirectoryLock:
    """Exclusive advisory lock on ``directory/.lock`` (``fcntl.flock``), held from :meth:`acquire` until
    :meth:`release`; the kernel releases it if the holder dies, so a crash never leaves a stale lock.
    A second writer is refused with a message naming the directory and the holder's pid (``wait``: it
    waits for the holder instead, e.g. two trials that train the same run). A clean release removes the
    file (a finished study or run keeps no ``.lock`` with a dead pid): a waiter that then holds the removed
    file sees it is no longer the one at the path and locks the path again."""

    def __init__(self, directory: str | Path, what: str = "directory", wait: bool = False) -> None:
        self.path, self.what, self.wait, self.fh = Path(directory) / ".lock", what, wait, None

    def acquire(self) -> "DirectoryLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fh = open(self.path, "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "?"
                fh.close()
                raise LockedError(f"{self.what} {str(self.path.parent)!r} is being written by another process "
                                  f"(pid {holder}); wait for it to finish or use another directory") from None
            try:
                current = os.stat(self.path).st_ino == os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            fh.close()  # the holder we waited for removed this file on release: lock the path's file anew
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self.fh = fh
        return self

    def release(self) -> None:
        if self.fh is not None:
            try:
                self.path.unlink()  # while still held: no other process holds this file's lock
            except FileNotFoundError:
                pass
            self.fh.close()  # closing the descriptor drops the flock
            self.fh = None

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class ScalarBoard:
    """A run's numeric metrics as TensorBoard scalars under ``DIR/tensorboard`` (tensorboardX, which
    Ray Tune installs), one point per epoch: ``tensorboard --logdir runs/``."""

    def __init__(self, run_dir: str | Path) -> None:
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def write(self, metrics: dict, step: int) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
