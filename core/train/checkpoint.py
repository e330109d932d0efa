"""The run directory and checkpoint format: one home for every file name and the state's shape.

A run lives in ``<storage>/<run name>/``::

    config.json          the resolved config and its hash (what the run is)
    metrics.jsonl        one row per epoch
    summary.json         the final row (status finished / diverged / failed)
    evaluation.json      the evaluation stage's full result (arrays and per-corruption scores included)
    latest_state.pt      the in-process checkpoint (``.previous``: the one before, kept for a torn write)
    epoch=NNNN/state.pt  a Train worker group's checkpoints (Ray Train keeps the last two)

A checkpoint is a :class:`TrainState` saved as a plain dict of tensors and builtins, loaded with
``torch.load(weights_only=True)`` (no arbitrary pickle from shared storage).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import warnings
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, Iterable

import torch

from core.config import RunConfig, config_differences
from core.errors import CheckpointError, ConfigError, StorageError, storage_error
from core.io import write_atomic
from core.results import RunStatus

STATE_FILE = "state.pt"  # inside a Train/Tune checkpoint directory
LOCAL_STATE_FILE = "latest_state.pt"  # the in-process checkpoint in the run directory
CONFIG_FILE, METRICS_FILE = "config.json", "metrics.jsonl"
SUMMARY_FILE, EVALUATION_FILE = "summary.json", "evaluation.json"
PREVIOUS = ".previous"  # suffix of the checkpoint a newer one replaced
LOCAL_RUNS_DIR = "~/.cache/contrastive-platform/runs"  # working copies of runs whose storage is a URI


def epoch_dir_name(epoch: int, diverged: bool = False) -> str:
    """Name of a Train checkpoint directory (``epoch=0003``, ``epoch=0003-diverged``)."""
    return f"epoch={epoch:04d}" + ("-diverged" if diverged else "")


@dataclass(frozen=True)
class RunDir:
    """The files of one run directory."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def evaluation(self) -> Path:
        return self.path / EVALUATION_FILE

    @property
    def local_state(self) -> Path:
        return self.path / LOCAL_STATE_FILE

    def state_files(self) -> list[Path]:
        """The run's checkpoints, newest first: the in-process state file (and the one it replaced) or
        Train's ``epoch=*/state.pt``."""
        candidates = [self.local_state, Path(str(self.local_state) + PREVIOUS),
                      *(Path(p) for p in glob.glob(str(self.path / "epoch=*" / STATE_FILE)))]
        return sorted((p for p in candidates if p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True)

    def truncate_metrics(self, start_epoch: int) -> None:
        """Drop ``metrics.jsonl`` rows of epochs at or past ``start_epoch`` (a run resumed from an older
        checkpoint trains them again: its log must not hold them twice)."""
        if not self.metrics.exists():
            return
        lines = self.metrics.read_text().splitlines()
        kept = [line for line in lines if line.strip() and _epoch_of(line) < start_epoch]
        if len(kept) != len(lines):
            write_atomic(self.metrics, lambda tmp: tmp.write_text("".join(f"{line}\n" for line in kept)))

    def check_identity(self, cfg: RunConfig) -> None:
        """Refuse a run directory that holds another config (a shared ``name=``, an edited config.json)."""
        saved = self.read_json(self.config)
        if saved is None:
            return
        if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
            raise CheckpointError(f"{self.config} holds no config (expected {{config: ..., config_hash: ...}})")
        if saved.get("config_hash") != cfg.config_hash():
            diff = config_differences(saved["config"], cfg.to_dict())
            raise ConfigError(f"run directory {self.path} holds another config ({saved.get('config_hash')}; this one "
                              f"is {cfg.config_hash()}: {'; '.join(diff[:5]) or 'same fields, other hash'}); "
                              f"choose another name= or storage_path")

    def read_json(self, path: Path) -> dict | None:
        """A JSON file of the run, or None when it is missing; a damaged one is a CheckpointError naming it."""
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise CheckpointError(f"{path} is not valid JSON ({exc})") from None


def _epoch_of(line: str) -> float:
    try:
        return float(json.loads(line).get("epoch", -1))
    except (ValueError, AttributeError):  # a torn last line: drop it with the rest
        return float("inf")


@dataclass
class TrainState:
    """What a checkpoint holds. ``final`` is the run's final metrics row once it has one; a
    ``diverged`` state is final and holds no weights."""

    config_hash: str
    epoch: int = -1
    step: int = 0
    history: list = field(default_factory=list)
    final: dict = field(default_factory=dict)
    records: dict = field(default_factory=dict)  # the evaluation's arrays and per-corruption scores
    status: str = RunStatus.RUNNING.value
    model: dict | None = None
    optimizer: dict | None = None
    torch_rng: torch.Tensor | None = None

    @property
    def diverged(self) -> bool:
        return self.status == RunStatus.DIVERGED

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: Any, source: str = "checkpoint") -> "TrainState":
        if not isinstance(raw, dict) or "config_hash" not in raw:
            raise CheckpointError(f"{source}: not a checkpoint of this platform (no config_hash)")
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in raw.items() if k in known})
        if state.epoch < 0 and state.final:  # a diverged state records its epoch in the final row
            state.epoch = int(state.final.get("epoch", -1))
        return state


def save_state(path: str | Path, state: TrainState) -> None:
    """Write-then-rename, keeping the previous good state beside it (a torn newest one falls back). A
    write that fails for lack of space (torch reports it as ``RuntimeError ... inline_container``) is a
    StorageError naming the path."""
    path = Path(path)
    if path.exists():
        os.replace(path, str(path) + PREVIOUS)
    try:
        write_atomic(path, partial(torch.save, state.to_dict()))
    except (RuntimeError, OSError) as exc:
        free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
        named = storage_error(exc, path) if isinstance(exc, OSError) else None
        if named is None and free >= 64 << 20:
            raise
        raise named or StorageError(f"cannot write {str(path)!r}: no space left on the device "
                                    f"({free / 2**20:.0f} MiB free)") from None


def load_state(candidates: Iterable[str | Path], device: torch.device) -> TrainState | None:
    """The first readable checkpoint of ``candidates`` (newest first). An unreadable one is named in a
    warning and skipped; if every existing one is unreadable the run stops naming them."""
    errors = []
    for path in (str(p) for p in candidates if os.path.exists(p)):
        try:
            return TrainState.from_dict(torch.load(path, map_location=device, weights_only=True), path)
        except Exception as exc:  # truncated, corrupt, or not a plain state file
            errors.append(f"{path}: {type(exc).__name__}: {str(exc)[:120]}")
            warnings.warn(f"unreadable checkpoint {path!r} ({type(exc).__name__}); trying an older one")
    if errors:
        raise CheckpointError("no readable checkpoint: " + "; ".join(errors)
                              + " (delete them to start the run afresh)")
    return None


def choose_state(states: Iterable[TrainState | None]) -> TrainState | None:
    """The most advanced of several saved states (e.g. the run directory's and Tune's copies).
    A diverged run's state is final and wins; otherwise the highest epoch wins."""
    found = [s for s in states if s]
    return max(found, key=lambda s: float("inf") if s.diverged else s.epoch, default=None)


@dataclass
class ResumePoint:
    """Where a run continues: the first epoch to train, the step counter and the epochs already
    recorded; ``final`` is set when there is nothing left to do (finished or diverged earlier)."""

    start_epoch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    final: dict | None = None
    records: dict = field(default_factory=dict)
    state: TrainState | None = None  # model/optimizer/RNG to load when training continues


def resume_point(state: TrainState | None, config_hash: str, epochs: int) -> ResumePoint:
    """What a saved state means for a config of ``config_hash`` training ``epochs`` epochs; refuses
    another config's state."""
    if not state:
        return ResumePoint()
    if state.config_hash != config_hash:
        raise CheckpointError(f"checkpoint belongs to config {state.config_hash}, not {config_hash}")
    if state.diverged:
        return ResumePoint(final=state.final)
    start = state.epoch + 1
    if start >= epochs:  # already finished: nothing to redo
        return ResumePoint(start, state.step, state.history, final=state.final, records=state.records)
    return ResumePoint(start, state.step, state.history, state=state)


MIRRORED = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, EVALUATION_FILE, LOCAL_STATE_FILE)


def mirror_run(run: RunDir, remote: str, names: Iterable[str] = MIRRORED) -> None:
    """Copy the run directory's files ``names`` (those that exist) to ``remote``, a URI: an in-process
    run with object storage keeps its working copy on this machine and its record in the store. An
    object is published whole when its upload completes (a reader never sees half a checkpoint)."""
    from core.fs import filesystem, join

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
    """The files of a run stored at ``remote`` that this run directory lacks, copied into it (the run
    resumes, is found finished, or is re-scored on a machine that did not run it): the mirrored files
    and, of a worker group's run, its newest ``epoch=*/state.pt``. Returns the names fetched."""
    import pyarrow.fs as pafs

    from core.fs import filesystem, join, read_bytes

    fs, base = filesystem(remote)
    names = list(MIRRORED)
    try:
        epochs = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
                        if i.type == pafs.FileType.Directory and i.base_name.startswith("epoch="))
    except OSError as exc:
        raise StorageError(f"cannot list {remote}: {exc}") from None
    names += [f"{epochs[-1]}/{STATE_FILE}"] if epochs else []
    fetched = []
    for name in names:
        if not (run.path / name).exists() and (data := read_bytes(fs, join(base, name))) is not None:
            write_atomic(run.path / name, lambda tmp, data=data: tmp.write_bytes(data))
            fetched.append(name)
    return fetched


def local_copy(run_dir: str) -> tuple[str, str | None]:
    """(a local run directory, the URI it mirrors or None) for a run directory given as a path or a URI."""
    from core.fs import is_uri

    if not is_uri(run_dir):
        return run_dir, None
    local = Path(os.path.expanduser(LOCAL_RUNS_DIR)) / run_dir.rstrip("/").rsplit("/", 1)[-1]
    local.mkdir(parents=True, exist_ok=True)
    if not fetch_run(run_dir, RunDir(local)) and not (local / CONFIG_FILE).exists():
        raise CheckpointError(f"{run_dir}: no run there (no {CONFIG_FILE})")
    return str(local), run_dir
