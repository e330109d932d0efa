"""The cluster flow on one machine: ``cluster.yaml``'s node types as a local autoscaled Ray cluster.

    python -m core.tools.cluster local up [--cluster-yaml cluster.yaml] [--dir .cluster]
    python -m core.tools.cluster local status
    python -m core.tools.cluster local down

Ray's own autoscaler runs it (the fake multinode provider): the head starts with the autoscaler monitor,
and every worker node is a real raylet that the autoscaler starts when tasks wait and stops after the idle
timeout. Each node type keeps its name, min/max workers and the idle timeout; its CPUs are capped at this
machine's cores, at most ``--max-workers`` of each type come up, and its GPUs become the custom resource
``local_gpu`` (same count, no CUDA needed; the node also declares them as ``GPU``, so that Ray's autoscaler
keeps CPU-only work off the GPU types as it does on AWS, though nothing may ask for ``GPU`` here), beside
the ``accelerator_type:<name>`` resource Ray gives such nodes on AWS. A study asks for one GPU with ``--trial-resource local_gpu=1 --accelerator-type A10G``: without
the accelerator type, Ray's autoscaler brings up the 8-GPU type for 1-GPU trials (it fits more of them).

``--isolated`` makes the nodes share nothing but what a cloud's nodes share: each worker node's processes
run in a Linux mount namespace of their own (``unshare -m``, as root) with a private, empty ``/tmp`` (where
its Ray temp dir lives), ``$HOME`` and cache directory, and without the cluster's state directory or the
driver's results (``--hide``, default ``./results`` and ``./runs``). What crosses is the network (loopback
and this host's address), the installed Python environment (this checkout and its venv, as every cloud node
installs them) and what Ray ships (a job's ``working_dir``, the object store): a path that only the driver's
disk holds is not there, as on a real cluster.

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
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError, ResourceError, cli_main
from core.runtime import CLUSTER_SWITCH, LOCAL_HOST, SHARED_PATHS

LOCAL_GPU = "local_gpu"  # the GPUs of cluster.yaml's types, as a custom resource
HEAD_TYPE = "ray.head.default"
STATE_FILE = "cluster.json"
RAY_CLI = (sys.executable, "-m", "ray.scripts.scripts")  # this interpreter's `ray`, on PATH or not
# `ray start --address` of a worker node on 127.0.0.1: Ray's CLI refuses to join a cluster under its loopback-only
# switch, and without it rewrites the address 127.0.0.1 to the machine's LAN address (where nothing listens)
LOOPBACK_WORKER_CLI = (sys.executable, "-c", "import sys, ray._private.services as s; "
                       f"s.get_node_ip_address = lambda address=None: {LOCAL_HOST!r}; "
                       "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()")
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
    isolated: bool = False  # worker nodes share no disk with the head (see the module docstring)
    s3_endpoint: str | None = None  # a local S3 API (moto) started with the cluster, ended by down
    s3_pid: int | None = None


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
                 idle_timeout_minutes: float | None = None, object_store_mb: int = 256,
                 isolated: dict | None = None) -> dict[str, Any]:
    """The fake-multinode autoscaler config for ``cluster``'s node types on a machine with ``cores`` CPUs;
    ``isolated``: each worker node in a mount namespace of its own (:func:`isolation`)."""
    available: dict[str, Any] = {}
    for t in node_types(cluster):
        if t.head:
            available[HEAD_TYPE] = {"resources": {"CPU": min(t.cpus, cores)}, "node_config": {}, "max_workers": 0}
            continue
        res: dict[str, Any] = {"CPU": max(1, min(int(t.cpus), cores)), "object_store_memory": object_store_mb << 20}
        if t.gpus:  # GPU too, no CUDA behind it: Ray's autoscaler then keeps CPU-only work off these types, as on AWS
            res[LOCAL_GPU] = t.gpus
            res["GPU"] = t.gpus
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
                     "disable_launch_config_check": True, **({"isolated": isolated} if isolated else {})},
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
    from under the others' workers. With ``isolated`` in its config, each worker node is a ``ray start
    --block`` in a mount namespace of its own instead (see the module docstring)."""

    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        if self.provider_config.get("isolated"):
            return self._create_isolated_node(tags, resources, labels)
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

    def _create_isolated_node(self, tags: dict, resources: dict, labels: dict) -> None:
        from ray._private import ray_constants
        from ray.autoscaler.tags import (
            NODE_KIND_WORKER,
            STATUS_UP_TO_DATE,
            TAG_RAY_NODE_KIND,
            TAG_RAY_NODE_NAME,
            TAG_RAY_NODE_STATUS,
            TAG_RAY_USER_NODE_TYPE,
        )

        resources = dict(resources)
        with self.lock:
            node_type, node_id = tags[TAG_RAY_USER_NODE_TYPE], self._next_hex_node_id()
            cpus, gpus, store = resources.pop("CPU", 0), resources.pop("GPU", 0), resources.pop("object_store_memory")
            # without the head's loopback-only switch (see LOOPBACK_WORKER_CLI); on 127.0.0.1 all the same
            inherited = {k: v for k, v in os.environ.items() if k != CLUSTER_SWITCH}
            env = {**inherited, "RAY_OVERRIDE_NODE_ID_FOR_TESTING": node_id, "RAY_CLOUD_INSTANCE_ID": node_id,
                   "RAY_NODE_TYPE_NAME": node_type, ray_constants.RESOURCES_ENVIRONMENT_VARIABLE: json.dumps(resources),
                   ray_constants.LABELS_ENVIRONMENT_VARIABLE: json.dumps(labels), **_auth_token_env()}
            start = [*LOOPBACK_WORKER_CLI, "start", f"--address={self._gcs_address}",
                     f"--node-ip-address={LOCAL_HOST}", f"--num-cpus={int(cpus)}",
                     f"--num-gpus={int(gpus)}", f"--object-store-memory={int(store)}",
                     f"--resources={json.dumps(resources)}", f"--labels={json.dumps(labels)}",
                     f"--temp-dir={NODE_TEMP}", "--dashboard-agent-listen-port=0", "--block"]
            log = open(os.path.join(self.provider_config["node_temp_root"], f"{node_id[-5:]}.log"), "ab")
            proc = subprocess.Popen(isolated_command(self.provider_config["isolated"], start), env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            self._nodes[node_id] = {"tags": {TAG_RAY_NODE_KIND: NODE_KIND_WORKER, TAG_RAY_USER_NODE_TYPE: node_type,
                                             TAG_RAY_NODE_NAME: node_id, TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE,
                                             **tags}, "process": proc}

    def _terminate_node(self, node):
        if "process" not in node:
            return super()._terminate_node(node)
        _end_tree(node["process"].pid)

    def non_terminated_nodes(self, tag_filters):
        self._forget_reclaimed()
        return super().non_terminated_nodes(tag_filters)

    def _forget_reclaimed(self) -> None:
        """A worker node whose raylet has died is gone, as a reclaimed spot instance is from a cloud's list:
        its other processes are ended and the autoscaler may launch another. Ray's fake provider kept such
        a node listed (as pending, for ever), so a type at its node cap never got a replacement. (An isolated
        node's ``ray start --block`` exits when its raylet dies.)"""
        from ray._private import ray_constants

        with self.lock:
            for node_id, entry in list(self._nodes.items()):
                node = entry.get("node")  # the head's entry has none: its processes are not the provider's
                raylets = node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET, []) if node else []
                gone = (raylets and all(info.process.poll() is not None for info in raylets)) \
                    or ("process" in entry and entry["process"].poll() is not None)
                if gone:
                    self._nodes.pop(node_id)
                    self._terminate_node(entry)


NODE_TEMP = "/tmp/ray-node"  # an isolated node's Ray temp dir, inside its private /tmp


def isolation(hide: list[str]) -> dict:
    """The provider's ``isolated`` settings: the paths each node must not see besides /tmp and $HOME (the
    real home's caches and Ray token too: the interpreter may live under that home, so it stays mounted)."""
    home = Path.home()
    return {"hide": sorted({os.path.abspath(p) for p in [*hide, home / ".cache", home / ".ray"]})}


def isolated_command(settings: dict, command: list[str]) -> list[str]:
    """``command`` in a new mount namespace: an empty /tmp, an empty $HOME (an environment variable pointing
    into it: the interpreter may live under the real home), each hidden path covered by an empty tmpfs."""
    import shlex

    hide = " ".join(shlex.quote(p) for p in settings["hide"])
    script = ("set -e; mount -t tmpfs -o mode=1777 tmpfs /tmp; "
              f"for d in {hide}; do if [ -d \"$d\" ]; then mount -t tmpfs -o mode=0755 tmpfs \"$d\"; fi; done; "
              f"mkdir -p /tmp/home {NODE_TEMP}; cd /tmp/home; export HOME=/tmp/home XDG_CACHE_HOME=/tmp/home/.cache "
              f"CONTRASTIVE_CACHE=/tmp/home/.cache/contrastive-platform; exec {shlex.join(command)}")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def check_isolation() -> None:
    """``unshare -m`` works here (Linux, as root or with user namespaces), and what a node runs (the
    interpreter's environment, the platform's code) is not under /tmp, which each node gets empty: otherwise
    say so, in one line (a node could not start, and a task would wait for it in silence)."""
    code = str(Path(__file__).resolve().parents[2])
    for what, path in (("the Python environment", sys.prefix), ("the platform's code", code)):
        if Path(os.path.abspath(path)).is_relative_to("/tmp"):
            raise ResourceError(f"--isolated gives each node an empty /tmp, so {what} at {path} would not be there; "
                                f"clone and install the platform outside /tmp")
    try:
        probe = subprocess.run(isolated_command(isolation([]), ["true"]), capture_output=True, text=True, timeout=30)
        failure = (probe.stderr or probe.stdout).strip()[:300] if probe.returncode else None
    except FileNotFoundError as exc:
        failure = f"{exc.filename or 'unshare'} not found"
    if failure is not None:
        raise ResourceError(f"--isolated needs Linux mount namespaces (unshare -m, as root); here it failed: "
                            f"{failure}")


def _auth_token_env() -> dict[str, str]:
    """The cluster's token for a node whose $HOME (where Ray keeps it) is its own, as a cloud node is given it."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return {"RAY_AUTH_TOKEN": os.environ["RAY_AUTH_TOKEN"]}
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    return {"RAY_AUTH_TOKEN": path.read_text().strip()} if path.is_file() else {}


def _end_tree(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM a process and its descendants, SIGKILL what is left after ``grace_s``."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def free_port() -> int:
    """A TCP port free on this machine now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env() -> dict[str, str]:
    """The environment of the cluster's processes and clients: Ray 2.60 starts it with token auth; every node
    of a one-machine cluster is on 127.0.0.1 (Ray's loopback switch: its GCS, raylets, agents and metrics
    listen there alone, as a local instance's do); and an inherited ``RAY_ADDRESS`` (a local instance, an
    earlier cluster) would send the head's processes and every job's driver to another cluster."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # a job's `python` (and `ray`) are this Python's, also when its environment was not activated
    path = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
    return {**env, "PATH": path, "RAY_AUTH_MODE": "token", "RAY_FAKE_CLUSTER": "1", CLUSTER_SWITCH: "0"}


def check_ports(ports: dict[str, int]) -> None:
    """Each port ``up`` will listen on is free (a second cluster started on a running one's ports made Ray's CLI
    end that cluster's dashboard, raylet and agents); taken ones are refused, named, before anything starts."""
    import socket

    taken = []
    for what, port in ports.items():
        with socket.socket() as s:
            try:
                s.bind((LOCAL_HOST, port))
            except OSError:
                taken.append(f"{port} ({what})")
    if taken:
        raise ConfigError(f"port(s) {', '.join(taken)} already in use on this machine (another cluster, or a "
                          f"service); pass free ones with --port and --dashboard-port")


S3_BUCKET = "cluster"  # the bucket of the local S3 API that `up --s3` starts


def up(cluster_yaml: str, state_dir: str, port: int = 26379, dashboard_port: int = 28265,
       max_workers: int = 2, idle_timeout_minutes: float | None = None, isolated: bool = False,
       hide: list[str] | None = None, s3: bool = False) -> LocalCluster:
    """Start the head (CPU 0 when cluster.yaml's head has it, as on the cloud) with Ray's autoscaler;
    ``isolated``: worker nodes in mount namespaces of their own, without ``hide`` (default ./results,
    ./runs) and the cluster's state; ``s3``: with a local S3 API (moto) whose address every node gets."""
    _require_dashboard()
    state = Path(state_dir).absolute()
    if (state / STATE_FILE).exists() and own_processes(read_state(str(state))):
        raise ConfigError(f"a local cluster is already up from {state}; python -m core.tools.cluster local down first")
    check_ports({"GCS, --port": port, "Ray client server, --port + 1": port + 1, "dashboard": dashboard_port})
    if not Path(cluster_yaml).is_file():
        raise ConfigError(f"no cluster config at {cluster_yaml} (--cluster-yaml: the file `ray up` takes)")
    if isolated:
        check_isolation()
    cluster = yaml.safe_load(Path(cluster_yaml).read_text())
    gcs, temp = f"{LOCAL_HOST}:{port}", state / "ray"
    shutil.rmtree(temp, ignore_errors=True)
    (temp / "nodes").mkdir(parents=True)
    config = local_config(cluster, gcs, str(temp / "nodes"), os.cpu_count() or 2, max_workers, idle_timeout_minutes,
                          isolated=isolation([str(state), *_hidden(hide)]) if isolated else None)
    (state / "autoscaler.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    info = LocalCluster(str(state), str(temp), gcs, f"http://127.0.0.1:{dashboard_port}",
                        tuple({"name": t.name, **{k: v for k, v in config["available_node_types"].get(
                            HEAD_TYPE if t.head else t.name, {}).items() if k != "node_config"}}
                              for t in node_types(cluster)), isolated)
    (state / STATE_FILE).write_text(json.dumps(asdict(info), indent=2))  # first: down finds a half-started head
    if s3:
        info = replace(info, **_start_s3(state))
        (state / STATE_FILE).write_text(json.dumps(asdict(info), indent=2))
    try:
        _start_head(info, port, int(config["available_node_types"][HEAD_TYPE]["resources"]["CPU"]), dashboard_port)
    except ResourceError:
        down(str(state))
        raise
    return info


def _hidden(hide: list[str] | None) -> list[str]:
    """What isolated nodes must not see: ``hide``, or by default the driver's ``./results`` and ``./runs``
    (made now if missing: a mount needs its mount point, and a directory made later would be seen)."""
    if hide is not None:
        return hide
    for d in ("results", "runs"):
        os.makedirs(d, exist_ok=True)
    return ["results", "runs"]


def _start_head(info: LocalCluster, port: int, cpus: int, dashboard_port: int) -> None:
    state = Path(info.dir)
    cmd = [*RAY_CLI, "start", "--head", f"--port={port}", f"--num-cpus={cpus}", f"--temp-dir={info.temp_dir}",
           f"--autoscaling-config={state / 'autoscaler.yaml'}", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={port + 1}",
           # not Ray's fixed default (52365): a local Ray instance on this machine may hold it, and the head's
           # agent, without which no job can be submitted, would not start
           f"--dashboard-agent-listen-port={free_port()}", "--object-store-memory=268435456"]
    # a job's driver on a cluster whose nodes share this disk may use local paths; on an isolated one, not
    shared = {} if info.isolated else {SHARED_PATHS: "/"}
    proc = subprocess.run(cmd, env={**cluster_env(), **s3_env(info), **shared}, capture_output=True, text=True,
                          timeout=180)
    if proc.returncode:
        raise ResourceError(f"ray start failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    _wait_for_job_agent(info.gcs_address)


def s3_env(info: LocalCluster) -> dict[str, str]:
    """The standard AWS variables that point every client (the nodes, a job, your shell) at ``up --s3``'s store."""
    if not info.s3_endpoint:
        return {}
    return {"AWS_ENDPOINT_URL": info.s3_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def _start_s3(state: Path) -> dict:
    """moto's S3 server on a free loopback port, with the bucket ``S3_BUCKET``."""
    try:
        import boto3
        import moto  # noqa: F401
    except ImportError:
        raise ConfigError("--s3 runs moto's S3 server: pip install -e '.[cluster]'") from None
    port = free_port()
    log = open(state / "s3.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    env = s3_env(LocalCluster("", "", "", "", (), s3_endpoint=endpoint))
    client = boto3.client("s3", endpoint_url=endpoint, region_name=env["AWS_DEFAULT_REGION"],
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    for _ in range(200):
        try:
            client.create_bucket(Bucket=S3_BUCKET)
            return {"s3_endpoint": endpoint, "s3_pid": proc.pid}
        except Exception:  # noqa: BLE001 - the server is still starting
            time.sleep(0.1)
    proc.kill()
    raise ResourceError(f"moto's S3 server did not start on port {port} (see {state / 's3.log'})")


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
    if info.s3_pid and psutil.pid_exists(info.s3_pid):
        try:
            proc = psutil.Process(info.s3_pid)
            if "moto.server" in " ".join(proc.cmdline()):  # not a pid reused since
                found[proc.pid] = proc
        except psutil.NoSuchProcess:
            pass
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


def submit_command(extra: str = "--quick", isolated: bool = False) -> str:
    """The Ray Job that runs the main study on the local cluster, as ``up`` prints it and the README shows it
    (an isolated cluster keeps the study's storage in ``up --s3``'s bucket: its nodes share no disk)."""
    storage = f" --storage s3://{S3_BUCKET}/augmentation_robustness" if isolated else ""
    results = "results/cluster_isolated" if isolated else "results/cluster"
    return (f"ray job submit --working-dir . -- python studies/augmentation_robustness.py {extra} "
            f"--results-dir $PWD/{results}{storage} --trial-resource {LOCAL_GPU}=1 --accelerator-type A10G "
            f"--max-concurrent 2").replace("  ", " ")


def how_to_use(info: LocalCluster) -> str:
    types = "\n".join(f"  {t['name']}: {t.get('resources')} min {t.get('min_workers', 0)} max "
                      f"{t.get('max_workers', 0)}" for t in info.node_types)
    exports = " ".join(f"{k}={v}" for k, v in s3_env(info).items())
    isolated = ("worker nodes share no disk with this machine: data, --storage and model weights must be in "
                "object storage\n" if info.isolated else "")
    return (f"local cluster up: GCS {info.gcs_address}, dashboard {info.dashboard_url}\nnode types:\n{types}\n"
            f"{isolated}"
            + (f"a local S3 API with bucket {S3_BUCKET!r}: {info.s3_endpoint}\n" if info.s3_endpoint else "")
            + f"submit the main study as on the cloud (--quick: a 12-trial first try; without it, the 48-trial grid):\n"
            f"  export RAY_AUTH_MODE=token RAY_ADDRESS={info.dashboard_url}" + (f" {exports}" if exports else "") + "\n"
            f"  {submit_command(isolated=info.isolated)}\n"
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
    parser.add_argument("--isolated", action="store_true",
                        help="worker nodes share no disk with this machine: each in a mount namespace of its own "
                             "(Linux, as root) with an empty /tmp and $HOME, without --hide paths and the cluster's state")
    parser.add_argument("--hide", action="append", default=None, metavar="PATH",
                        help="with --isolated: a path the nodes must not see (repeatable; default ./results ./runs)")
    parser.add_argument("--s3", action="store_true",
                        help=f"start a local S3 API (moto) with bucket {S3_BUCKET!r} with the cluster; every node gets "
                             f"its address (the AWS_* variables), down ends it")
    args = parser.parse_args(argv)
    return cli_main(lambda: _act(args))


def _act(args: argparse.Namespace) -> int:
    if args.action == "up":
        print(how_to_use(up(args.cluster_yaml, args.dir, args.port, args.dashboard_port, args.max_workers,
                            args.idle_timeout_minutes, args.isolated, args.hide, args.s3)), flush=True)
    elif args.action == "status":
        print(status(args.dir), flush=True)
    else:
        print(f"local cluster down: {down(args.dir)} processes ended", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
