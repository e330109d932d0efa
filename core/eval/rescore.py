"""Re-score a saved run with another evaluation protocol, without retraining.

    python -m core.eval RUN_DIR [eval.key=value ...] [--device cpu|cuda]

The overrides may change only ``eval.*`` fields (the protocol); the metrics are written to
``RUN_DIR/evaluation.json`` and merged into ``RUN_DIR/summary.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Iterable

import torch

from core.config import RunConfig
from core.errors import CheckpointError, ConfigError, EvaluationError, cli_main
from core.io import write_json_atomic
from core.train.checkpoint import RunDir, load_state


def run_config(run_dir: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """A run directory's config with ``eval.*`` overrides (the only fields re-scoring may change)."""
    run = RunDir(run_dir)
    saved = run.read_json(run.config)
    if saved is None:
        raise CheckpointError(f"{run_dir}: not a run directory (no config.json)")
    for o in overrides:
        if not o.startswith("eval."):
            raise ConfigError(f"override {o!r}: only eval.* fields can change when re-scoring a trained model")
    return RunConfig.from_dict(saved["config"]).with_overrides(overrides)


def evaluate_run(run_dir: str | Path, overrides: Iterable[str] = (), device: str | None = None) -> dict[str, Any]:
    """Re-score a run's saved model with the (possibly changed) evaluation protocol; returns the metrics
    and writes ``evaluation.json``, merging them into ``summary.json``."""
    from core.data.sources import load_source
    from core.eval.stage import evaluate
    from core.models import build_model

    run = RunDir(run_dir)
    overrides = list(overrides)
    cfg = run_config(run_dir, overrides)
    files = run.state_files()
    if not files:
        raise CheckpointError(f"{run_dir}: no checkpoint ({run.local_state.name} or epoch=*/state.pt)")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() and cfg.use_gpu else "cpu"))
    state = load_state(files, dev)
    if not state.model:
        raise EvaluationError(f"{run_dir}: the last checkpoint holds no model (status {state.status!r})")
    source = load_source(cfg.data)
    model = build_model(cfg, source.num_classes).to(dev)
    model.load_state_dict(state.model)
    result = evaluate(model, cfg, source.train_eval, source.test, source.num_classes, dev)
    metrics = {**result.scalars, "eval_epoch": state.epoch, "eval_overrides": " ".join(overrides)}
    write_json_atomic(run.evaluation, {**metrics, **result.records()})
    summary = run.read_json(run.summary) or {}
    write_json_atomic(run.summary, {**summary, **metrics})
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("overrides", nargs="*", help="eval.key=value changes to the evaluation protocol")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if the run used a GPU)")
    args = parser.parse_args(argv)
    return cli_main(lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    import ray

    from core.runtime import start_ray

    run_config(args.run_dir, args.overrides)  # bad input fails before Ray starts
    if not RunDir(args.run_dir).state_files():
        raise CheckpointError(f"{args.run_dir}: no checkpoint (latest_state.pt or epoch=*/state.pt)")
    start_ray(num_cpus=max(2, os.cpu_count() or 2), log_to_driver=False)
    try:
        metrics = evaluate_run(args.run_dir, args.overrides, args.device)
    finally:
        ray.shutdown()
    for k in ("knn_top1", "probe_top1", "probe_ece", "corruption_acc", "mce", "bad_eval_images"):
        if k in metrics:
            print(f"  {k:<16} {metrics[k]:.4g}" if isinstance(metrics[k], float) else f"  {k:<16} {metrics[k]}")
    print(f"written: {RunDir(args.run_dir).evaluation}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
