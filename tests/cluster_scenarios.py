"""The cluster flow on one machine, run in its own process by ``test_cluster.py`` (the test session's
Ray instance is untouched): ``core.tools.cluster``'s local autoscaled cluster made from ``cluster.yaml``,
its worker nodes isolated (each in a mount namespace of its own: no /tmp, $HOME or results directory of
this machine) with a local S3 API (moto) as their only shared storage; what a worker node sees of this
machine's disk; the driver's refusals of local paths; the main study submitted to it as a Ray Job with
``--storage s3://...``, a worker node preempted mid-study, the same study on one local instance to compare
with; a 2-worker TorchTrainer spread over two nodes on images in S3; the nodes' return to 0; the
finished runs read from S3 by ``core.eval`` and ``core.export`` once the workers are gone; and ``down``.

    python tests/cluster_scenarios.py OUT_DIR [--no-preempt]

Writes ``OUT_DIR/facts.json``; every fact comes from Ray's own state (``ray.nodes()``, the autoscaler's
node types, the job's status), the study's files or the bucket, sampled while it runs.
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
from core.runtime import start_ray  # noqa: E402
from core.tools.cluster import (LOCAL_GPU, NODE_TEMP, RAY_CLI, S3_BUCKET, cluster_env, down, free_port,  # noqa: E402
                                own_processes, s3_env, up)
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
            if not ray.is_initialized():  # the scenario failed and shut its driver down: its error is the story
                return
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


def reclaim(raylet: psutil.Process) -> None:
    """The machine of a node goes at once, as a spot reclaim takes it: SIGKILL to every process of the node's
    session (an isolated node's ``ray start`` runs in a session of its own), not its raylet alone, whose
    orphaned trial could finish a short run before it noticed."""
    sid = os.getsid(raylet.pid)
    if sid == os.getsid(0):  # not a node of its own: its raylet is all there is to kill
        raylet.send_signal(signal.SIGKILL)
        return
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                p.send_signal(signal.SIGKILL)
        except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
            pass


def s3_client():
    import boto3

    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")


def s3_text(key: str) -> str | None:
    try:
        return s3_client().get_object(Bucket=S3_BUCKET, Key=key)["Body"].read().decode()
    except Exception:  # noqa: BLE001 - not there (yet)
        return None


def runs_in_s3(prefix: str) -> dict[str, dict]:
    """run name -> {"metrics": [rows], "summary": dict or None} of the runs stored under ``prefix``/runs."""
    keys = [o["Key"] for page in s3_client().get_paginator("list_objects_v2").paginate(
        Bucket=S3_BUCKET, Prefix=f"{prefix}/runs/") for o in page.get("Contents", [])]
    out: dict[str, dict] = {}
    for key in keys:
        run, name = key.split("/")[-2:]
        if name in ("metrics.jsonl", "summary.json"):
            text = s3_text(key) or ""
            entry = out.setdefault(run, {"metrics": [], "summary": None})
            if name == "metrics.jsonl":
                entry["metrics"] = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                entry["summary"] = json.loads(text) if text else None
    return out


def epochs_logged(rows: list[dict]) -> list[int]:
    return [r["epoch"] for r in rows]


def preempt_mid_study(prefix: str, done: dict) -> None:
    """Once a trial has finished, take the node whose trial is mid-run (every process of it, SIGKILL), as a
    spot reclaim would; record what had finished and how far the preempted run had got (read from the bucket:
    the runs live on the worker nodes, which share no disk with this machine)."""
    deadline = time.time() + 600
    while time.time() < deadline and not done:
        runs = runs_in_s3(prefix)
        finished = {name: r["summary"] for name, r in runs.items() if r["summary"]}
        for name, run in runs.items():
            epochs = epochs_logged(run["metrics"])
            if finished and name not in finished and 1 <= len(epochs) < EPOCHS - 1:
                node = [r for r in run["metrics"] if "worker_nodes" in r][-1]["worker_nodes"][0]  # this attempt's
                reclaim(raylet_of(node))
                done.update(run=name, node=node, epochs_before=len(epochs), at=time.time(),
                            finished={k: {"probe_top1": v.get("probe_top1"),
                                          "lines": len(epochs_logged(runs[k]["metrics"]))}
                                      for k, v in finished.items()})
                return
        time.sleep(0.5)


# two of the 15 ImageNet-C types: the corrupted split is still built once by the driver and fetched by every
# node from the bucket, at a seventh of the cost
STUDY = ["studies/augmentation_robustness.py", "--losses", "supcon", "cross_entropy", "--policies", "simaugment",
         "--strengths", "1.0", "--seeds", "0", "1", "--epochs", str(EPOCHS), *SMALL,
         "eval.corruptions=[gaussian_noise,fog]", "--max-concurrent", "2"]


STORAGE = f"s3://{S3_BUCKET}/study"


def submit_study(dashboard: str, results: Path) -> tuple[int, str, list[str]]:
    """The main study as a Ray Job, exactly as on the cloud (``ray job submit --working-dir .``), its storage in
    the bucket (the nodes share no disk); its return code, the end of its log and the log's noise (tracebacks
    and warnings, with the lines around them)."""
    cmd = [*RAY_CLI, "job", "submit", f"--address={dashboard}", "--working-dir", str(REPO), "--",
           "python", *STUDY, "--results-dir", str(results), "--storage", STORAGE, "--cpus-per-trial", "1",
           "--trial-resource", f"{LOCAL_GPU}=1", "--accelerator-type", "A10G"]
    proc = subprocess.run(cmd, env=cluster_env(), capture_output=True, text=True, timeout=900)
    lines = (proc.stdout + proc.stderr).splitlines()
    noise = ["\n".join(lines[max(0, i - 2): i + 6]) for i, line in enumerate(lines)
             if "Traceback" in line or "WARNING" in line or "Warning:" in line]
    return proc.returncode, "\n".join(lines)[-6000:], noise


def local_study(results: Path) -> tuple[int, str]:
    """The same study on one private local instance (no cluster): what the cluster's numbers must equal."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    proc = subprocess.run([sys.executable, *STUDY, "--results-dir", str(results)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    return proc.returncode, (proc.stdout + proc.stderr)[-3000:]


NOT_COMPARED = ("seconds", "_per_s", "time", "node", "pid", "machine", "data_wait", "resumed_from_epoch",
                "shard_overlap")  # how an attempt ran (a preempted trial's second attempt), not what it gave


def numbers(results: Path) -> dict[str, dict]:
    """config hash -> every numeric column of its trial that does not depend on where or how fast it ran."""
    df = pd.read_parquet(results / "trials.parquet")
    cols = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not any(w in c for w in NOT_COMPARED)]
    return {r["config_hash"]: {c: (None if pd.isna(r[c]) else float(r[c])) for c in cols} for _, r in df.iterrows()}


def study_facts(results: Path, preempted: dict) -> dict:
    df = pd.read_parquet(results / "trials.parquet")
    table = df[["config_hash", "status", "node_id", "probe_top1", "resumed_from_epoch"]].to_dict("records")
    lines = {name: epochs_logged(r["metrics"]) for name, r in runs_in_s3("study").items()}
    return {"table": table, "epochs_logged": lines, "preempted": preempted}


def what_a_worker_sees(paths: dict[str, str]) -> dict:
    """A task on a worker node (the head has no CPU): which of this machine's ``paths`` it finds, and what."""
    @ray.remote(num_cpus=1)
    def look(paths: dict[str, str]) -> dict:
        return {"node": ray.get_runtime_context().get_node_id(), "home": os.environ.get("HOME"),
                **{name: sorted(os.listdir(p)) if os.path.isdir(p) else None for name, p in paths.items()}}

    return ray.get(look.remote(paths), timeout=300)


def refusals(address: str, out: Path) -> dict:
    """What the platform's drivers say, before any trial or task, when a path only this machine's disk holds
    must reach the nodes: a study's data root, a study's local --storage, the shard writer's destination."""
    env = {**cluster_env(), "RAY_ADDRESS": address}
    (out / "local-data" / "train" / "a").mkdir(parents=True, exist_ok=True)
    (out / "local-data" / "val" / "a").mkdir(parents=True, exist_ok=True)
    cases = {"data_root": [*STUDY, "--results-dir", str(out / "r1"), "--storage", STORAGE + "-refused",
                           "data.source=imagefolder", f"data.root={out / 'local-data'}"],
             "storage": [*STUDY, "--results-dir", str(out / "r2")],
             "shards": ["-m", "core.data.shard", str(out / "local-data"), str(out / "shards"), "--workers", "2"]}
    t0 = time.time()
    procs = {name: subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name, argv in cases.items()}  # side by side
    facts = {}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        facts[name] = {"rc": proc.returncode, "stderr": err.strip().splitlines()[-1:] or [""],
                       "seconds": time.time() - t0, "trials_started": (out / "r1" / "tune").exists()
                       or (out / "r2" / "tune").exists()}
    return facts


def trainer_across_nodes(out: Path) -> dict:
    """A 2-worker TorchTrainer on JPEGs in the bucket, one worker per 1-GPU node (STRICT_SPREAD), each holding
    its node's CPUs: Ray Data's read/decode/crop tasks can only run on (and bring up) the CPU-only type."""
    from core.tools.photos import make_photo_folder

    root = Path(make_photo_folder(str(out / "photos"), 4, {"train": 128, "val": 16}, size=(48, 40)))
    client = s3_client()
    for path in sorted(root.rglob("*.jpg")):
        client.upload_file(str(path), S3_BUCKET, f"photos/{path.relative_to(root)}")
    cfg = RunConfig().with_overrides([*SMALL, "data.source=imagefolder", f"data.root=s3://{S3_BUCKET}/photos",
                                      "data.image_size=32", "optim.batch_size=64", "num_workers=2", "optim.epochs=1",
                                      f"storage_path=s3://{S3_BUCKET}/train"])
    home = os.environ["HOME"]
    os.environ["HOME"] = str(out / "driver-home")  # the run's working copy here: none left by an earlier scenario
    try:
        res = fit(cfg, verbose=False, placement_strategy="STRICT_SPREAD",
                  worker_resources={"CPU": 2, LOCAL_GPU: 1, "accelerator_type:A10G": 0.001})
    finally:
        os.environ["HOME"] = home
    first = json.loads((Path(res.run_dir) / "metrics.jsonl").read_text().splitlines()[0])
    return {"status": res.status, "epoch": res.metrics.get("epoch"), "probe_top1": res.metrics.get("probe_top1"),
            "worker_nodes": first["worker_nodes"], "samples_per_rank": first["samples_per_rank"],
            "shard_overlap": first["shard_overlap"], "data_tasks": data_task_nodes()}


def read_back_after_the_workers(out: Path, run: str) -> dict:
    """``core.eval`` and ``core.export`` of a finished run, from the bucket alone, on this machine with an empty
    home (no working copy), once every worker node is gone."""
    env = {**os.environ, "HOME": str(out / "fresh-home")}
    env.pop("RAY_ADDRESS", None)
    cases = (("eval", ["-m", "core.eval", f"{STORAGE}/runs/{run}", "eval.knn_k=5", "eval.robustness=false"]),
             ("export", ["-m", "core.export", f"{STORAGE}/runs/{run}", str(out / "exported")]))
    procs = {name: subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True) for name, argv in cases}
    facts = {}
    for name, proc in procs.items():
        output, _ = proc.communicate(timeout=300)
        facts[name] = {"rc": proc.returncode, "tail": output[-1500:]}
    facts["exported"] = sorted(p.name for p in (out / "exported").glob("*")) if (out / "exported").exists() else []
    return facts


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


def listening_addresses(info) -> list[list]:
    """(process name, address) of every listening socket of the cluster's processes (its head now)."""
    pids = set(own_processes(info))
    return sorted({(psutil.Process(c.pid).name(), c.laddr.ip) for c in psutil.net_connections(kind="inet")
                   if c.status == psutil.CONN_LISTEN and c.pid in pids})


def second_cluster_on_the_same_ports(info, out: Path) -> dict:
    """``local up`` of a second cluster on the first's ports: refused in one line, the first one's processes
    untouched."""
    before = services(info)
    port = int(info.gcs_address.rpartition(":")[2])
    dashboard = int(info.dashboard_url.rpartition(":")[2])
    proc = subprocess.run([sys.executable, "-m", "core.tools.cluster", "local", "up", "--dir", str(out / "second"),
                           "--port", str(port), "--dashboard-port", str(dashboard)], cwd=REPO, env=cluster_env(),
                          capture_output=True, text=True, timeout=300)
    return {"rc": proc.returncode, "stderr": proc.stderr.strip().splitlines()[-1:] or [""],
            "traceback": "Traceback" in proc.stderr, "first_kept": bool(before) and before <= services(info),
            "lost": [_cmdline(p) for p in before - services(info)]}


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())[:200]
    except psutil.NoSuchProcess:
        return f"{pid} (gone)"


def services(info) -> set[int]:
    """The head's long-lived processes (GCS, raylet, dashboard, autoscaler, log monitor) and the S3 server:
    Ray's idle Python workers and the dashboard's module processes come and go on their own, and worker
    nodes with the autoscaler."""
    scripts = ("dashboard/dashboard.py", "_private/monitor.py", "log_monitor.py", "moto.server")
    out = set()
    for pid in own_processes(info):
        try:
            proc = psutil.Process(pid)
            name, cmd = proc.name(), " ".join(proc.cmdline())
        except psutil.NoSuchProcess:
            continue
        on_a_worker_node = NODE_TEMP in cmd or os.path.join(info.temp_dir, "nodes") in cmd
        # by name or script: a Python worker's arguments name the raylet's socket and the session's logs too
        ours = name in ("gcs_server", "raylet") or ("default_worker.py" not in cmd and any(s in cmd for s in scripts))
        if ours and not on_a_worker_node:
            out.add(pid)
    return out


def main(out: Path, preempt: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: Ray's socket paths live under it
    facts: dict = {}
    t0 = time.time()
    # every worker node in a mount namespace of its own: this machine's /tmp (OUT_DIR, the study's results,
    # the state dir) and home are not there; the bucket is what the nodes share
    info = up(str(REPO / "cluster.yaml"), str(state), free_port(), free_port(), max_workers=2,
              idle_timeout_minutes=IDLE_MINUTES, isolated=True, hide=[str(out), str(REPO / "results")], s3=True)
    os.environ.update(s3_env(info))
    facts["up_s"] = time.time() - t0
    try:
        start_ray(info.gcs_address, log_to_driver=False)  # as every platform driver that joins a cluster does
        facts["listening"] = listening_addresses(info)
        facts["second_up"] = second_cluster_on_the_same_ports(info, out)
        watch = NodeWatch()
        while not watch.samples:
            time.sleep(0.05)
        facts["workers_at_start"] = len(watch.samples[0][1])
        facts["refusals"] = refusals(info.gcs_address, out)
        results, preempted = out / "study", {}
        results.mkdir()
        asked = time.time()
        facts["worker_sees"] = what_a_worker_sees({"results_dir": str(results), "out_dir": str(out),
                                                   "state_dir": str(state), "real_home_cache": str(Path.home() / ".cache")})
        first_node = watch.first_time(lambda n: len(n) > 0, asked)
        facts["scale_up_s"] = first_node - asked if first_node else None  # a task queued -> a node alive
        if preempt:
            threading.Thread(target=preempt_mid_study, args=("study", preempted), daemon=True).start()
        submitted = time.time()
        facts["job_rc"], facts["job_tail"], facts["job_noise"] = submit_study(info.dashboard_url, results)
        facts["job_s"] = time.time() - submitted
        facts["study"] = study_facts(results, preempted)
        local_rc, local_tail = local_study(out / "local")
        facts["local_study"] = {"rc": local_rc, "tail": local_tail}
        facts["numbers"] = {"cluster": numbers(results), "local": numbers(out / "local") if local_rc == 0 else {}}
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
        finished = [r["config_hash"] for r in facts["study"]["table"] if r["status"] == "finished"]
        run = next((name for name in runs_in_s3("study") if finished and name.endswith(finished[0])), None)
        facts["read_back"] = read_back_after_the_workers(out, run) if run else {"error": "no finished run"}
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
