"""cluster.yaml, validated offline against the autoscaler schema that ships in the ray package."""

import copy
from pathlib import Path

import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def _validate(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))  # merges the provider defaults, as `ray up` does
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_ray_schema(cluster):
    prepared = _validate(cluster)
    assert prepared["provider"]["type"] == "aws"


def test_schema_check_can_fail(cluster):
    from jsonschema.exceptions import ValidationError

    bad = copy.deepcopy(cluster)
    bad["available_node_types"]["gpu_1x_a10g"]["min_worker"] = 1  # typo of min_workers
    with pytest.raises(ValidationError, match="min_worker"):
        _validate(bad)


def test_cpu_head_and_gpu_workers_scale_from_zero(cluster):
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # no trials or Train workers on the head
    gpu_types = {k: v for k, v in types.items() if k != cluster["head_node_type"]}
    assert gpu_types and all(v["min_workers"] == 0 for v in gpu_types.values())
    assert all(v["node_config"]["InstanceType"].startswith(("g5", "g6", "p4", "p5")) for v in gpu_types.values())
    assert sum(v["max_workers"] for v in gpu_types.values()) >= cluster["max_workers"]


def test_dashboard_not_exposed(cluster):
    start = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start
    rules = cluster["provider"]["security_group"]["IpPermissions"]
    assert [(r["FromPort"], r["ToPort"]) for r in rules] == [(22, 22)]


def test_nodes_install_the_project_as_the_readme_does(cluster):
    readme = (CLUSTER_YAML.parent / "README.md").read_text()
    assert "pip install -e ." in readme
    setup = " ".join(cluster["setup_commands"])
    assert "python3 -m venv .venv" in setup and "pip install -q -e ." in setup
    assert cluster["file_mounts"] == {"~/contrastive-platform": "."}


def test_every_node_installs_the_ray_version_of_this_client(cluster):
    import re

    import ray

    setup = " ".join(cluster["setup_commands"])
    pins = re.findall(r'"ray\[default\]==([^"]+)"', setup)
    assert pins == [ray.__version__], f"cluster.yaml pins Ray {pins}, this client runs {ray.__version__}"
