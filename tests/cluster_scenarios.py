"""Multi-node scenarios on a real two-node Ray cluster on this machine (a head and a second node
on loopback, ``ray.cluster_utils.Cluster``), run in their own process by ``test_cluster.py`` so
the test session's Ray instance is untouched.

    python tests/cluster_scenarios.py OUT_DIR

Writes ``OUT_DIR/facts.json``: where a 2-worker TorchTrainer's workers and data shards went, and
what a study did when its second node was removed mid-study.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from core.config import RunConfig  # noqa: E402
from core.train import fit  # noqa: E402

SMALL = ["data.train_limit=512", "optim.batch_size=128", "model.width=8", "eval.probe_epochs=5",
         "eval.online_knn=false"]


def trainer_across_nodes(out: Path) -> dict:
    """A 2-worker TorchTrainer with STRICT_SPREAD: one worker per node, the train set split."""
    cfg = RunConfig().with_overrides([*SMALL, "num_workers=2", "optim.epochs=2", f"storage_path={out / 'train'}"])
    res = fit(cfg, verbose=False, placement_strategy="STRICT_SPREAD")
    first = json.loads((Path(res.run_dir) / "metrics.jsonl").read_text().splitlines()[0])
    return {"status": res.status, "epoch": res.metrics.get("epoch"), "probe_top1": res.metrics.get("probe_top1"),
            "worker_nodes": first["worker_nodes"], "samples_per_rank": first["samples_per_rank"],
            "shard_overlap": first["shard_overlap"]}


def study_with_node_loss(out: Path, worker_node_id: str, remove) -> dict:
    """Six trials, one per node at a time; the second node is removed once it has finished one."""
    spec = importlib.util.spec_from_file_location("study", REPO / "studies" / "augmentation_robustness.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    results = out / "study"
    removed: dict = {}

    def remove_after_first_trial_on_worker() -> None:
        while not removed:
            for summary in (results / "runs").glob("*/summary.json"):
                row = json.loads(summary.read_text())
                if row.get("worker_nodes") == [worker_node_id]:
                    done = {p.parent.name: json.loads(p.read_text()).get("probe_top1")
                            for p in (results / "runs").glob("*/summary.json")}
                    remove()
                    removed.update(done=done, at=time.time())
                    return
            time.sleep(0.2)

    watcher = threading.Thread(target=remove_after_first_trial_on_worker, daemon=True)
    watcher.start()
    t0 = time.time()
    rc = study.main_for(study.make_study, "cluster test", [
        "--losses", "supcon", "cross_entropy", "--policies", "simaugment", "--strengths", "1.0",
        "--seeds", "0", "1", "2", "--epochs", "3", *SMALL, "--results-dir", str(results),
        "--address", ray.get_runtime_context().gcs_address, "--cpus-per-trial", "2", "--max-concurrent", "2"],
        extra_args=study.extra_args)
    df = pd.read_parquet(results / "trials.parquet")
    return {"rc": rc, "seconds": time.time() - t0, "removed": bool(removed), "completed_before_removal":
            removed.get("done", {}), "table": df[["config_hash", "status", "node_id", "probe_top1", "resumed_from_epoch"]].to_dict("records"),
            "report_has_table": "## Summary" in (results / "report.md").read_text()}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False,
                                                            "object_store_memory": 300 * 1024 * 1024})
    worker = cluster.add_node(num_cpus=2, object_store_memory=300 * 1024 * 1024)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    facts: dict = {"nodes": [n["NodeID"] for n in ray.nodes() if n["Alive"]], "head": ray.get_runtime_context().get_node_id(),
                   "worker": worker.node_id}
    try:
        facts["trainer"] = trainer_across_nodes(out)
        facts["study"] = study_with_node_loss(out, worker.node_id,
                                              lambda: cluster.remove_node(worker, allow_graceful=False))
    finally:
        (out / "facts.json").write_text(json.dumps(facts, indent=2, default=str))
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
