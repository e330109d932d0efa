"""cluster.yaml, validated offline against the autoscaler schema that ships in the ray package."""

import copy
import sys
from pathlib import Path

import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


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
    workers = {k: v for k, v in types.items() if k != cluster["head_node_type"]}
    assert workers and all(v["min_workers"] == 0 for v in workers.values())
    gpu_types = {k: v for k, v in workers.items()
                 if v["node_config"]["InstanceType"].startswith(("g5", "g6", "p4", "p5"))}
    assert set(workers) - set(gpu_types) == {"cpu_decode"}  # the only CPU-only type: Ray Data's decode tasks
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


def test_local_cluster_keeps_cluster_yaml_node_types(cluster):
    from ray.autoscaler._private.util import validate_config

    from core.tools.cluster import HEAD_TYPE, LOCAL_GPU, local_config

    local = local_config(cluster, "127.0.0.1:26379", "/tmp/nodes", cores=2, max_workers=2)
    validate_config(local)  # the autoscaler's own schema
    types = local["available_node_types"]
    assert set(types) == {HEAD_TYPE, "gpu_1x_a10g", "gpu_8x_a100", "cpu_decode"}  # the cloud's worker type names
    assert types["cpu_decode"]["resources"] == {"CPU": 2, "object_store_memory": 256 << 20}  # no GPU
    assert types[HEAD_TYPE]["resources"] == {"CPU": 0}  # trials never on the head, as on the cloud
    small, big = types["gpu_1x_a10g"], types["gpu_8x_a100"]
    assert small["resources"][LOCAL_GPU] == 1 and big["resources"][LOCAL_GPU] == 8  # GPU counts kept
    assert small["resources"]["GPU"] == 1  # declared too: the autoscaler keeps CPU-only work off GPU types
    assert small["resources"]["accelerator_type:A10G"] == 1 and big["resources"]["accelerator_type:A100"] == 1
    assert small["resources"]["CPU"] == 2 and big["resources"]["CPU"] == 2  # 4 and 96 vCPUs, capped at 2 cores
    assert (small["min_workers"], small["max_workers"], big["max_workers"]) == (0, 2, 2)  # 8 and 2, capped at 2
    assert local["idle_timeout_minutes"] == cluster["idle_timeout_minutes"]
    assert local["provider"]["gcs_address"] == "127.0.0.1:26379"  # without it, workers look on port 6379
    assert local_config(cluster, "h:1", "/tmp/n", 2, idle_timeout_minutes=0.25)["idle_timeout_minutes"] == 0.25


def test_local_cluster_refuses_an_unknown_instance_shape(cluster):
    from core.errors import ConfigError
    from core.tools.cluster import local_config

    odd = copy.deepcopy(cluster)
    odd["available_node_types"]["gpu_1x_a10g"]["node_config"]["InstanceType"] = "x9.huge"
    with pytest.raises(ConfigError, match="gpu_1x_a10g.*x9.huge.*declare resources"):
        local_config(odd, "h:1", "/tmp/n", 2)
    odd["available_node_types"]["gpu_1x_a10g"]["resources"] = {"CPU": 4, "GPU": 1}
    assert local_config(odd, "h:1", "/tmp/n", 2)["available_node_types"]["gpu_1x_a10g"]["resources"]["local_gpu"] == 1


def test_trial_resources_parse_and_refuse_builtin_names():
    import argparse

    from core.study.cli import resource_amount

    assert resource_amount("local_gpu=1") == ("local_gpu", 1.0)
    for bad in ("local_gpu", "CPU=2", "x=0", "x=abc", "=1"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=AMOUNT"):
            resource_amount(bad)


def test_local_cluster_commands_explain_what_is_missing(tmp_path, capsys):
    from core.tools.cluster import main

    assert main(["local", "status", "--dir", str(tmp_path)]) == 2
    assert "no local cluster recorded in" in capsys.readouterr().err
    assert main(["local", "up", "--dir", str(tmp_path), "--cluster-yaml", str(tmp_path / "nope.yaml")]) == 2
    assert "no cluster config at" in capsys.readouterr().err


def test_local_provider_forgets_a_node_whose_raylet_died():
    """A reclaimed node leaves the provider's list (its other processes ended), so the autoscaler can
    replace it; a live node and the head stay."""
    import subprocess
    import sys
    import threading
    from types import SimpleNamespace

    from ray._private.services import ProcessInfo

    from core.tools.cluster import LocalNodeProvider

    def node(command: str) -> SimpleNamespace:
        raylet = subprocess.Popen([sys.executable, "-c", command])
        if command == "pass":
            raylet.wait()
        info = ProcessInfo(raylet, *[None] * (len(ProcessInfo._fields) - 1))
        fake = SimpleNamespace(all_processes={"raylet": [info]}, ended=False)
        fake.kill_all_processes = lambda **_: setattr(fake, "ended", True)
        return fake

    provider = object.__new__(LocalNodeProvider)  # no fake cluster to start: only the node list is used
    provider.lock = threading.RLock()
    dead, alive = node("pass"), node("import time; time.sleep(60)")
    provider._nodes = {"head": {"tags": {}}, "dead": {"tags": {}, "node": dead}, "alive": {"tags": {}, "node": alive}}
    try:
        assert provider.non_terminated_nodes({}) == ["head", "alive"]
        assert dead.ended and not alive.ended
    finally:
        alive.all_processes["raylet"][0].process.kill()
        alive.all_processes["raylet"][0].process.wait()


def test_the_readme_submits_what_up_prints():
    """One source for the Ray Job line: ``up``'s instructions and the README's cluster section."""
    from core.tools.cluster import LocalCluster, how_to_use, submit_command

    readme = (CLUSTER_YAML.parent / "README.md").read_text()
    assert submit_command() in readme and "--quick" in submit_command() and "--max-concurrent 2" in submit_command()
    printed = how_to_use(LocalCluster("d", "t", "127.0.0.1:1", "http://127.0.0.1:2", ()))
    assert submit_command() in printed


def test_an_isolated_node_runs_in_its_own_mount_namespace():
    from core.tools.cluster import NODE_TEMP, isolated_command, isolation

    settings = isolation(["results", "/data/private"])
    assert str(Path.home() / ".cache") in settings["hide"] and str(Path("results").absolute()) in settings["hide"]
    cmd = isolated_command(settings, ["python", "-m", "ray.scripts.scripts", "start", "--block"])
    assert cmd[:4] == ["unshare", "--mount", "--propagation", "private"]
    script = cmd[-1]
    assert "mount -t tmpfs -o mode=1777 tmpfs /tmp" in script and "export HOME=/tmp/home" in script
    assert "/data/private" in script and f"mkdir -p /tmp/home {NODE_TEMP}" in script
    assert script.endswith("exec python -m ray.scripts.scripts start --block")


def test_isolation_says_in_one_line_when_mount_namespaces_are_missing(monkeypatch):
    from core.errors import ResourceError
    from core.tools.cluster import check_isolation

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ResourceError, match=r"--isolated needs Linux mount namespaces \(unshare -m, as root\); "
                                            r"here it failed: unshare not found"):
        check_isolation()


def test_isolation_refuses_an_environment_under_tmp_which_nodes_get_empty(monkeypatch):
    from core.errors import ResourceError
    from core.tools.cluster import check_isolation

    monkeypatch.setattr(sys, "prefix", "/tmp/ci/.venv")
    with pytest.raises(ResourceError, match=r"empty /tmp, so the Python environment at /tmp/ci/.venv would not be "
                                            r"there; clone and install the platform outside /tmp"):
        check_isolation()


def test_isolated_submit_line_keeps_the_study_in_the_bucket():
    from core.tools.cluster import submit_command

    assert "--storage s3://cluster/augmentation_robustness" in submit_command(isolated=True)
    assert submit_command(isolated=True) in (CLUSTER_YAML.parent / "README.md").read_text()
