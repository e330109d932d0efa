"""``python -m core.train``: pretrain one config inside Ray Train, then evaluate it.

    python -m core.train --config FILE.yaml [section.key=value ...]
"""

from __future__ import annotations

import argparse
import os
import sys

import ray

from core.config import CONFIG_HELP, RunConfig, resolve_layers, split_overrides
from core.errors import cli_main
from core.results import RunResult, RunStatus
from core.runs.identity import run_name
from core.runtime import require_shared, start_ray
from core.train.trainer import FitOptions, finished_run, fit

SUMMARY_KEYS = ("status", "epoch", "loss", "knn_top1", "knn_top5", "probe_top1", "probe_top5", "corruption_acc",
                "corruption_error", "corruption_acc_s1", "corruption_acc_s5", "test_images", "views_per_s",
                "classes_per_batch", "world_size", "global_batch", "effective_lr", "config_hash", "corruption_protocol")


def format_summary(cfg: RunConfig, result: RunResult) -> str:
    metrics = dict(result.metrics)
    if isinstance(metrics.get("epoch"), int):  # the row's 0-based epoch, as every message counts it: from 1
        metrics["epoch"] = f"{metrics['epoch'] + 1} of {cfg.optim.epochs}"
    rows = [(k, metrics[k]) for k in SUMMARY_KEYS if k in metrics]
    width = max(len(k) for k, _ in rows) if rows else 10
    lines = [f"run {run_name(cfg)}  ({result.run_dir})"]
    lines += [f"  {k:<{width}}  {v:.4g}" if isinstance(v, float) else f"  {k:<{width}}  {v}" for k, v in rows]
    if "diverged_at" in result.metrics:
        lines.append(f"  {result.metrics['diverged_at']}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.train", description=__doc__, epilog=CONFIG_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[], metavar="FILE.yaml",
                        help="YAML run config layered onto the defaults (repeatable: later files win)")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster address")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML, each value with where it came from, and exit")
    parser.add_argument("--overwrite", action="store_true",
                        help="train again from scratch when this config's run already exists (its files are deleted)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    return parser


def main(argv: list[str] | None = None) -> int:
    flags, overrides = split_overrides(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_intermixed_args(flags)
    args.overrides = [*args.overrides, *overrides]
    return cli_main(lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    resolved = resolve_layers(RunConfig(), args.config, args.overrides)
    cfg = resolved.config
    if args.print_config:  # every value, with where it came from (source defaults, a file, an override)
        print(resolved.to_yaml(), end="")
        return 0
    earlier = finished_run(cfg)
    if earlier is not None and not args.overwrite:
        print(f"finished earlier: {earlier.run_dir}; --overwrite to train again\n{format_summary(cfg, earlier)}")
        return 0
    if args.address:  # without one, fit starts the run's private instance (core.runtime.run_cpus)
        start_ray(args.address, log_to_driver=True)
        require_shared({"data.root": cfg.data.root, "eval.corruption_root": cfg.eval.corruption_root,
                        "model.weights": cfg.model.weights,
                        **({"storage_path": cfg.storage_path} if cfg.num_workers else {})},
                       "Ray Data's tasks and the Train workers run on any of them")
    try:
        result = fit(cfg, options=FitOptions(overwrite=args.overwrite))
    finally:
        ray.shutdown()
    print(format_summary(cfg, result))
    return 0 if result.status == RunStatus.FINISHED else 1


if __name__ == "__main__":
    sys.exit(main())
