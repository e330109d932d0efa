"""The one place that starts or joins Ray.

A local instance is private to this machine: every Ray service (GCS, raylet, workers, agents,
dashboard) listens on 127.0.0.1, and its logical CPUs are oversubscribed 2x (Train workers holding
every core must never leave Ray Data's decode tasks or a study's trial drivers waiting for a CPU slot
forever). Only ``address=`` joins a cluster, and only a cluster uses the network.
"""

from __future__ import annotations

import os
from typing import Any

from core.errors import ConfigError, ResourceError

LOCAL_HOST = "127.0.0.1"
# Ray's switch for "this node is part of a cluster": off, a node's address is the loopback address and
# its gRPC servers bind to it alone (read by Ray at call time and by the processes it starts).
CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _loopback_only(on: bool) -> None:
    from ray._private import ray_constants

    if on:
        os.environ[CLUSTER_SWITCH] = "0"
    else:
        os.environ.pop(CLUSTER_SWITCH, None)
    ray_constants.ENABLE_RAY_CLUSTER = not on


def _on_loopback(address: str) -> bool:
    """Whether a cluster address is this machine's loopback (``python -m core.tools.cluster local up``): its
    nodes are on 127.0.0.1, so a driver joining it must be too (with a LAN address it finds no raylet)."""
    host = address.split("://", 1)[-1].rpartition(":")[0]
    return host in (LOCAL_HOST, "localhost")


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


def node_shapes() -> tuple[list[dict[str, float]], bool]:
    """The resources of every node the cluster has and of every node type its autoscaler can add, and
    whether an autoscaler runs whose node types are not published (Ray's v1 autoscaler keeps them to itself)."""
    import ray

    shapes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
        if config and config.node_group_configs:
            return shapes + [dict(g.resources) for g in config.node_group_configs if g.max_count != 0], False
    except Exception:  # an older GCS: the live nodes are all it tells
        pass
    return shapes, _autoscaler_runs()


def _autoscaler_runs() -> bool:
    """An autoscaler with node types of its own runs (a local instance's monitor only mirrors its nodes,
    each as a read-only type named after the node)."""
    try:
        import json

        from ray._private import ray_constants
        from ray.autoscaler._private.util import format_readonly_node_type
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        mapping = (json.loads(raw).get("autoscaler_report") or {}).get("node_type_mapping") or {} if raw else {}
        return any(kind != format_readonly_node_type(node) for node, kind in mapping.items())
    except Exception:
        return False


SHARED_PATHS = "CONTRASTIVE_SHARED_PATHS"  # local path prefixes every node mounts (colon-separated), e.g. /mnt/nfs


def multi_node() -> bool:
    """Whether this Ray instance has, or its autoscaler can add, a node other than this process's (whose
    disk the others do not see). A private local instance has one node."""
    import ray

    if not ray.is_initialized():
        return False
    here = ray.get_runtime_context().get_node_id()
    others = [n for n in ray.nodes() if n.get("Alive") and n["NodeID"] != here]
    if others:
        return True
    shapes, unknown_types = node_shapes()
    return unknown_types or len(shapes) > 1  # node types an autoscaler may add, beside the live node


def not_shared(paths: dict[str, str | None]) -> list[str]:
    """The local paths of ``paths`` (what -> path or URI) that no node but this one is known to see: not
    URIs, and not under a prefix of ``$CONTRASTIVE_SHARED_PATHS``."""
    from core.fs import absolute, is_uri

    prefixes = [os.path.abspath(p) for p in os.environ.get(SHARED_PATHS, "").split(":") if p]
    local = {what: absolute(p) for what, p in paths.items() if p and not is_uri(p)}
    return [f"{what}={path}" for what, path in local.items()
            if not any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)]


def require_shared(paths: dict[str, str | None], why: str) -> None:
    """On a cluster of more than one node, refuse at once a local path that every node must read or write
    (``why`` says who): the other nodes' disks do not hold it."""
    local = not_shared(paths)
    if local and multi_node():
        raise ConfigError(f"{', '.join(local)}: a local path, but this Ray cluster has nodes that do not see this "
                          f"machine's disk ({why}); use object storage (s3://bucket/...), or a mount every node "
                          f"has and name it in {SHARED_PATHS}=/mnt/shared")


def check_fits(per_unit: dict[str, float], what: str, units: int = 1) -> None:
    """Refuse at once a request the cluster can never meet (Ray would wait for it forever): each unit
    (a trial, a Train worker) must fit on one node, and ``units`` of them on the nodes there can be.
    Under an autoscaler whose node types are unknown, a request no live node meets is only announced."""
    request = {k: float(v) for k, v in per_unit.items() if v}
    shapes, unknown_types = node_shapes()
    fitting = [s for s in shapes if all(s.get(k, 0.0) >= v for k, v in request.items())]
    capacity = sum(min(s.get(k, 0.0) // v for k, v in request.items()) if request else units for s in fitting)
    if fitting and capacity >= units:
        return
    if unknown_types:
        print(f"{what} asks for {units} x {request}, more than the live nodes offer: waiting for the autoscaler "
              f"to add nodes (it does not publish its node types, so a request none of them meets would wait "
              f"forever: check `ray status`)", flush=True)
        return
    offer = max(shapes, key=lambda s: (s.get("GPU", 0), s.get("CPU", 0)), default={})
    raise ResourceError(f"{what} asks for {units} x {request}, which this Ray cluster can never offer "
                        f"(its largest node: CPU {offer.get('CPU', 0):g}, GPU {offer.get('GPU', 0):g}"
                        f"{', in all ' + str(int(capacity)) + ' of them' if fitting else ''})")


# Ray Data's cluster-wide detached actors, each created by the first process that needs it on that process's node
_RAY_DATA_SINGLETONS = (
    ("ray.data._internal.stats", "get_or_create_stats_actor"),
    ("ray.data._internal.usage.actor", "get_or_create_usage_collection_actor"),
    ("ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator", "get_or_create_autoscaling_coordinator"),
    ("ray.data._internal.execution.autoscaling_requester", "get_or_create_autoscaling_requester_actor"),
    ("ray.data._internal.execution.node_trackers.actor_location", "get_or_create_actor_location_tracker"),
)


def pin_ray_data_actors_here() -> list[str]:
    """Create Ray Data's cluster-wide detached actors on this driver's node now (returns those created). Ray
    puts each on the node of the first process that runs a dataset: a trial on a GPU node would keep that
    node busy, so never scaled down, for the cluster's lifetime."""
    import importlib

    made = []
    for module, name in _RAY_DATA_SINGLETONS:
        try:
            getter = getattr(importlib.import_module(module), name)  # external module: Ray's own
        except (ImportError, AttributeError):  # another Ray version: its own placement applies
            continue
        try:
            getter()
        except Exception as exc:  # e.g. under Ray Client: the study still runs, the node may stay up
            import warnings

            warnings.warn(f"could not create Ray Data's {name} on this node ({exc}); a worker node that "
                          f"creates it will not scale down", stacklevel=2)
            continue
        made.append(name)
    return made


class _TokenNotice:
    """Drops Ray's notice that it turned token authentication on (for a new local instance, or on joining a
    cluster that has it, unless RAY_AUTH_MODE is set): printed at every start, a warning a user would learn
    to ignore; the platform wants it on."""

    def filter(self, record) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def _quiet_token_notice() -> None:
    import logging

    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _TokenNotice) for f in log.filters):
        log.addFilter(_TokenNotice())


def run_cpus(train_workers: int) -> int:
    """Logical CPUs of a private local instance for one run: the cores, for Ray Data's decode tasks,
    plus one for each Train worker, which holds its CPU for the whole run (with fewer, a worker group
    on 2 cores left the tasks none). More tasks than cores only took the CPU from the training step's
    threads: on 2 cores, an in-process epoch with 4 logical CPUs took about 1.2x as long."""
    return (os.cpu_count() or 2) + max(0, train_workers)


def start_ray(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
              dashboard: bool = False, log_to_driver: bool = True, object_store_memory: int | None = None) -> Any:
    """``ray.init`` for the platform: join ``address`` (a cluster), or start a private local instance
    on 127.0.0.1 (``num_cpus`` logical CPUs, default twice the cores). Returns Ray's context."""
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    _loopback_only(not address or _on_loopback(address))
    _quiet_token_notice()
    if address:
        _reachable(address)
        context = ray.init(address=address, log_to_driver=log_to_driver)
        pin_ray_data_actors_here()
        return context
    return ray.init("local", num_cpus=num_cpus or 2 * (os.cpu_count() or 2), num_gpus=num_gpus, include_dashboard=dashboard,
                    dashboard_host=LOCAL_HOST, log_to_driver=log_to_driver, object_store_memory=object_store_memory)

