"""Re-scoring a saved run: only the run's own weights, scored with the run's own config, never while it trains."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import RunConfig
from core.data.sources import load_source
from core.errors import CheckpointError, ConfigError, LockedError
from core.eval.rescore import evaluate_run
from core.io import DirectoryLock
from core.train import fit

REPO = Path(__file__).resolve().parents[2]
SMALL = ["optim.epochs=2", "eval.probe_epochs=3", "data.train_limit=256", "model.width=8", "eval.online_knn=false"]


@pytest.fixture(scope="module")
def runs(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    digits = load_source(RunConfig().data)
    a = fit(RunConfig().with_overrides([f"storage_path={root}", *SMALL]), digits, verbose=False)
    b = fit(RunConfig().with_overrides([f"storage_path={root}", *SMALL, "loss.temperature=0.2"]), digits, verbose=False)
    return Path(a.run_dir), Path(b.run_dir)


def test_another_runs_checkpoint_is_refused_naming_both(runs, tmp_path):
    a, b = runs
    mixed = tmp_path / "mixed"
    shutil.copytree(a, mixed)
    shutil.copy(b / "latest_state.pt", mixed / "latest_state.pt")
    (mixed / "latest_state.pt.previous").unlink()
    hash_a, hash_b = a.name.split("-")[-1], b.name.split("-")[-1]
    with pytest.raises(CheckpointError, match=f"belongs to config {hash_b}, the run directory to {hash_a}"):
        evaluate_run(mixed)


def test_an_edited_config_is_refused(runs, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(runs[0], edited)
    saved = json.loads((edited / "config.json").read_text())
    saved["config"]["data"]["image_size"] = 24
    (edited / "config.json").write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match="was edited after the run"):
        evaluate_run(edited)
    (edited / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        evaluate_run(edited)


def test_a_run_that_is_training_is_refused_and_an_unfinished_one_said_so(runs, tmp_path):
    with DirectoryLock(runs[0], "run directory"), pytest.raises(LockedError, match="being written by another"):
        evaluate_run(runs[0])
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs[0], unfinished)
    (unfinished / "latest_state.pt").unlink()  # the epoch-0 checkpoint is left: a run killed after its first epoch
    summary = (unfinished / "summary.json").read_text()
    with pytest.warns(UserWarning, match="is unfinished: scored its checkpoint of epoch 1 of 2"):
        m = evaluate_run(unfinished)
    assert m["eval_epoch"] == 0 and m["run_status"] == "unfinished (epoch 1 of 2)"
    assert (unfinished / "summary.json").read_text() == summary  # the run's own summary is not overwritten
    assert json.loads((unfinished / "evaluation.json").read_text())["run_status"].startswith("unfinished")


def test_command_line_errors_are_one_line(runs):
    for args, message in (([str(runs[0]), "--device", "cuda"], "torch sees no CUDA device"),
                          ([str(runs[0]), "optim.lr=1"], "only eval.* fields"),
                          (["/nonexistent/run"], "not a run directory")):
        out = subprocess.run([sys.executable, "-m", "core.eval", *args], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr[-800:]


def test_only_eval_overrides(runs):
    with pytest.raises(ConfigError, match="only eval"):
        evaluate_run(runs[0], ["optim.lr=1"])
