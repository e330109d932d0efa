"""One identity rule everywhere: a run written under hash version 1 or 2 is the same run for training,
re-scoring and export; an edited config.json is refused by each of them."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from core.config import RunConfig
from core.errors import CheckpointError, ConfigError
from core.eval.rescore import evaluate_run
from core.runs.identity import config_hash, legacy_hash, run_name, run_names, same_run, v2_hash
from core.runs.rundir import RunDir
from core.train import finished_run, fit
from core.train.export import export_run

BASE = ["optim.epochs=2", "eval.probe_epochs=2", "data.train_limit=128", "optim.batch_size=64", "model.width=4",
        "eval.online_knn=false", "eval.few_shot_episodes=0"]
ADDED_SINCE_V1 = ("mean", "std", "object_store_mb")  # data fields version 1 did not have


def test_the_rule():
    cfg = RunConfig()
    assert same_run(config_hash(cfg), cfg) and same_run(v2_hash(cfg), cfg) and same_run(legacy_hash(cfg), cfg)
    assert not same_run("0123456789ab", cfg) and not same_run(None, cfg)
    assert run_names(cfg) == [run_name(cfg), f"supcon-{v2_hash(cfg)}", f"supcon-{legacy_hash(cfg)}"]
    assert legacy_hash(cfg.with_overrides(["data.mean=[0.4]"])) is None  # no version-1 run can hold it
    assert run_names(cfg.with_overrides(["data.mean=[0.4]"]))[2:] == []
    assert run_names(cfg.with_overrides(["name=mine"])) == ["mine"]
    # a knob SupCon does not read: one run now, two names under version 2 (both found)
    other = cfg.with_overrides(["loss.beta=0.5"])
    assert run_name(other) == run_name(cfg) and same_run(v2_hash(cfg), cfg) and not same_run(v2_hash(cfg), other)


OLD_HASHES = {1: legacy_hash, 2: v2_hash}


def _as_version(run_dir: Path, cfg: RunConfig, version: int) -> Path:
    """The run directory as hash version ``version`` wrote it: its old name, config.json and checkpoints."""
    old_hash = OLD_HASHES[version](cfg)
    old = run_dir.parent / f"{cfg.loss.name}-{old_hash}"
    if old != run_dir:
        shutil.move(run_dir, old)
    saved = json.loads((old / "config.json").read_text())
    for key in ADDED_SINCE_V1 if version == 1 else ():
        del saved["config"]["data"][key]
    (old / "config.json").write_text(json.dumps({**saved, "config_hash": old_hash}))
    for state_file in reversed(RunDir(old).state_files()):  # oldest first: the newest stays the newest
        state = torch.load(state_file, weights_only=True)
        torch.save({**state, "config_hash": old_hash}, state_file)
    return old


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_versions_run_through_every_entry_point(ray_session, tmp_path, capsys, version):
    cfg = RunConfig().with_overrides([*BASE, f"storage_path={tmp_path}"])
    first = fit(cfg, verbose=False)
    run = Path(first.run_dir)
    # killed after its first epoch: the checkpoint before the last, no summary, one metrics row
    (run / "latest_state.pt.previous").replace(run / "latest_state.pt")
    for name in ("summary.json", "evaluation.json"):
        (run / name).unlink()
    RunDir(run).truncate_metrics(1)
    old = _as_version(run, cfg, version)
    assert finished_run(cfg) is None  # found under its old name, unfinished

    resumed = fit(cfg, verbose=True)  # train resume: continues the old run, does not start a new one
    assert "resumed from epoch 0" in capsys.readouterr().out
    assert Path(resumed.run_dir) == old and not run.exists()
    assert resumed.metrics["resumed_from_epoch"] == 1 and resumed.metrics["status"] == "finished"
    assert resumed.metrics["loss"] == pytest.approx(first.metrics["loss"], rel=1e-6)  # the same training
    assert finished_run(cfg).run_dir == str(old)

    _as_version(old, cfg, version)  # written by the old version again (the resumed run recorded today's hash)
    rescored = evaluate_run(old, ["eval.knn_k=5"])  # core.eval
    assert rescored["run_status"] == "finished" and 0 <= rescored["knn_top1"] <= 100
    info = export_run(old, tmp_path / "exported")  # core.export
    assert info["epochs_trained"] == 2 and (tmp_path / "exported" / "backbone.pt").stat().st_size > 0
    if version == 1:  # version 1 hashed the evaluation too: its runs are found with their own protocol only
        return
    # re-scored through fit with another protocol: recorded once, then found finished as asked
    rescore_cfg = cfg.with_overrides(["eval.knn_k=7"])
    assert fit(rescore_cfg, verbose=False).run_dir == str(old)
    assert RunDir(old).finished_as_asked(rescore_cfg) is not None


def test_an_edited_config_is_refused_by_every_entry_point(ray_session, tmp_path):
    cfg = RunConfig().with_overrides([*BASE, "optim.epochs=1", f"storage_path={tmp_path}"])
    run = Path(fit(cfg, verbose=False).run_dir)
    saved = json.loads((run / "config.json").read_text())
    saved["config"]["optim"]["lr"] = 0.5  # the weights were not trained with this
    (run / "config.json").write_text(json.dumps(saved))
    for entry in (lambda: evaluate_run(run), lambda: export_run(run, tmp_path / "x")):
        with pytest.raises(CheckpointError, match="was edited after the run"):
            entry()
    with pytest.raises(ConfigError, match="holds another config"):
        fit(cfg.with_overrides(["optim.lr=0.5", f"name={run.name}"]), verbose=False)


def test_the_runs_of_a_store_are_listed_with_how_to_rescore_them(tmp_path, capsys):
    from core.runs.__main__ import main as runs_main

    done = tmp_path / "supcon-aaa"
    done.mkdir()
    (done / "config.json").write_text(json.dumps({"config": {"loss": {"name": "supcon"}, "optim": {"epochs": 2}}}))
    (done / "metrics.jsonl").write_text('{"epoch": 0}\n{"epoch": 1}\n')
    (done / "summary.json").write_text(json.dumps({"status": "finished", "knn_top1": 91.5, "probe_top1": 93.25}))
    half = tmp_path / "varcon-bbb"
    half.mkdir()
    (half / "config.json").write_text(json.dumps({"config": {"loss": {"name": "varcon"}, "optim": {"epochs": 5}}}))
    (half / "metrics.jsonl").write_text('{"epoch": 0}\n')
    (tmp_path / "not-a-run").mkdir()
    assert runs_main(["list", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"supcon-aaa\s+supcon\s+finished\s+2/2\s+91.50\s+93.25", out), out
    assert re.search(r"varcon-bbb\s+varcon\s+unfinished\s+1/5", out) and "not-a-run" not in out
    assert f"python -m core.eval {tmp_path}/supcon-aaa eval.knn_k=20" in out
    assert runs_main(["list", str(tmp_path / "not-a-run")]) == 2
    assert "no runs there" in capsys.readouterr().err
