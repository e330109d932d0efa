"""The one place that starts or joins Ray.

A local instance is private to this machine: every Ray service (GCS, raylet, workers, agents,
dashboard) listens on 127.0.0.1, and its logical CPUs are oversubscribed 2x (Train workers holding
every core must never leave Ray Data's decode tasks or a study's trial drivers waiting for a CPU slot
forever). Only ``address=`` joins a cluster, and only a cluster uses the network.
"""

from __future__ import annotations

import os
from typing import Any

from core.errors import ResourceError

LOCAL_HOST = "127.0.0.1"
# Ray's switch for "this node is part of a cluster": off, a node's address is the loopback address and
# its gRPC servers bind to it alone (read by Ray at call time and by the processes it starts).
_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _loopback_only(on: bool) -> None:
    from ray._private import ray_constants

    if on:
        os.environ[_CLUSTER_SWITCH] = "0"
    else:
        os.environ.pop(_CLUSTER_SWITCH, None)
    ray_constants.ENABLE_RAY_CLUSTER = not on


def _reachable(address: str, timeout: float = 5.0) -> None:
    """A ``host:port`` GCS address must answer a TCP connect (Ray itself retries for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", a bare host: Ray resolves those itself
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ResourceError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); is it up? "
                            f"(ray status --address {address})") from None


def node_shapes() -> list[dict[str, float]]:
    """The resources of every node the cluster has, and of every node type its autoscaler can add."""
    import ray

    shapes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
        shapes += [dict(g.resources) for g in (config.node_group_configs if config else ()) if g.max_count != 0]
    except Exception:  # no autoscaler (a local instance), or an older GCS: the live nodes are all there is
        pass
    return shapes


def check_fits(per_unit: dict[str, float], what: str, units: int = 1) -> None:
    """Refuse at once a request the cluster can never meet (Ray would wait for it forever): each unit
    (a trial, a Train worker) must fit on one node, and ``units`` of them on the nodes there can be."""
    request = {k: float(v) for k, v in per_unit.items() if v}
    shapes = node_shapes()
    fitting = [s for s in shapes if all(s.get(k, 0.0) >= v for k, v in request.items())]
    capacity = sum(min(s.get(k, 0.0) // v for k, v in request.items()) if request else units for s in fitting)
    if fitting and capacity >= units:
        return
    offer = max(shapes, key=lambda s: (s.get("GPU", 0), s.get("CPU", 0)), default={})
    raise ResourceError(f"{what} asks for {units} x {request}, which this Ray cluster can never offer "
                        f"(its largest node: CPU {offer.get('CPU', 0):g}, GPU {offer.get('GPU', 0):g}"
                        f"{', in all ' + str(int(capacity)) + ' of them' if fitting else ''})")


def start_ray(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
              dashboard: bool = False, log_to_driver: bool = True, object_store_memory: int | None = None) -> Any:
    """``ray.init`` for the platform: join ``address`` (a cluster), or start a private local instance
    on 127.0.0.1 (``num_cpus`` logical CPUs, default twice the cores). Returns Ray's context."""
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    _loopback_only(not address)
    if address:
        _reachable(address)
        return ray.init(address=address, log_to_driver=log_to_driver)
    return ray.init("local", num_cpus=num_cpus or 2 * (os.cpu_count() or 2), num_gpus=num_gpus, include_dashboard=dashboard,
                    dashboard_host=LOCAL_HOST, log_to_driver=log_to_driver, object_store_memory=object_store_memory)

