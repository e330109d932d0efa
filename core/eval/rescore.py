"""Re-score a saved run with another evaluation protocol, without retraining.

    python -m core.eval RUN_DIR [eval.key=value ...] [--device cpu|cuda]

``RUN_DIR`` may be a URI (``s3://bucket/runs/<run>``): the run is copied to ``LOCAL_RUNS_DIR``, scored
there, and its new evaluation written back.

The overrides may change only ``eval.*`` fields (the protocol); the metrics are written to
``RUN_DIR/evaluation.json`` and merged into ``RUN_DIR/summary.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable

import ray
import torch

from core.config import RunConfig
from core.data.budget import run_store_bytes
from core.data.sources import load_source
from core.errors import CheckpointError, ConfigError, cli_main
from core.eval.stage import evaluate
from core.io import DirectoryLock, write_json_atomic
from core.losses import head_of
from core.metrics import HEADLINE
from core.models import build_model
from core.runs.checkpoint import model_checkpoint
from core.runs.rundir import CONFIG_FILE, EVALUATION_FILE, SUMMARY_FILE, RunDir
from core.runs.storage import StoredRun
from core.runtime import start_ray


def run_config(run_dir: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """A run directory's config with ``eval.*`` overrides (the only fields re-scoring may change). A
    config.json edited after the run (its config no longer hashes to the recorded hash) is refused; a
    run written under an earlier hash version is checked against the hash it was given then."""
    return RunDir(run_dir).run_config(overrides)


def rescore(run: RunDir, cfg: RunConfig, source: Any = None, device: torch.device | None = None,
            note: str = "", corruption_cache: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, records) of the run's checkpoint scored with ``cfg``'s evaluation protocol, written to
    ``evaluation.json``; a finished run's ``summary.json`` (and config.json's eval section) take them, an
    unfinished run's are left alone and the metrics say which epoch was scored. The caller holds the lock."""
    dev = device or _device(None, cfg)
    state = model_checkpoint(run, dev)
    source = source or load_source(cfg.data, cfg.eval.test_limit)
    model = build_model(cfg, source.num_classes, head_of(cfg)).to(dev)
    model.load_state_dict(state.model)
    result = evaluate(model, cfg, source.train_eval, source.test, source.num_classes, dev, train_size=source.train_size,
                      corruption_cache=corruption_cache)
    finished = bool(state.final) and state.final.get("status") == "finished"
    metrics = {**result.scalars, "eval_epoch": state.epoch, "eval_overrides": note,
               "run_status": "finished" if finished else f"unfinished (epoch {state.epoch + 1} of {cfg.optim.epochs})"}
    write_json_atomic(run.evaluation, {**metrics, **result.records()})
    if finished:
        write_json_atomic(run.summary, {**(run.read_json(run.summary) or {}), **metrics})
        run.record_protocol(cfg)
    else:
        warnings.warn(f"{run.path} is unfinished: scored its checkpoint of epoch {state.epoch + 1} of "
                      f"{cfg.optim.epochs}; summary.json left as it was")
    return metrics, result.records()


def evaluate_run(run_dir: str | Path, overrides: Iterable[str] = (), device: str | None = None) -> dict[str, Any]:
    """Re-score a run's saved model with the (possibly changed) evaluation protocol; returns the metrics.
    The run's lock is held meanwhile: a run that is training is refused."""
    run, overrides = RunDir(run_dir), list(overrides)
    cfg = run_config(run_dir, overrides)
    with DirectoryLock(run.path, "run directory"):
        return rescore(run, cfg, device=_device(device, cfg), note=" ".join(overrides))[0]


def _device(name: str | None, cfg: RunConfig) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() and cfg.use_gpu else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: torch sees no CUDA device here (use --device cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device (cpu, cuda, cuda:1)") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("overrides", nargs="*", help="eval.key=value changes to the evaluation protocol")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if the run used a GPU)")
    args = parser.parse_args(argv)
    return cli_main(lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    stored = StoredRun.open(args.run_dir)  # a run in object storage is scored from a local copy
    args.run_dir, remote = str(stored.run.path), stored.mirror
    cfg = run_config(args.run_dir, args.overrides)  # bad input fails before Ray starts
    _device(args.device, cfg)
    if not RunDir(args.run_dir).state_files():
        raise CheckpointError(f"{args.run_dir}: no checkpoint (latest_state.pt or epoch=*/state.pt)")
    start_ray(num_cpus=max(2, os.cpu_count() or 2), log_to_driver=False, object_store_memory=run_store_bytes(cfg))
    try:
        metrics = evaluate_run(args.run_dir, args.overrides, args.device)
    finally:
        ray.shutdown()
    for k in (*HEADLINE, "bad_eval_images"):
        if k in metrics:
            print(f"  {k:<16} {metrics[k]:.4g}" if isinstance(metrics[k], float) else f"  {k:<16} {metrics[k]}")
    print(f"  {'run':<16} {metrics['run_status']} (scored epoch {metrics['eval_epoch'] + 1})")
    stored.push([EVALUATION_FILE, SUMMARY_FILE, CONFIG_FILE])
    print(f"written: {RunDir(args.run_dir).evaluation}" + (f" and {remote}" if remote else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
