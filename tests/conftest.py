"""One Ray instance for the whole test session, shut down at the end (no leaked processes).

Logical CPUs are oversubscribed (4 on a 2-core machine) so a Train worker group and Ray Data
tasks can never wait on each other for a CPU slot.
"""

import os

import pytest

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from core.runtime import start_ray

    start_ray(num_cpus=4, log_to_driver=False, object_store_memory=512 * 1024 * 1024)
    yield ray
    ray.shutdown()


# A config names its loss family, source, backbone, augmentation policy and corruption suite; the
# modules that implement them register them when imported (core/registry.py). Every entry point imports
# them; so does the test session, whichever test module runs first.
import core.data.augment  # noqa: E402, F401
import core.data.sources  # noqa: E402, F401
import core.eval.corrupted  # noqa: E402, F401
import core.losses  # noqa: E402, F401
import core.models  # noqa: E402, F401
