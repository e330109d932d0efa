"""The cluster flow on one machine: ``cluster.yaml``'s node types as a local autoscaled Ray cluster.

    python -m core.tools.cluster local up [--cluster-yaml cluster.yaml] [--dir .cluster]
    python -m core.tools.cluster local status
    python -m core.tools.cluster local down

Ray's own autoscaler runs it (the fake multinode provider): the head starts with the autoscaler monitor,
and every worker node is a real raylet that the autoscaler starts when tasks wait and stops after the idle
timeout. Each node type keeps its name, min/max workers and the idle timeout; its CPUs are capped at this
machine's cores, at most ``--max-workers`` of each type come up, and its GPUs become the custom resource
``local_gpu`` (same count, no CUDA needed), beside the ``accelerator_type:<name>`` resource Ray gives such
nodes on AWS. A study asks for one GPU with ``--trial-resource local_gpu=1 --accelerator-type A10G``: without
the accelerator type, Ray's autoscaler brings up the 8-GPU type for 1-GPU trials (it fits more of them).

``down`` ends exactly this cluster's processes (those naming its temp dir or GCS address, and their
children), never ``ray stop``: that would end every Ray process on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError, ResourceError, cli_main

LOCAL_GPU = "local_gpu"  # the GPUs of cluster.yaml's types, as a custom resource
HEAD_TYPE = "ray.head.default"
STATE_FILE = "cluster.json"
RAY_CLI = (sys.executable, "-m", "ray.scripts.scripts")  # this interpreter's `ray`, on PATH or not
# (CPUs, GPUs, accelerator) of instance types a node type may leave to detection (``resources: {}``); on AWS,
# Ray adds the resource ``accelerator_type:<accelerator>`` to such nodes, which a trial can ask for
INSTANCE_SHAPES = {
    "m6i.xlarge": (4, 0, ""), "m6i.2xlarge": (8, 0, ""), "m6i.4xlarge": (16, 0, ""), "c6i.2xlarge": (8, 0, ""),
    "g5.xlarge": (4, 1, "A10G"), "g5.2xlarge": (8, 1, "A10G"), "g5.4xlarge": (16, 1, "A10G"),
    "g5.12xlarge": (48, 4, "A10G"), "g5.48xlarge": (192, 8, "A10G"), "g6.xlarge": (4, 1, "L4"),
    "g6e.xlarge": (4, 1, "L40S"), "p3.2xlarge": (8, 1, "V100"), "p3.8xlarge": (32, 4, "V100"),
    "p4d.24xlarge": (96, 8, "A100"), "p5.48xlarge": (192, 8, "H100"),
}


@dataclass(frozen=True)
class NodeType:
    """One of cluster.yaml's ``available_node_types``, as the cloud would start it."""

    name: str
    cpus: float
    gpus: float
    accelerator: str
    min_workers: int
    max_workers: int
    head: bool = False


@dataclass(frozen=True)
class LocalCluster:
    """What ``up`` started: enough to join it, submit to it and end it."""

    dir: str
    temp_dir: str
    gcs_address: str
    dashboard_url: str
    node_types: tuple[dict, ...]


def node_types(cluster: dict[str, Any]) -> list[NodeType]:
    """cluster.yaml's node types with their CPU and GPU counts (declared, else from the instance type)."""
    types = cluster.get("available_node_types") or {}
    if not types or cluster.get("head_node_type") not in types:
        raise ConfigError("cluster.yaml needs available_node_types and a head_node_type among them")
    out = []
    for name, spec in types.items():
        res = spec.get("resources") or {}
        if "CPU" not in res:
            instance = (spec.get("node_config") or {}).get("InstanceType")
            if instance not in INSTANCE_SHAPES:
                raise ConfigError(f"node type {name}: resources are left to detection from InstanceType {instance!r}, "
                                  f"whose shape is not known here; declare resources: {{CPU: N, GPU: M}}")
            cpus, gpus, accelerator = INSTANCE_SHAPES[instance]
        else:
            cpus, gpus = res["CPU"], res.get("GPU", 0)
            accelerator = next((k.partition(":")[2] for k in res if k.startswith("accelerator_type:")), "")
        head = name == cluster["head_node_type"]
        out.append(NodeType(name, float(cpus), float(gpus), accelerator, 0 if head else int(spec.get("min_workers", 0)),
                            0 if head else int(spec.get("max_workers", cluster.get("max_workers", 2))), head))
    return out


def local_config(cluster: dict[str, Any], gcs_address: str, node_temp_root: str, cores: int, max_workers: int = 2,
                 idle_timeout_minutes: float | None = None, object_store_mb: int = 256) -> dict[str, Any]:
    """The fake-multinode autoscaler config for ``cluster``'s node types on a machine with ``cores`` CPUs."""
    available: dict[str, Any] = {}
    for t in node_types(cluster):
        if t.head:
            available[HEAD_TYPE] = {"resources": {"CPU": min(t.cpus, cores)}, "node_config": {}, "max_workers": 0}
            continue
        res: dict[str, Any] = {"CPU": max(1, min(int(t.cpus), cores)), "object_store_memory": object_store_mb << 20}
        if t.gpus:
            res[LOCAL_GPU] = t.gpus
        if t.accelerator:
            res[f"accelerator_type:{t.accelerator}"] = 1
        available[t.name] = {"resources": res, "node_config": {}, "min_workers": min(t.min_workers, max_workers),
                             "max_workers": min(t.max_workers, max_workers)}
    empty = ("file_mounts", "cluster_synced_files", "rsync_exclude", "rsync_filter", "initialization_commands",
             "setup_commands", "head_setup_commands", "worker_setup_commands", "head_start_ray_commands",
             "worker_start_ray_commands")
    return {
        "cluster_name": f"{cluster.get('cluster_name', 'cluster')}-local",
        "max_workers": sum(v.get("max_workers", 0) for v in available.values()),
        "upscaling_speed": cluster.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": cluster.get("idle_timeout_minutes", 5) if idle_timeout_minutes is None
        else idle_timeout_minutes,
        "provider": {"type": "external", "module": "core.tools.cluster.LocalNodeProvider", "gcs_address": gcs_address,
                     "node_temp_root": node_temp_root, "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "auth": {"ssh_user": "ubuntu"}, "docker": {}, "file_mounts_sync_continuously": False,
        **{k: {} if k == "file_mounts" else [] for k in empty},
        "available_node_types": available, "head_node_type": HEAD_TYPE,
    }


def _fake_provider():
    from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

    return FakeMultiNodeProvider


class LocalNodeProvider(_fake_provider()):
    """Ray's fake multinode provider, with each worker node in a temp dir of its own (as on separate machines):
    nodes sharing one would share ``runtime_resources/``, and a node that goes takes the job's working dir
    from under the others' workers."""

    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        import ray._private.parameter as parameter

        original = parameter.RayParams
        root = self.provider_config["node_temp_root"]

        def own_temp_dir(**kwargs):  # the id was drawn (under the provider's lock) just before this call
            return original(**kwargs, temp_dir=os.path.join(root, f"n{self._next_node_id}"))

        parameter.RayParams = own_temp_dir
        try:
            super()._create_node_with_resources_and_labels(node_config, tags, count, resources, labels)
        finally:
            parameter.RayParams = original

    def non_terminated_nodes(self, tag_filters):
        self._forget_reclaimed()
        return super().non_terminated_nodes(tag_filters)

    def _forget_reclaimed(self) -> None:
        """A worker node whose raylet has died is gone, as a reclaimed spot instance is from a cloud's list:
        its other processes are ended and the autoscaler may launch another. Ray's fake provider kept such
        a node listed (as pending, for ever), so a type at its node cap never got a replacement."""
        from ray._private import ray_constants

        with self.lock:
            for node_id, entry in list(self._nodes.items()):
                node = entry.get("node")  # the head's entry has none: its processes are not the provider's
                raylets = node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET, []) if node else []
                if raylets and all(info.process.poll() is not None for info in raylets):
                    self._nodes.pop(node_id)
                    self._terminate_node(entry)


def free_port() -> int:
    """A TCP port free on this machine now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_ip() -> str:
    from ray._private.services import get_node_ip_address

    return get_node_ip_address()


def cluster_env() -> dict[str, str]:
    """The environment of the cluster's processes and clients: Ray 2.60 starts it with token auth, and an
    inherited ``RAY_ADDRESS`` (a local instance, an earlier cluster) would send the head's processes and
    every job's driver to another cluster."""
    from core.runtime import CLUSTER_SWITCH

    # and a local instance's loopback-only switch would bind the head's GCS to 127.0.0.1 behind a LAN address
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", CLUSTER_SWITCH)}
    # a job's `python` (and `ray`) are this Python's, also when its environment was not activated
    path = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
    return {**env, "PATH": path, "RAY_AUTH_MODE": "token", "RAY_FAKE_CLUSTER": "1"}


def up(cluster_yaml: str, state_dir: str, port: int = 26379, dashboard_port: int = 28265,
       max_workers: int = 2, idle_timeout_minutes: float | None = None) -> LocalCluster:
    """Start the head (CPU 0 when cluster.yaml's head has it, as on the cloud) with Ray's autoscaler."""
    _require_dashboard()
    state = Path(state_dir).absolute()
    if (state / STATE_FILE).exists() and own_processes(read_state(str(state))):
        raise ConfigError(f"a local cluster is already up from {state}; python -m core.tools.cluster local down first")
    if not Path(cluster_yaml).is_file():
        raise ConfigError(f"no cluster config at {cluster_yaml} (--cluster-yaml: the file `ray up` takes)")
    cluster = yaml.safe_load(Path(cluster_yaml).read_text())
    gcs = f"{_node_ip()}:{port}"
    temp = state / "ray"
    config = local_config(cluster, gcs, str(temp / "nodes"), os.cpu_count() or 2, max_workers, idle_timeout_minutes)
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    (state / "autoscaler.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    head = config["available_node_types"][HEAD_TYPE]["resources"]["CPU"]
    info = LocalCluster(str(state), str(temp), gcs, f"http://127.0.0.1:{dashboard_port}",
                        tuple({"name": t.name, **{k: v for k, v in config["available_node_types"].get(
                            HEAD_TYPE if t.head else t.name, {}).items() if k != "node_config"}}
                              for t in node_types(cluster)))
    (state / STATE_FILE).write_text(json.dumps(asdict(info), indent=2))  # first: down finds a half-started head
    cmd = [*RAY_CLI, "start", "--head", f"--port={port}", f"--num-cpus={int(head)}", f"--temp-dir={temp}",
           f"--autoscaling-config={state / 'autoscaler.yaml'}", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={port + 1}",
           # not Ray's fixed default (52365): a local Ray instance on this machine may hold it, and the head's
           # agent, without which no job can be submitted, would not start
           f"--dashboard-agent-listen-port={free_port()}", "--object-store-memory=268435456"]
    proc = subprocess.run(cmd, env=cluster_env(), capture_output=True, text=True, timeout=180)
    if proc.returncode:
        down(str(state))
        raise ResourceError(f"ray start failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    try:
        _wait_for_job_agent(gcs)
    except ResourceError:
        down(str(state))
        raise
    return info


# run with the cluster's environment (token auth): until the head's dashboard agent has registered, Ray's job
# server answers every submission "No available agent to submit job"
_JOB_AGENT_PROBE = """
import sys, time
from ray._raylet import GcsClient
from ray._private.ray_constants import KV_NAMESPACE_DASHBOARD
from ray.dashboard.consts import DASHBOARD_AGENT_ADDR_NODE_ID_PREFIX
client = GcsClient(address=sys.argv[1])
deadline = time.time() + float(sys.argv[2])
while time.time() < deadline:
    heads = [i for i, n in client.get_all_node_info().items() if n.is_head_node and n.state == 0]
    if heads and client.internal_kv_get(f"{DASHBOARD_AGENT_ADDR_NODE_ID_PREFIX}{heads[0].hex()}".encode(),
                                        KV_NAMESPACE_DASHBOARD):
        sys.exit(0)
    time.sleep(0.2)
sys.exit(1)
"""


def _wait_for_job_agent(gcs_address: str, timeout_s: float = 60.0) -> None:
    probe = subprocess.run([sys.executable, "-c", _JOB_AGENT_PROBE, gcs_address, str(timeout_s)], env=cluster_env(),
                           capture_output=True, text=True, timeout=timeout_s + 30)
    if probe.returncode:
        raise ResourceError(f"the head's job agent did not come up within {timeout_s:.0f} s "
                            f"({probe.stderr[-500:]}); see .../ray/session_latest/logs/dashboard_agent.log")


def _require_dashboard() -> None:
    try:
        import aiohttp  # noqa: F401  (Ray's dashboard and job server need ray[default])
        import psutil  # noqa: F401  (finding the cluster's own processes)
    except ImportError:
        raise ConfigError("the local cluster runs Ray's dashboard and job server: "
                          "pip install -e '.[cluster]'") from None


def read_state(state_dir: str) -> LocalCluster:
    path = Path(state_dir).absolute() / STATE_FILE
    if not path.exists():
        raise ConfigError(f"no local cluster recorded in {path.parent} (python -m core.tools.cluster local up)")
    raw = json.loads(path.read_text())
    return LocalCluster(**{**raw, "node_types": tuple(raw["node_types"])})


def own_processes(info: LocalCluster) -> list[int]:
    """PIDs of the cluster's live processes: those naming its temp dir or GCS port, and their descendants."""
    import psutil

    port = info.gcs_address.rpartition(":")[2]
    marks = (info.temp_dir, info.gcs_address, f"127.0.0.1:{port}")
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = " ".join(p.info["cmdline"] or ())
        if p.pid != os.getpid() and p.info["status"] != psutil.STATUS_ZOMBIE and any(m in cmd for m in marks):
            found[p.pid] = p
    for p in list(found.values()):
        try:
            found.update({c.pid: c for c in p.children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE})
        except psutil.NoSuchProcess:
            pass
    return sorted(found)


def down(state_dir: str, grace_s: float = 10.0) -> int:
    """End the cluster's own processes (SIGTERM, then SIGKILL after ``grace_s``); returns how many."""
    import psutil

    info = read_state(state_dir)
    pids = own_processes(info)
    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.send_signal(signal.SIGTERM)
            procs.append(proc)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        proc.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    left = own_processes(info)
    if left:
        raise ResourceError(f"processes of the local cluster outlived SIGKILL: {left}")
    return len(pids)


def status(state_dir: str) -> str:
    """Ray's own autoscaler status of the cluster (nodes by type, pending demands)."""
    info = read_state(state_dir)
    if not own_processes(info):
        raise ConfigError(f"the local cluster recorded in {info.dir} is not running (python -m core.tools.cluster local up)")
    proc = subprocess.run([*RAY_CLI, "status", f"--address={info.gcs_address}"], env=cluster_env(),
                          capture_output=True, text=True, timeout=60)
    return proc.stdout + proc.stderr


def submit_command(extra: str = "--quick") -> str:
    """The Ray Job that runs the main study on the local cluster, as ``up`` prints it and the README shows it."""
    return (f"ray job submit --working-dir . -- python studies/augmentation_robustness.py {extra} "
            f"--results-dir $PWD/results/cluster --trial-resource {LOCAL_GPU}=1 --accelerator-type A10G "
            f"--max-concurrent 2").replace("  ", " ")


def how_to_use(info: LocalCluster) -> str:
    types = "\n".join(f"  {t['name']}: {t.get('resources')} min {t.get('min_workers', 0)} max "
                      f"{t.get('max_workers', 0)}" for t in info.node_types)
    return (f"local cluster up: GCS {info.gcs_address}, dashboard {info.dashboard_url}\nnode types:\n{types}\n"
            f"submit the main study as on the cloud (--quick: a 12-trial first try; without it, the 48-trial grid):\n"
            f"  export RAY_AUTH_MODE=token RAY_ADDRESS={info.dashboard_url}\n"
            f"  {submit_command()}\n"
            f"status: python -m core.tools.cluster local status   end it: python -m core.tools.cluster local down")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.tools.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("where", choices=["local"], help="local: Ray's fake multinode autoscaler on this machine")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--cluster-yaml", default="cluster.yaml")
    parser.add_argument("--dir", default=".cluster", help="the cluster's state and Ray temp dir (default .cluster)")
    parser.add_argument("--port", type=int, default=26379, help="GCS port (the Ray client server takes PORT+1)")
    parser.add_argument("--dashboard-port", type=int, default=28265)
    parser.add_argument("--max-workers", type=int, default=2, help="at most this many nodes of each type")
    parser.add_argument("--idle-timeout-minutes", type=float, default=None, help="default: cluster.yaml's")
    args = parser.parse_args(argv)
    return cli_main(lambda: _act(args))


def _act(args: argparse.Namespace) -> int:
    if args.action == "up":
        print(how_to_use(up(args.cluster_yaml, args.dir, args.port, args.dashboard_port, args.max_workers,
                            args.idle_timeout_minutes)), flush=True)
    elif args.action == "status":
        print(status(args.dir), flush=True)
    else:
        print(f"local cluster down: {down(args.dir)} processes ended", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
