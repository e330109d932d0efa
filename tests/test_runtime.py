"""The one place that starts Ray: a local instance is reachable from this machine only."""

import psutil
import pytest

from core.errors import ResourceError
from core.runtime import check_fits


def test_a_local_instance_listens_on_loopback_only(ray_session):
    """Ray's GCS, raylet, workers and agents bound to every interface (token auth on, but a laptop study
    has no reason to be reachable)."""
    import ray

    node = next(n for n in ray.nodes() if n["Alive"])
    assert node["NodeManagerAddress"] == "127.0.0.1"
    session_dir = ray._private.worker.global_worker.node.get_session_dir_path()
    ray_pids = {p.pid for p in psutil.process_iter(["cmdline"])
                if any(session_dir in part for part in (p.info["cmdline"] or []))}
    ray_pids |= {p.pid for p in psutil.Process().children(recursive=True)}
    listening = [(c.pid, c.laddr.ip) for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in ray_pids]
    assert listening, "found no Ray listener to check"
    exposed = [(pid, ip) for pid, ip in listening if ip not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
    assert not exposed, exposed


def test_requests_no_node_can_hold_are_refused(ray_session):
    check_fits({"CPU": 1}, "a trial", units=4)  # the session has 4 logical CPUs
    with pytest.raises(ResourceError, match=r"a trial asks for 5 x \{'CPU': 1.0\}"):
        check_fits({"CPU": 1}, "a trial", units=5)
    with pytest.raises(ResourceError, match=r"GPU 0\)"):
        check_fits({"CPU": 1, "GPU": 0.25}, "a trial")


def test_ray_data_cluster_actors_are_created_on_the_driver_node(ray_session):
    """On a cluster they would otherwise land on (and keep busy, never scaled down) the first GPU node that
    runs a dataset; every getter this Ray version has must still exist under its name."""
    import ray
    from ray._private.state import actors

    from core.runtime import _RAY_DATA_SINGLETONS, pin_ray_data_actors_here

    assert pin_ray_data_actors_here() == [name for _, name in _RAY_DATA_SINGLETONS]
    here = ray.get_runtime_context().get_node_id()
    import time

    names = {"_StatsActor", "_UsageCollectionActor", "_AutoscalingCoordinatorActor", "AutoscalingRequester",
             "ActorLocationTracker"}
    deadline = time.time() + 60
    while True:
        pinned = {a["ActorClassName"]: a["Address"]["NodeID"] for a in actors().values() if a["State"] == "ALIVE"}
        if names <= set(pinned) or time.time() > deadline:
            break
        time.sleep(0.2)
    for cls in names:
        assert pinned.get(cls) == here, (cls, pinned)


def test_a_run_gets_a_cpu_per_core_for_its_tasks_and_one_per_train_worker():
    import os

    from core.runtime import run_cpus

    cores = os.cpu_count()
    assert run_cpus(0) == cores  # in process: more tasks than cores only slowed the step's threads
    assert run_cpus(2) == cores + 2  # each Train worker holds its CPU for the whole run


def test_torch_gets_huge_pages_for_large_cpu_blocks_once_core_is_imported():
    """``import core`` sets THP_MEM_ALLOC_ENABLE before torch's first allocation: a large CPU tensor is
    then backed by transparent huge pages (a CPU step's page faults were 40% of its CPU time)."""
    import os
    import subprocess
    import sys

    mode = open("/sys/kernel/mm/transparent_hugepage/enabled").read() if os.path.exists(
        "/sys/kernel/mm/transparent_hugepage/enabled") else "[never]"
    if "[never]" in mode:
        pytest.skip("transparent huge pages are off on this kernel")
    code = ("import core, torch; x = torch.ones(64 << 20, dtype=torch.uint8); "
            "print(next(int(l.split()[1]) for l in open('/proc/self/smaps_rollup') if l.startswith('AnonHugePages')))")
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    huge = int(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              check=True).stdout)
    plain = int(subprocess.run([sys.executable, "-c", code], env={**env, "THP_MEM_ALLOC_ENABLE": "0"},
                               capture_output=True, text=True, check=True).stdout)
    assert huge >= 32 << 10, huge  # kB: most of the 64 MiB tensor
    if "[madvise]" in mode:  # only what asks for them gets them: torch's default does not
        assert plain == 0, plain


def test_local_paths_are_refused_only_on_a_cluster_of_several_nodes(ray_session, monkeypatch):
    import core.runtime as runtime
    from core.errors import ConfigError

    paths = {"data.root": "/data/imagenet", "model.weights": None, "--storage": "s3://bucket/study",
             "eval.corruption_root": "/mnt/shared/imagenet-c"}
    monkeypatch.setenv(runtime.SHARED_PATHS, "/mnt/shared:/other")
    assert runtime.not_shared(paths) == ["data.root=/data/imagenet"]  # URIs and named shared mounts pass
    assert not runtime.multi_node()  # the session's private instance: one node, its own disk
    runtime.require_shared(paths, "x")
    monkeypatch.setattr(runtime, "multi_node", lambda: True)
    try:
        runtime.require_shared(paths, "the trials run on any of them")
    except ConfigError as exc:
        message = str(exc)
    else:
        raise AssertionError("a local data root on a cluster was accepted")
    assert message.startswith("data.root=/data/imagenet: a local path, but this Ray cluster has nodes that do not see")
    assert "(the trials run on any of them)" in message and "CONTRASTIVE_SHARED_PATHS" in message
    monkeypatch.setenv(runtime.SHARED_PATHS, "/")
    runtime.require_shared(paths, "x")  # a cluster whose nodes share this disk (the non-isolated local one)
