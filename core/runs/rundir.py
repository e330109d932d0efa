"""The run directory: one home for every file name, ``config.json``'s shape and a run's result.

A run lives in ``<storage>/<run name>/``::

    config.json          {"config": the resolved config, "config_hash": its hash} (what the run is)
    metrics.jsonl        one row per epoch
    summary.json         the final row (status finished / diverged / failed)
    evaluation.json      the evaluation stage's full result (arrays and per-corruption scores included)
    latest_state.pt      the in-process checkpoint (``.previous``: the one before, kept for a torn write)
    epoch=NNNN/state.pt  a Train worker group's checkpoints (Ray Train keeps the last two)
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from core.config import RunConfig, config_differences
from core.errors import CheckpointError, ConfigError
from core.io import write_atomic, write_json_atomic
from core.results import RECORD_KEYS, RunResult, RunStatus, scalars
from core.runs.identity import config_hash, same_run

STATE_FILE = "state.pt"  # inside a Train/Tune checkpoint directory
LOCAL_STATE_FILE = "latest_state.pt"  # the in-process checkpoint in the run directory
CONFIG_FILE, METRICS_FILE = "config.json", "metrics.jsonl"
SUMMARY_FILE, EVALUATION_FILE = "summary.json", "evaluation.json"
PREVIOUS = ".previous"  # suffix of the checkpoint a newer one replaced
TENSORBOARD_DIR = "tensorboard"  # the run's scalars (core.io.ScalarBoard)
EPOCH_PREFIX = "epoch="


def epoch_dir_name(epoch: int, diverged: bool = False) -> str:
    """Name of a Train checkpoint directory (``epoch=0003``, ``epoch=0003-diverged``)."""
    return f"{EPOCH_PREFIX}{epoch:04d}" + ("-diverged" if diverged else "")


@dataclass(frozen=True)
class SavedConfig:
    """``config.json``: the config a run was trained with and the hash it was recorded under."""

    config: dict
    config_hash: str | None

    def run_config(self, where: object) -> RunConfig:
        """The saved config, refused when it no longer hashes to the recorded hash (edited after the run)."""
        try:
            cfg = RunConfig.from_dict(self.config)
        except ConfigError as exc:
            raise CheckpointError(f"{where}: {exc}") from None
        if not same_run(self.config_hash, cfg):
            raise CheckpointError(f"{where} was edited after the run: its config hashes to {config_hash(cfg)}, "
                                  f"the run was {self.config_hash}; refusing to score the weights with it")
        return cfg


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

    def board_files(self) -> list[str]:
        """The TensorBoard event files of the run, as names relative to the run directory."""
        board = self.path / TENSORBOARD_DIR
        return sorted(f"{TENSORBOARD_DIR}/{p.name}" for p in board.iterdir() if p.is_file()) if board.is_dir() else []

    def state_files(self) -> list[Path]:
        """The run's checkpoints, newest first: the in-process state file (and the one it replaced) or
        Train's ``epoch=*/state.pt``."""
        candidates = [self.local_state, Path(str(self.local_state) + PREVIOUS),
                      *(Path(p) for p in glob.glob(str(self.path / f"{EPOCH_PREFIX}*" / STATE_FILE)))]
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

    def read_json(self, path: Path) -> dict | None:
        """A JSON file of the run, or None when it is missing; a damaged one is a CheckpointError naming it."""
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise CheckpointError(f"{path} is not valid JSON ({exc})") from None

    # -- config.json ----------------------------------------------------------------------
    def saved_config(self) -> SavedConfig | None:
        """What ``config.json`` records, None when the run has none yet; a damaged one is refused."""
        saved = self.read_json(self.config)
        if saved is None:
            return None
        if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
            raise CheckpointError(f"{self.config} holds no config (expected {{config: ..., config_hash: ...}})")
        return SavedConfig(saved["config"], saved.get("config_hash"))

    def write_config(self, cfg: RunConfig) -> None:
        write_json_atomic(self.config, {"config": cfg.to_dict(), "config_hash": config_hash(cfg)})

    def check_identity(self, cfg: RunConfig) -> None:
        """Refuse a run directory that holds another config (a shared ``name=``, an edited config.json)."""
        saved = self.saved_config()
        if saved is not None and not same_run(saved.config_hash, cfg):
            diff = config_differences(saved.config, cfg.to_dict())
            raise ConfigError(f"run directory {self.path} holds another config ({saved.config_hash}; this one "
                              f"is {config_hash(cfg)}: {'; '.join(diff[:5]) or 'same fields, other hash'}); "
                              f"choose another name= or storage_path")

    def run_config(self, overrides: Iterable[str] = ()) -> RunConfig:
        """The run's own config with ``eval.*`` overrides (the only fields a trained run may change)."""
        saved = self.saved_config()
        if saved is None:
            raise CheckpointError(f"{self.path}: not a run directory (no {CONFIG_FILE})")
        for o in overrides:
            if not o.startswith("eval."):
                raise ConfigError(f"override {o!r}: only eval.* fields can change when re-scoring a trained model")
        return saved.run_config(self.config).with_overrides(overrides)

    def record_protocol(self, cfg: RunConfig) -> None:
        """``config.json``'s evaluation section becomes ``cfg``'s (the protocol the run was last scored with)."""
        saved = self.read_json(self.config)
        if saved and same_run(saved.get("config_hash"), cfg):
            write_json_atomic(self.config, {**saved, "config": {**saved["config"], "eval": cfg.to_dict()["eval"]}})

    # -- the result -----------------------------------------------------------------------
    def finished_result(self) -> RunResult | None:
        """A finished run's result as saved (its summary and evaluation records), else None."""
        try:
            metrics = self.read_json(self.summary)
        except CheckpointError:  # a damaged summary: the run is not known to have finished
            return None
        if not metrics or metrics.get("status") != RunStatus.FINISHED:
            return None
        evaluation = self.read_json(self.evaluation) if self.evaluation.exists() else {}
        records = {k: v for k, v in (evaluation or {}).items() if k in RECORD_KEYS}
        return RunResult(metrics, str(self.path), RunStatus.FINISHED, records)

    def evaluation_changed(self, cfg: RunConfig) -> str | None:
        """What changed when a finished run is asked for with another evaluation protocol only (the
        training identity is the same), else None."""
        summary, saved = self.read_json(self.summary), self.saved_config()
        if not summary or summary.get("status") != RunStatus.FINISHED or not saved:
            return None
        diff = config_differences({"eval": saved.config.get("eval", {})}, {"eval": cfg.to_dict()["eval"]})
        return "; ".join(diff) or None

    def finished_as_asked(self, cfg: RunConfig) -> RunResult | None:
        """The saved result of a finished run asked for with its own evaluation protocol; None when it is
        unfinished or to be re-scored with another one."""
        done = self.finished_result()
        return done if done is not None and self.evaluation_changed(cfg) is None else None

    def write_result(self, metrics: dict[str, Any], records: dict[str, Any]) -> RunResult:
        """The run's summary (and, once evaluated, its full evaluation) written here."""
        metrics = scalars(metrics)
        write_json_atomic(self.summary, metrics)
        if records:
            write_json_atomic(self.evaluation, {**metrics, **records})
        return RunResult(metrics, str(self.path), RunStatus(metrics.get("status", RunStatus.FINISHED)), records)


def _epoch_of(line: str) -> float:
    try:
        return float(json.loads(line).get("epoch", -1))
    except (ValueError, AttributeError):  # a torn last line: drop it with the rest
        return float("inf")


def is_run_dir(path: str | os.PathLike) -> bool:
    return os.path.isfile(os.path.join(path, CONFIG_FILE))
