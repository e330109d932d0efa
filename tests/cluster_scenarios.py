"""The cluster flow on one machine, run in its own process by ``test_cluster.py`` (the test session's
Ray instance is untouched): ``core.tools.cluster``'s local autoscaled cluster made from ``cluster.yaml``, the
main study submitted to it as a Ray Job, a worker node preempted mid-study, a 2-worker TorchTrainer
spread over two nodes, the nodes' return to 0, and ``down``.

    python tests/cluster_scenarios.py OUT_DIR [--no-preempt]

Writes ``OUT_DIR/facts.json``; every fact comes from Ray's own state (``ray.nodes()``, the autoscaler's
node types, the job's status) or the study's files, sampled while it runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["RAY_AUTH_MODE"] = "token"  # the local cluster starts with Ray 2.60's token auth
for inherited in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):  # the test session's local Ray instance
    os.environ.pop(inherited, None)
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
import psutil  # noqa: E402
import ray  # noqa: E402

from core.config import RunConfig  # noqa: E402
from core.runtime import pin_ray_data_actors_here  # noqa: E402
from core.tools.cluster import LOCAL_GPU, RAY_CLI, cluster_env, down, free_port, own_processes, up  # noqa: E402
from core.train import fit  # noqa: E402

SMALL = ["data.train_limit=1024", "optim.batch_size=128", "model.width=8", "eval.probe_epochs=5",
         "eval.online_knn=false"]
EPOCHS = 4
IDLE_MINUTES = 0.25


class NodeWatch:
    """Alive worker nodes sampled every 0.25 s from ``ray.nodes()``: (time, {node id: local_gpu count}), and
    when the autoscaler first reported a resource demand (a trial queued)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.first_demand: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            nodes = {n["NodeID"]: n["Resources"].get(LOCAL_GPU, 0.0) for n in ray.nodes()
                     if n["Alive"] and n["Resources"].get("CPU", 0) > 0}
            self.samples.append((time.time(), nodes))
            if self.first_demand is None and self._demand():
                self.first_demand = time.time()
            time.sleep(0.25)

    @staticmethod
    def _demand() -> bool:
        from ray._private import ray_constants

        raw = ray._private.worker.global_worker.gcs_client.internal_kv_get(
            ray_constants.DEBUG_AUTOSCALING_STATUS.encode(), None)
        report = json.loads(raw).get("load_metrics_report", {}) if raw else {}
        return bool(report.get("resource_demand") or report.get("pg_demand"))

    def first_time(self, predicate, after: float = 0.0) -> float | None:
        return next((t for t, nodes in self.samples if t >= after and predicate(nodes)), None)


def raylet_of(node_id: str) -> psutil.Process:
    for p in psutil.process_iter(["name", "cmdline"]):
        if p.info["name"] == "raylet" and f"--node_id={node_id}" in (p.info["cmdline"] or ()):
            return p
    raise RuntimeError(f"no raylet for node {node_id}")


def epochs_logged(run: Path) -> list[int]:
    log = run / "metrics.jsonl"
    return [json.loads(line)["epoch"] for line in log.read_text().splitlines()] if log.exists() else []


def preempt_mid_study(runs: Path, done: dict) -> None:
    """Once a trial has finished, kill (SIGKILL) the raylet of a node whose trial is mid-run, as a spot
    reclaim would; record what had finished and how far the preempted run had got."""
    deadline = time.time() + 600
    while time.time() < deadline and not done:
        finished = {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/summary.json")}
        for run in runs.glob("*/"):
            epochs = epochs_logged(run)
            if finished and run.name not in finished and 1 <= len(epochs) < EPOCHS - 1:
                rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
                node = [r for r in rows if "worker_nodes" in r][-1]["worker_nodes"][0]  # this attempt's node
                raylet_of(node).send_signal(signal.SIGKILL)
                done.update(run=run.name, node=node, epochs_before=len(epochs), at=time.time(),
                            finished={k: {"probe_top1": v.get("probe_top1"), "lines": len(epochs_logged(runs / k))}
                                      for k, v in finished.items()})
                return
        time.sleep(0.1)


STUDY = ["studies/augmentation_robustness.py", "--losses", "supcon", "cross_entropy", "--policies", "simaugment",
         "--strengths", "1.0", "--seeds", "0", "1", "--epochs", str(EPOCHS), *SMALL, "--max-concurrent", "2"]


def submit_study(dashboard: str, results: Path) -> tuple[int, str]:
    """The main study as a Ray Job, exactly as on the cloud (``ray job submit --working-dir .``)."""
    cmd = [*RAY_CLI, "job", "submit", f"--address={dashboard}", "--working-dir", str(REPO), "--",
           "python", *STUDY, "--results-dir", str(results), "--cpus-per-trial", "1",
           "--trial-resource", f"{LOCAL_GPU}=1", "--accelerator-type", "A10G"]
    proc = subprocess.run(cmd, env=cluster_env(), capture_output=True, text=True, timeout=900)
    return proc.returncode, (proc.stdout + proc.stderr)[-4000:]


def study_facts(results: Path, preempted: dict) -> dict:
    df = pd.read_parquet(results / "trials.parquet")
    runs = results / "runs"
    table = df[["config_hash", "status", "node_id", "probe_top1", "resumed_from_epoch"]].to_dict("records")
    lines = {p.name: epochs_logged(p) for p in runs.glob("*/")}
    return {"table": table, "epochs_logged": lines, "preempted": preempted}


def trainer_across_nodes(out: Path) -> dict:
    """A 2-worker TorchTrainer on JPEGs, one worker per 1-GPU node (STRICT_SPREAD), each holding its node's
    CPUs: Ray Data's read/decode/crop tasks can only run on (and bring up) the CPU-only type."""
    from core.tools.photos import make_photo_folder

    root = make_photo_folder(str(out / "photos"), 4, {"train": 128, "val": 16}, size=(48, 40))
    cfg = RunConfig().with_overrides([*SMALL, "data.source=imagefolder", f"data.root={root}", "data.image_size=32",
                                      "optim.batch_size=64", "num_workers=2", "optim.epochs=1",
                                      f"storage_path={out / 'train'}"])
    res = fit(cfg, verbose=False, placement_strategy="STRICT_SPREAD",
              worker_resources={"CPU": 2, LOCAL_GPU: 1, "accelerator_type:A10G": 0.001})
    first = json.loads((Path(res.run_dir) / "metrics.jsonl").read_text().splitlines()[0])
    return {"status": res.status, "epoch": res.metrics.get("epoch"), "probe_top1": res.metrics.get("probe_top1"),
            "worker_nodes": first["worker_nodes"], "samples_per_rank": first["samples_per_rank"],
            "shard_overlap": first["shard_overlap"], "data_tasks": data_task_nodes()}


def data_task_nodes() -> dict[str, list[str]]:
    """The node type (``gpu``: has local_gpu, ``cpu``, ``head``) of every Ray Data map task this driver ran."""
    from ray.util.state import list_tasks

    kinds = {n["NodeID"]: "gpu" if n["Resources"].get(LOCAL_GPU) else "cpu" if n["Resources"].get("CPU") else "head"
             for n in ray.nodes()}
    job = ray.get_runtime_context().get_job_id()
    tasks = list_tasks(address=ray.get_runtime_context().gcs_address, filters=[("job_id", "=", job)], limit=10000,
                       raise_on_missing_output=False)
    out: dict[str, list[str]] = {}
    for t in tasks:
        if t.name.startswith("MapBatches(") and t.node_id:
            out.setdefault(t.name, []).append(kinds.get(t.node_id, "unknown"))
    return out


def busy_reasons(gcs_address: str) -> dict:
    """Why Ray thinks each node is busy, and the live actors by node (what keeps a node from scaling down)."""
    from ray._raylet import GcsClient
    from ray.util.state import list_actors

    nodes = {nid.hex(): list(info.state_snapshot.node_activity)[:5]
             for nid, info in GcsClient(address=gcs_address).get_all_node_info().items() if info.state == 0}
    actors = [(a.class_name, a.node_id, a.job_id) for a in list_actors(filters=[("state", "=", "ALIVE")])]
    return {"nodes": nodes, "actors": actors}


def main(out: Path, preempt: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: Ray's socket paths live under it
    facts: dict = {}
    t0 = time.time()
    info = up(str(REPO / "cluster.yaml"), str(state), free_port(), free_port(), max_workers=2,
              idle_timeout_minutes=IDLE_MINUTES)
    facts["up_s"] = time.time() - t0
    try:
        ray.init(address=info.gcs_address, log_to_driver=False)
        pin_ray_data_actors_here()  # as every platform driver that joins a cluster does (core.runtime.start_ray)
        watch = NodeWatch()
        while not watch.samples:
            time.sleep(0.05)
        facts["workers_at_start"] = len(watch.samples[0][1])
        results, preempted = out / "study", {}
        if preempt:
            threading.Thread(target=preempt_mid_study, args=(results / "runs", preempted), daemon=True).start()
        submitted = time.time()
        facts["job_rc"], facts["job_tail"] = submit_study(info.dashboard_url, results)
        facts["job_s"] = time.time() - submitted
        first_node = watch.first_time(lambda n: len(n) > 0, submitted)
        facts["scale_up_s"] = first_node - submitted if first_node else None  # job submitted -> a node alive
        queued = watch.first_demand
        facts["queued_to_node_s"] = first_node - queued if first_node and queued else None  # trial queued -> alive
        facts["study"] = study_facts(results, preempted)
        facts["trainer"] = trainer_across_nodes(out)
        watch.stop.set()
        watch.thread.join()
        samples = watch.samples
        # this driver's objects (the trainer's datasets) keep their node busy for Ray's autoscaler: end it,
        # as a job's driver ends, and watch the nodes go from a new one
        ray.shutdown()
        trained = time.time()
        ray.init(address=info.gcs_address, log_to_driver=False)
        watch = NodeWatch()
        zero = None
        while time.time() < trained + 120 and zero is None:
            time.sleep(0.5)
            zero = watch.first_time(lambda n: len(n) == 0, trained)
        facts["scale_down_s"] = zero - trained if zero else None
        if zero is None:
            facts["busy_at_end"] = busy_reasons(info.gcs_address)
        facts["idle_timeout_s"] = IDLE_MINUTES * 60
        watch.stop.set()
        samples += watch.samples
        facts["node_gpus_seen"] = sorted({g for _, nodes in samples for g in nodes.values()})
        facts["max_workers_seen"] = max(len(n) for _, n in samples)
        facts["nodes_seen"] = len({i for _, nodes in samples for i in nodes})
    finally:
        ray.shutdown()
        facts["ended"] = down(str(state))
        facts["left"] = own_processes(info)
        (out / "facts.json").write_text(json.dumps(facts, indent=2, default=str))
    return facts


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(f"terminated (signal {signum})")  # main's finally takes the cluster down


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    main(Path(sys.argv[1]), preempt="--no-preempt" not in sys.argv)
