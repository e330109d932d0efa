"""Multi-node placement and fault tolerance: a real two-node cluster on loopback (in its own
process, see ``cluster_scenarios.py``) and a Train worker killed mid-run."""

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
from core.train import fit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_node_facts(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("cluster")
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "cluster_scenarios.py"), str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    facts_file = out / "facts.json"
    assert facts_file.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    facts = json.loads(facts_file.read_text())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return facts


def test_train_workers_on_different_nodes_split_the_data(two_node_facts):
    nodes, trainer = two_node_facts["nodes"], two_node_facts["trainer"]
    assert len(nodes) == 2
    assert trainer["status"] == "finished" and trainer["epoch"] == 1
    assert sorted(trainer["worker_nodes"]) == sorted(nodes)  # one worker per node
    per_rank = trainer["samples_per_rank"]
    assert per_rank == [256, 256] and trainer["shard_overlap"] == 0  # 512 images split, none seen twice
    assert trainer["probe_top1"] > 40


def test_study_uses_both_nodes_and_survives_losing_one(two_node_facts):
    study = two_node_facts["study"]
    assert study["rc"] == 0 and study["removed"] and study["report_has_table"]
    rows = {r["config_hash"]: r for r in study["table"]}
    assert len(rows) == 6 and all(r["status"] == "finished" for r in rows.values())
    assert {r["node_id"] for r in rows.values()} == set(two_node_facts["nodes"])  # trials placed on both
    # what had finished before the node went is in the table unchanged (not rerun, not lost)
    before = study["completed_before_removal"]
    assert before
    for run_name, probe in before.items():
        assert rows[run_name.split("-")[-1]]["probe_top1"] == pytest.approx(probe)


def test_killed_train_worker_restarts_from_checkpoint(ray_session, tmp_path):
    cfg = RunConfig().with_overrides(["num_workers=2", "optim.epochs=6", "data.train_limit=1024", "optim.batch_size=64",
                                      "model.width=8", "eval.probe_epochs=5", "eval.online_knn=false",
                                      f"storage_path={tmp_path}"])
    log = tmp_path / cfg.run_name / "metrics.jsonl"
    killed: dict = {}

    def kill_rank1_after_second_epoch() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            # epoch 1 logged: every rank has passed epoch 0's report, so its checkpoint is stored
            if log.exists() and len(log.read_text().splitlines()) >= 2:
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
    assert result.status == "finished" and result.metrics["epoch"] == 5
    assert result.metrics["worker_pids"] != killed["pids"]  # a new worker group finished the run
    assert result.metrics["resumed_from_epoch"] >= 1  # from the checkpoint, not from scratch
    epochs = [json.loads(line)["epoch"] for line in log.read_text().splitlines()]
    assert sorted(set(epochs)) == list(range(6))
    assert result.metrics["probe_top1"] > 40
