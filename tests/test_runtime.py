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
