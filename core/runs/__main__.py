"""``python -m core.runs list STORE``: the runs in a store (a local runs directory or ``s3://.../runs``), each
with its status, epochs and headline metrics, and the commands that re-score or export it.

    python -m core.runs list runs/
    python -m core.runs list s3://bucket/augmentation_robustness/runs
"""

from __future__ import annotations

import argparse
import json
import sys

import pyarrow.fs as pafs

from core.errors import StorageError, cli_main
from core.fs import filesystem, is_uri, join, list_dir, read_bytes
from core.runs.rundir import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE


def run_rows(store: str) -> list[dict]:
    """One row per run directory of ``store`` (a directory holding ``config.json``): name, loss, status,
    epochs trained of the config's, kNN and probe top-1 when finished."""
    fs, base = filesystem(store)
    rows = []
    for entry in sorted(list_dir(store, "run store"), key=lambda e: e.base_name):
        if entry.type != pafs.FileType.Directory:
            continue
        raw = read_bytes(fs, join(entry.path, CONFIG_FILE))
        if raw is None:
            continue
        config = json.loads(raw).get("config", {})
        summary = json.loads(read_bytes(fs, join(entry.path, SUMMARY_FILE)) or b"{}")
        metrics = (read_bytes(fs, join(entry.path, METRICS_FILE)) or b"").decode().splitlines()
        rows.append({"run": entry.base_name, "loss": config.get("loss", {}).get("name", "?"),
                     "status": summary.get("status", "unfinished"), "epochs": len([m for m in metrics if m.strip()]),
                     "of": config.get("optim", {}).get("epochs", "?"), "knn_top1": summary.get("knn_top1"),
                     "probe_top1": summary.get("probe_top1")})
    return rows


def _number(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.runs", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="the runs in a store")
    listing.add_argument("store", help="a runs directory (runs/, RESULTS/runs) or a URI (s3://bucket/study/runs)")
    args = parser.parse_args(argv)

    def run() -> int:
        rows = run_rows(args.store)
        if not rows:
            kind = "object store prefix" if is_uri(args.store) else "directory"
            raise StorageError(f"{args.store}: no runs there (a {kind} of run directories, each with {CONFIG_FILE}; "
                               f"a study's are under its --storage, in runs/)")
        print(f"{'run':<34} {'loss':<14} {'status':<12} {'epochs':>7} {'knn':>6} {'probe':>6}")
        for r in rows:
            print(f"{r['run']:<34} {r['loss']:<14} {r['status']:<12} {r['epochs']:>3}/{r['of']:<3} "
                  f"{_number(r['knn_top1']):>6} {_number(r['probe_top1']):>6}")
        first = join(args.store, rows[0]["run"])
        print(f"\n{len(rows)} run(s). Re-score one: python -m core.eval {first} eval.knn_k=20; export it: "
              f"python -m core.export {first} exported/")
        return 0

    return cli_main(run)


if __name__ == "__main__":
    sys.exit(main())
