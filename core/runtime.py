"""The one place that starts or joins Ray.

A local instance is private to this machine: every Ray service (GCS, raylet, workers, agents,
dashboard) listens on 127.0.0.1, and its logical CPUs are oversubscribed 2x (Train workers holding
every core must never leave Ray Data's decode tasks or a study's trial drivers waiting for a CPU slot
forever). Only ``address=`` joins a cluster, and only a cluster uses the network.
"""

from __future__ import annotations

import os
from typing import Any

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


def start_ray(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
              dashboard: bool = False, log_to_driver: bool = True, object_store_memory: int | None = None) -> Any:
    """``ray.init`` for the platform: join ``address`` (a cluster), or start a private local instance
    on 127.0.0.1 (``num_cpus`` logical CPUs, default twice the cores). Returns Ray's context."""
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    _loopback_only(not address)
    if address:
        return ray.init(address=address, log_to_driver=log_to_driver)
    return ray.init("local", num_cpus=num_cpus or 2 * (os.cpu_count() or 2), num_gpus=num_gpus, include_dashboard=dashboard,
                    dashboard_host=LOCAL_HOST, log_to_driver=log_to_driver, object_store_memory=object_store_memory)
