"""The cluster flow on one machine: Ray's autoscaler on the local cluster made from cluster.yaml, its worker
nodes sharing no disk with the driver (in its own process, see ``cluster_scenarios.py``), and a Train worker
killed mid-run."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.config import RunConfig
from core.runs.identity import run_name
from core.train import fit

REPO = Path(__file__).resolve().parents[1]


SCENARIO_TIMEOUT_S = 840
pytestmark = pytest.mark.timeout(SCENARIO_TIMEOUT_S + 300)  # the fixture's run counts to its first test


@pytest.fixture(scope="module")
def cluster_facts(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("cluster")
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "cluster_scenarios.py"), str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=SCENARIO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the scenario takes its cluster down on SIGTERM (a SIGKILL would leave it running)
        stdout, stderr = proc.communicate(timeout=120)
    facts_file = out / "facts.json"
    assert facts_file.exists(), stdout[-3000:] + stderr[-3000:]
    facts = json.loads(facts_file.read_text())
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return facts


def test_workers_scale_from_zero_on_the_one_gpu_type(cluster_facts):
    assert cluster_facts["workers_at_start"] == 0  # the head only (CPU 0), as after `ray up`
    assert cluster_facts["scale_up_s"] is not None and cluster_facts["scale_up_s"] < 120
    # 1-GPU trials and workers (--accelerator-type A10G) only ever brought up gpu_1x_a10g (and Ray Data's
    # tasks cpu_decode), never gpu_8x_a100
    assert cluster_facts["node_gpus_seen"] == [0.0, 1.0]
    assert cluster_facts["max_workers_seen"] <= 4  # at most 2 of each type: the cap of the local cluster


def test_study_job_finishes_every_trial_through_a_preemption(cluster_facts):
    assert cluster_facts["job_rc"] == 0, cluster_facts["job_tail"]
    study, epochs = cluster_facts["study"], cluster_facts["study"]["epochs_logged"]
    rows = {r["config_hash"]: r for r in study["table"]}
    assert len(rows) == 4 and all(r["status"] == "finished" for r in rows.values())
    assert all(r["node_id"] != "fffffffffffffffffffffffffffffffffffffffffffffffffff00000" for r in rows.values())
    preempted = study["preempted"]
    assert preempted and preempted["finished"], "no node was preempted mid-trial"
    # the preempted trial resumed from its last epoch checkpoint: at most one epoch trained twice
    assert rows[preempted["run"].split("-")[-1]]["resumed_from_epoch"] >= 1
    assert sorted(set(epochs[preempted["run"]])) == [0, 1, 2, 3] and len(epochs[preempted["run"]]) <= 4 + 1
    for run, before in preempted["finished"].items():  # finished before the preemption: not rerun
        assert rows[run.split("-")[-1]]["probe_top1"] == pytest.approx(before["probe_top1"])
        assert len(epochs[run]) == before["lines"] == 4


def test_a_successful_study_job_logs_no_traceback_and_no_warning_of_ours(cluster_facts):
    # Ray's own exit noise is not ours: a trial process that Tune ends gets SIGTERM, and when Ray's sigterm_handler
    # raises SystemExit inside a weakref callback Python prints "Exception ignored in" with its traceback (seen once)
    noise = [n for n in cluster_facts["job_noise"] if not ("Exception ignored in" in n and "sigterm_handler" in n)]
    tracebacks = [n for n in noise if "Traceback" in n]
    # one traceback is the event itself: Tune reports the trial whose node was preempted (and retries it);
    # nothing else (a trial process ended at the study's end printed one from sigterm_handler)
    assert len(tracebacks) == 1 and "Trial task failed for trial" in tracebacks[0], tracebacks
    others = [n for n in noise if "Traceback" not in n]
    # the one warning is Ray's CLI saying, once, that it leaves .git out of the uploaded working dir
    assert all("'.git' is now ignored by default when packaging the working directory" in n for n in others), others


def test_worker_nodes_share_no_disk_with_the_driver(cluster_facts):
    seen = cluster_facts["worker_sees"]
    assert seen["node"] != "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"  # a worker node, not the head
    # the study's results directory, the scenario's files and the cluster's state are not there; the real
    # home's cache is an empty mount; the node's $HOME is its own
    assert seen["results_dir"] is None and seen["out_dir"] is None and seen["state_dir"] is None, seen
    assert seen["real_home_cache"] == [] and seen["home"] == "/tmp/home", seen


def test_drivers_refuse_local_paths_before_any_trial(cluster_facts):
    refused = cluster_facts["refusals"]
    for case, path in (("data_root", "data.root="), ("storage", "--storage="), ("shards", "SRC=")):
        line = refused[case]["stderr"][0]
        assert refused[case]["rc"] == 2 and line.startswith("error: ") and path in line, (case, refused[case])
        assert "a local path, but this Ray cluster has nodes that do not see this machine's disk" in line
        assert "s3://" in line and "CONTRASTIVE_SHARED_PATHS" in line
    assert not any(r["trials_started"] for r in refused.values())


def test_the_cluster_study_gives_the_numbers_of_one_local_instance(cluster_facts):
    assert cluster_facts["local_study"]["rc"] == 0, cluster_facts["local_study"]["tail"]
    cluster, local = cluster_facts["numbers"]["cluster"], cluster_facts["numbers"]["local"]
    assert sorted(cluster) == sorted(local) and len(cluster) == 4
    for run, values in cluster.items():  # the preempted and resumed trial too
        assert values == local[run], (run, {k: (v, local[run].get(k)) for k, v in values.items() if v != local[run].get(k)})


def test_finished_runs_read_back_from_storage_once_the_workers_are_gone(cluster_facts):
    back = cluster_facts["read_back"]
    assert back["eval"]["rc"] == 0, back["eval"]["tail"]
    assert back["export"]["rc"] == 0 and "encoder.pt2" in back["exported"], back["export"]["tail"]


def test_train_workers_on_gpu_nodes_split_the_data_decoded_on_cpu_nodes(cluster_facts):
    trainer = cluster_facts["trainer"]
    assert trainer["status"] == "finished" and trainer["epoch"] == 0
    assert len(set(trainer["worker_nodes"])) == 2  # one worker per node (STRICT_SPREAD)
    assert trainer["samples_per_rank"] == [256, 256] and trainer["shard_overlap"] == 0  # 512 split, none twice
    assert trainer["probe_top1"] > 50  # 4 classes of photos
    tasks = trainer["data_tasks"]  # read + decode + crop of the training views, decode of the evaluation splits
    assert "MapBatches(read_files)->MapBatches(decode_view_batch)" in tasks, tasks
    assert {kind for kinds in tasks.values() for kind in kinds} == {"cpu"}, tasks


def test_nodes_return_to_zero_and_down_leaves_no_process(cluster_facts):
    assert cluster_facts["scale_down_s"] is not None, cluster_facts.get("busy_at_end")
    assert cluster_facts["scale_down_s"] < cluster_facts["idle_timeout_s"] + 60
    assert cluster_facts["ended"] > 0 and cluster_facts["left"] == []


def test_a_one_machine_cluster_listens_on_loopback_only(cluster_facts):
    """Its GCS, raylets and agents bound to every interface, and Ray's metrics port answered anyone."""
    listening = cluster_facts["listening"]
    assert listening, "found no listener of the cluster to check"
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for _, ip in listening), listening


def test_a_second_cluster_on_the_same_ports_is_refused_and_touches_nothing(cluster_facts):
    second = cluster_facts["second_up"]
    assert second["rc"] == 2 and not second["traceback"] and second["first_kept"], second
    assert "already in use on this machine" in second["stderr"][0], second


def test_killed_train_worker_restarts_from_checkpoint(ray_session, tmp_path):
    cfg = RunConfig().with_overrides(["num_workers=2", "optim.epochs=4", "data.train_limit=1024", "optim.batch_size=64",
                                      "model.width=8", "eval.probe_epochs=5", "eval.online_knn=false",
                                      f"storage_path={tmp_path}"])
    log = tmp_path / run_name(cfg) / "metrics.jsonl"
    killed: dict = {}

    def kill_rank1_after_second_epoch() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            # epoch 1 logged: every rank has passed epoch 0's report, so its checkpoint is stored; and Ray
            # Train's controller has registered one (its snapshot file): a kill before that resumes from none
            if log.exists() and len(log.read_text().splitlines()) >= 2 \
                    and (log.parent / "checkpoint_manager_snapshot.json").exists():
                first = json.loads(log.read_text().splitlines()[0])
                killed["pids"] = first["worker_pids"]
                os.kill(int(first["worker_pids"][1]), signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_rank1_after_second_epoch, daemon=True)
    killer.start()
    result = fit(cfg, verbose=False, max_failures=1)
    killer.join(timeout=5)
    assert killed, "the worker was never killed"
    assert result.status == "finished" and result.metrics["epoch"] == 3
    assert result.metrics["worker_pids"] != killed["pids"]  # a new worker group finished the run
    assert result.metrics["resumed_from_epoch"] >= 1  # from the checkpoint, not from scratch
    epochs = [json.loads(line)["epoch"] for line in log.read_text().splitlines()]
    assert sorted(set(epochs)) == list(range(4))
    assert result.metrics["probe_top1"] > 40
