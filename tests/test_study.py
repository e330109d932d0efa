"""Tiny versions of the main study, end to end, and the resume path."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["--losses", "supcon", "cross_entropy", "--policies", "simaugment", "--strengths", "1.0",
        "--seeds", "0", "1", "--epochs", "1", "eval.probe_epochs=5", "data.train_limit=512", "optim.batch_size=128"]


def _study(tmp_path, *extra):
    sys.path.insert(0, str(REPO / "studies"))
    try:
        import augmentation_robustness as study
    finally:
        sys.path.pop(0)
    return study.main_for(study.make_study, "test", [*TINY, "--results-dir", str(tmp_path), *extra],
                          extra_args=study.extra_args)


def test_tiny_study_end_to_end(ray_session, tmp_path):
    assert _study(tmp_path) == 0
    df = pd.read_parquet(tmp_path / "trials.parquet")
    assert len(df) == 4 and (df["status"] == "finished").all()
    for col in ("cfg.loss.name", "cfg.augment.strength", "cfg.seed", "config_hash", "probe_top1", "corruption_acc",
                "mce", "fewlabel_1_acc", "trial_seconds", "world_size", "effective_lr"):
        assert col in df, col
    report = (tmp_path / "report.md").read_text()
    # the report's numbers are the table's
    for loss, g in df.groupby("cfg.loss.name"):
        row = re.search(rf"^\| {loss} \| 2 \| ([\d.]+) ± [\d.]+ \| ([\d.]+)", report, re.M)
        assert row, report
        assert float(row.group(1)) == pytest.approx(g["probe_top1"].mean(), abs=0.006)
        assert float(row.group(2)) == pytest.approx(g["corruption_acc"].mean(), abs=0.006)
    assert report.count("Claim:") == 4 and "Study wall time" in report
    for png in ("probe_top1_vs_strength.png", "accuracy_vs_severity.png"):
        assert (tmp_path / png).stat().st_size > 5000
    # the same results dir without --resume is refused, not silently overwritten
    with pytest.raises(SystemExit, match="--resume"):
        _study(tmp_path)


def test_bad_grid_fails_before_ray(tmp_path, capsys):
    assert _study(tmp_path, "loss.temperature=-1") == 2
    assert "loss.temperature must be > 0" in capsys.readouterr().err


def test_killed_driver_resumes_without_rerunning(tmp_path):
    cmd = [sys.executable, "studies/augmentation_robustness.py", *TINY, "--results-dir", str(tmp_path),
           "--max-concurrent", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and not list((tmp_path / "runs").glob("*/summary.json")):
        assert proc.poll() is None
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.parent: p.parent.joinpath("metrics.jsonl").read_text() for p in (tmp_path / "runs").glob("*/summary.json")}
    assert 1 <= len(done) < 4
    out = subprocess.run([*cmd, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "trials.parquet")
    assert len(df) == 4 and (df["status"] == "finished").all()
    for run_dir, metrics in done.items():  # completed runs were not trained again
        assert run_dir.joinpath("metrics.jsonl").read_text() == metrics
