"""Tiny versions of the main study, end to end, and the resume path."""

import argparse
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from core.config import RunConfig
from core.runs.identity import run_name
from core.study import StudyOptions

REPO = Path(__file__).resolve().parents[2]
TINY = ["--losses", "supcon", "cross_entropy", "--policies", "simaugment", "--strengths", "1.0",
        "--seeds", "0", "1", "--epochs", "1", "eval.probe_epochs=5", "data.train_limit=512", "optim.batch_size=128"]


def _load(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "studies" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name: str, argv: list[str]) -> int:
    study = _load(name)
    return study.main_for(study.make_study, "test", argv, extra_args=study.extra_args)


def _study(tmp_path, *extra):
    return _run("augmentation_robustness", [*TINY, "--results-dir", str(tmp_path), *extra])


def test_tiny_study_end_to_end(ray_session, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert _study(tmp_path, "--logger", "tensorboard", "--logger", "mlflow", "--logger", "wandb") == 0
    assert f"TensorBoard: tensorboard --logdir {tmp_path}/tune" in capsys.readouterr().out
    df = pd.read_parquet(tmp_path / "trials.parquet")
    _check_trackers(tmp_path, trials=len(df))
    assert len(df) == 4 and (df["status"] == "finished").all()
    for col in ("cfg.loss.name", "cfg.augment.strength", "cfg.seed", "config_hash", "probe_top1", "corruption_acc",
                "corruption_error", "fewlabel_1_acc", "trial_seconds", "world_size", "effective_lr", "fewshot_5w1s_acc",
                "unc_auroc_centroid", "cluster_ari", "alignment", "uniformity", "node_id"):
        assert col in df, col
    report = (tmp_path / "report.md").read_text()
    # the report's numbers are the table's
    for loss, g in df.groupby("cfg.loss.name"):
        row = re.search(rf"^\| {loss} \| 2 \| ([\d.]+) ± [\d.]+ \| ([\d.]+)", report, re.M)
        assert row, report
        assert float(row.group(1)) == pytest.approx(g["probe_top1"].mean(), abs=0.006)
        assert float(row.group(2)) == pytest.approx(g["corruption_acc"].mean(), abs=0.006)
    assert report.count("Claim:") == 5 and "Study wall time" in report  # the five claims against cross-entropy
    assert "## Data and evaluation" in report and "Clean linear-probe accuracy" in report  # prose from the data
    assert "## Corruption error normalised by cross-entropy" in report
    assert re.search(r"^\| cross_entropy \| 100 \| 100 \| 15 \|$", report, re.M), report  # all 15 ImageNet-C types
    for png in ("probe_top1_vs_strength.png", "accuracy_vs_severity.png", "feature_spectrum.png"):
        assert (tmp_path / png).stat().st_size > 5000
    # the same results dir without --resume is refused, not silently overwritten
    capsys.readouterr()
    assert _study(tmp_path) == 2 and "--resume" in capsys.readouterr().err
    # --resume with flags that change the study is refused, listing the difference
    assert _study(tmp_path, "--resume", "--epochs", "3", "--losses", "cross_entropy") == 2
    assert re.search(r"(?s)flags that change the study.*base\.optim\.epochs: 1 -> 3.*grid", capsys.readouterr().err)
    # a second study in the same results directory at once is refused (the first holds its lock)
    from core.io import DirectoryLock

    with DirectoryLock(tmp_path, "results directory"):
        assert _study(tmp_path, "--resume") == 2


def _check_trackers(results: Path, trials: int) -> None:
    """Every tracker the study was asked for holds every trial's metrics."""
    import mlflow

    assert len(list((results / "tune").glob("*/events.out.tfevents.*"))) == trials  # TensorBoard, one path
    mlflow.set_tracking_uri((results / "mlruns").as_uri())  # the study allowed MLflow's file store
    runs = mlflow.search_runs(experiment_names=["augmentation_robustness"])
    assert len(runs) == trials and runs["metrics.probe_top1"].notna().all()
    assert len(list((results / "wandb").glob("offline-run-*"))) == trials


def test_bad_grid_fails_before_ray(tmp_path, capsys):
    assert _study(tmp_path, "loss.temperature=-1") == 2
    assert "loss.temperature must be > 0" in capsys.readouterr().err


SMALL = ["--epochs", "1", "eval.probe_epochs=5", "data.train_limit=512", "eval.corruptions=[gaussian_noise]"]


def test_tiny_hyperparameter_and_kl_weight_studies(ray_session, tmp_path):
    assert _run("hyperparameter_stability", ["--temperatures", "0.1", "0.5", "--batch-sizes", "128",
                                             "--optimizers", "sgd", "--sgd-lrs", "0.05", "--seeds", "0", *SMALL,
                                             "--results-dir", str(tmp_path / "hp")]) == 0
    df = pd.read_parquet(tmp_path / "hp" / "trials.parquet")
    # cross-entropy is not swept over the temperature it ignores
    assert sorted(df["cfg.loss.name"]) == ["cross_entropy", "supcon", "supcon"]
    assert (tmp_path / "hp" / "accuracy_vs_temperature.png").exists()
    assert _run("kl_weight", ["--betas", "0", "0.01", "--kl-weights", "1.0", "--seeds", "0", *SMALL,
                              "--results-dir", str(tmp_path / "kl")]) == 0
    df = pd.read_parquet(tmp_path / "kl" / "trials.parquet")
    # betas 0 and 0.01, beta 1e-3 at variance_lr_mult 1 (the posterior comparison), VarCon at kl_weight 1
    assert (df["status"] == "finished").all() and len(df) == 4
    assert sorted(df["cfg.optim.variance_lr_mult"]) == [1.0, 100.0, 100.0, 100.0]
    vcl = df[df["cfg.loss.name"] == "vsupcon"]
    assert vcl["logvar_grad_norm"].gt(0).all() and vcl["logdet_spread"].notna().all()
    assert vcl["logdet_s0"].notna().all() and vcl["logdet_s5"].notna().all()
    assert vcl["unc_auroc_logdet"].between(0, 1).all() and vcl["unc_auroc_centroid"].between(0, 1).all()
    report = (tmp_path / "kl" / "report.md").read_text()
    assert "## Uncertainty: posterior log-det vs distance to the nearest class centroid" in report
    assert "## Posterior learning (VSupCon)" in report and "Holm" in report
    assert "### Log-det vs severity per corruption type" in report
    assert (tmp_path / "kl" / "error_detection_auroc_vs_beta.png").exists()
    assert df["effective_rank_embedding"].between(1, 128).all()


def test_ablation_runner(ray_session, tmp_path):
    from core.study.ablate import main as ablate

    spec = tmp_path / "spec.yaml"
    spec.write_text("name: tiny\nbase: {loss: {name: varcon}}\nseeds: [0, 1]\nmetrics: [probe_top1]\n"
                    "variants:\n  official: {}\n  no_kl: {loss.kl_weight: 0.0}\n")
    assert ablate([str(spec), "--results-dir", str(tmp_path / "out"), *SMALL]) == 0
    df = pd.read_parquet(tmp_path / "out" / "trials.parquet")
    assert sorted(df["variant"]) == ["no_kl", "no_kl", "official", "official"]
    assert set(df[df["variant"] == "no_kl"]["cfg.loss.kl_weight"]) == {0.0}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| variant |" in report and "no_kl vs official" in report
    bad = tmp_path / "bad.yaml"
    bad.write_text("variants: {only: {}}\n")
    assert ablate([str(bad)]) == 2


def test_shipped_ablation_specs_are_valid():

    from core.study.ablate import load_spec

    args = argparse.Namespace(epochs=None, overrides=[], seeds=None, config=[])
    for spec in sorted((REPO / "ablations").glob("*.yaml")):
        study = load_spec(spec, args)
        assert len(study.points()) >= 6, spec


def test_search_with_optuna_and_asha(ray_session, tmp_path):
    storage = tmp_path / "optuna.log"
    assert _run("search", ["--loss", "varcon", "--num-samples", "3", "--epochs", "3", "--grace-period", "1",
                           "--max-concurrent", "1", "--optuna-storage", str(storage), "eval.probe_epochs=5",
                           "data.train_limit=512", "--results-dir", str(tmp_path / "s")]) == 0
    df = pd.read_parquet(tmp_path / "s" / "trials.parquet")
    assert len(df) == 3 and set(df["status"]) <= {"finished", "stopped early"} and "finished" in set(df["status"])
    assert df["cfg.loss.temperature"].nunique() == 3  # Optuna proposed the points
    import optuna
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="search-varcon",
                              storage=optuna.storages.JournalStorage(JournalFileBackend(str(storage))))
    assert len(study.trials) == 3


def test_a_failing_trial_does_not_end_a_search(ray_session, tmp_path, capsys):
    """A search trial whose run fails (a batch larger than the training set) is recorded with its reason,
    under ASHA too, and the search goes on to its other trials instead of ending with Tune's metric check."""
    space = tmp_path / "space.yaml"
    space.write_text("optim.batch_size: {categorical: [1024]}\nloss.temperature: {float: [0.05, 0.5]}\n")
    out = tmp_path / "s"
    assert _run("search", ["--space", str(space), "--num-samples", "2", "--epochs", "2", "--grace-period", "1",
                           "--max-concurrent", "1", "data.train_limit=512", "--results-dir", str(out)]) == 1
    df = pd.read_parquet(out / "trials.parquet")
    assert len(df) == 2 and (df["status"] == "failed").all(), df
    assert df["error"].str.contains("fewer than optim.batch_size=1024").all(), df["error"]
    assert (out / "report.md").exists()


def test_multi_objective_search_writes_pareto_front(ray_session, tmp_path):
    assert _run("search", ["--loss", "supcon", "--objectives", "probe_top1", "knn_top1", "--num-samples", "2",
                           "--epochs", "1", "--max-concurrent", "1", "eval.probe_epochs=5", "data.train_limit=512",
                           "--results-dir", str(tmp_path)]) == 0
    df = pd.read_parquet(tmp_path / "trials.parquet")
    assert len(df) == 2 and (df["status"] == "finished").all()
    assert (tmp_path / "pareto_front.png").stat().st_size > 5000


def _printed_config(capsys, name: str, argv: list[str]) -> dict:
    import yaml

    assert _run(name, ["--print-config", *argv]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_study_config_layers_onto_study_defaults(tmp_path, capsys, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: (_ for _ in ()).throw(AssertionError("Ray started")))
    extra = tmp_path / "x.yaml"
    extra.write_text("optim: {epochs: 4, lr: 0.2}\nloss: {name: varcon}\n")
    cfg = _printed_config(capsys, "augmentation_robustness", ["--config", str(extra), "optim.lr=0.3", "--epochs", "6"])
    # the study's defaults survive the file; overrides beat the file; the study's --epochs beats both
    assert (cfg["eval"]["robustness"], cfg["model"]["width"], cfg["eval"]["probe_epochs"]) == (True, 24, 50)
    assert (cfg["optim"]["lr"], cfg["optim"]["epochs"]) == (0.3, 6)
    search = _printed_config(capsys, "search", ["--config", str(extra)])
    assert search["loss"]["name"] == "varcon"  # from the file: no silent supcon base
    assert _printed_config(capsys, "search", ["--config", str(extra), "--loss", "supcon"])["loss"]["name"] == "supcon"


def test_ablation_layers_config_onto_its_spec(tmp_path, capsys):
    import yaml

    from core.study.ablate import main as ablate

    extra = tmp_path / "x.yaml"
    extra.write_text("optim: {epochs: 3}\n")
    spec = REPO / "ablations" / "varcon_components.yaml"
    assert ablate([str(spec), "--print-config", "--config", str(extra)]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    spec_base = yaml.safe_load(spec.read_text())["base"]
    assert cfg["optim"]["epochs"] == 3 and cfg["loss"]["name"] == spec_base["loss"]["name"]


def test_machines_are_counted_by_host_not_by_ray_session():
    from core.study.report import machine_count

    resumed = pd.DataFrame({"node_id": ["a1", "b2", "b2"], "machine": ["laptop", "laptop", "laptop"]})
    assert machine_count(resumed) == 1  # two Ray sessions (a driver kill + --resume), one machine
    assert machine_count(pd.DataFrame({"node_id": ["a", "b"], "machine": ["h1", "h2"]})) == 2
    assert machine_count(pd.DataFrame({"node_id": ["a", "b"]})) == 2  # tables written before hostnames


def test_dashboard_flag_starts_rays_dashboard_on_loopback_only(monkeypatch, capsys):
    import ray

    from core.study.runner import start_study_ray

    calls = []

    class Context:
        dashboard_url = "127.0.0.1:8265"

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda *a, **k: calls.append(k) or Context())
    start_study_ray(StudyOptions(dashboard=True))
    assert calls[0]["include_dashboard"] is True and calls[0]["dashboard_host"] == "127.0.0.1"
    assert "Ray dashboard: http://127.0.0.1:8265" in capsys.readouterr().out
    start_study_ray(StudyOptions())
    assert calls[1]["include_dashboard"] is False


def test_tracker_needs_its_package(monkeypatch, tmp_path):
    import builtins

    from core.errors import ConfigError
    from core.study.loggers import logger_callbacks

    real_import = builtins.__import__

    def no_wandb(name, *a, **k):
        if name == "wandb":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[trackers\]'"):
        logger_callbacks(["wandb"], "s", tmp_path)


# -- no silent wrong results (issue 27) -------------------------------------------------------------

def _refused(capsys, argv: list[str], message: str) -> None:
    capsys.readouterr()
    assert _run("augmentation_robustness", argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err, err


def test_studies_refuse_settings_that_would_not_do_what_they_say(ray_session, tmp_path, capsys):
    tiny = [*TINY, "--results-dir", str(tmp_path / "s")]
    _refused(capsys, [*tiny, "--epochs", "0"], r"optim.epochs must be >= 1, got 0")
    _refused(capsys, [*tiny, "--seeds", "0", "0"], r"--seeds 0 0: a seed given twice")
    _refused(capsys, [*tiny, "--num-samples", "2"], r"--num-samples 2 repeats each grid point as the same run")
    _refused(capsys, [*tiny, "--losses", "supcon", "supcon"], r"listed twice")
    _refused(capsys, [*tiny, "name=shared"], r"name=shared would put every trial in one run directory")
    _refused(capsys, [*tiny, "--gpus-per-trial", "1"], r"can never offer .*GPU 0")
    _refused(capsys, [*tiny, "--cpus-per-trial", "100"], r"CPU': 100.0.* can never offer")
    _refused(capsys, [*tiny, "eval.corruption_root=/nonexistent"], r"eval.corruption_root='/nonexistent' lacks 75 of 75")
    assert not (tmp_path / "s" / "tune").exists()  # nothing ran


def test_resume_needs_the_record_of_what_ran(ray_session, tmp_path, capsys):
    (tmp_path / "tune").mkdir()
    _refused(capsys, [*TINY, "--results-dir", str(tmp_path), "--resume", "model.width=12"],
             r"study.json \(the record of what the study ran\) is missing")


def test_overwrite_never_deletes_another_studys_storage(ray_session, tmp_path, capsys):
    a, b = tmp_path / "A", tmp_path / "B"
    for d in ("tune", "runs"):
        (a / d).mkdir(parents=True)
        (a / d / "keep.txt").write_text("study A's")
    (a / "study.json").write_text("{}")
    _refused(capsys, [*TINY, "--results-dir", str(b), "--storage", str(a), "--overwrite"],
             r"storage .*A holds a study that no results directory recorded")
    from core.io import DirectoryLock

    with DirectoryLock(a, "results directory"):  # study A is running
        _refused(capsys, [*TINY, "--results-dir", str(b), "--storage", str(a), "--overwrite"],
                 r"being written by another process")
    (a / "study-owner.json").write_text(json.dumps({"results_dir": str(tmp_path / "C")}))
    _refused(capsys, [*TINY, "--results-dir", str(b), "--storage", str(a), "--overwrite"],
             r"storage .*A belongs to the study in .*C")
    assert (a / "tune" / "keep.txt").read_text() == "study A's" and (a / "runs" / "keep.txt").exists()


def test_overwrite_never_follows_a_symlink(ray_session, tmp_path, capsys):
    from core.errors import DataError
    from core.train import fit

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "important.txt").write_text("keep me")
    cfg = RunConfig().with_overrides([f"storage_path={tmp_path / 'runs'}", "optim.epochs=1", "data.train_limit=256"])
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / run_name(cfg)).symlink_to(precious)
    with pytest.raises(DataError, match="is a symbolic link"):
        fit(cfg, verbose=False, overwrite=True)
    (tmp_path / "results").symlink_to(precious)
    _refused(capsys, [*TINY, "--results-dir", str(tmp_path / "results"), "--overwrite"], r"is a symbolic link")
    assert (precious / "important.txt").read_text() == "keep me"


def test_search_objectives_are_checked_before_any_trial(tmp_path, capsys):
    assert _run("search", ["--objectives", "not_a_metric", "--results-dir", str(tmp_path)]) == 2
    assert "unknown metric 'not_a_metric'" in capsys.readouterr().err


def test_search_minimises_and_maximises_with_its_own_space_and_study(ray_session, tmp_path):
    """--objectives probe_top1:max corruption_error:min over a --space file: the Optuna study has one
    direction per objective and the Pareto front respects both; --overwrite deletes the Optuna study,
    so a second search does not inherit the first's trials."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {float: [0.01, 0.2], log: true}\nmodel.width: {int: [4, 8]}\n")
    storage = tmp_path / "optuna.log"
    common = ["--loss", "supcon", "--num-samples", "3", "--epochs", "1", "--max-concurrent", "1", "--space", str(space),
              "--optuna-storage", str(storage), "--study-name", "mine", "eval.probe_epochs=3", "data.train_limit=256",
              "eval.corruption_suite=fast", "eval.corruptions=[contrast]", "--results-dir", str(tmp_path / "s")]
    assert _run("search", [*common, "--objectives", "probe_top1:max", "corruption_error:min"]) == 0
    df = pd.read_parquet(tmp_path / "s" / "trials.parquet")
    assert len(df) == 3 and (df["status"] == "finished").all() and df["cfg.model.width"].between(4, 8).all()
    assert df["cfg.optim.lr"].between(0.01, 0.2).all() and df["cfg.optim.lr"].nunique() == 3
    study = optuna.load_study(study_name="mine", storage=optuna.storages.JournalStorage(JournalFileBackend(str(storage))))
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert (tmp_path / "s" / "pareto_front.png").stat().st_size > 5000


def test_search_space_files_are_checked_before_ray(tmp_path, capsys):
    for text, message in (("optim.lr: {float: [0.2, 0.01]}\n", r"the range \[0.2, 0.01\] is empty"),
                          ("optim.nope: {float: [0.1, 0.2]}\n", r"'optim.nope' is not a config field"),
                          ("optim.optimizer: {float: [0.1, 0.2]}\n", r"not searchable as float"),
                          ("loss.temperature: {float: [0.0, 0.2]}\n", r"loss.temperature=0.0: loss.temperature must be > 0"),
                          ("optim.lr: [0.1, 0.2]\n", r"must be one of")):
        space = tmp_path / "space.yaml"
        space.write_text(text)
        assert _run("search", ["--space", str(space), "--results-dir", str(tmp_path)]) == 2
        assert re.search(message, capsys.readouterr().err), text
    assert _run("search", ["--objectives", "loss", "--results-dir", str(tmp_path)]) == 2
    assert "no better side" in capsys.readouterr().err


def test_overwrite_deletes_the_optuna_study(ray_session, tmp_path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = tmp_path / "optuna.log"
    common = ["--loss", "supcon", "--num-samples", "2", "--epochs", "1", "--max-concurrent", "1",
              "--optuna-storage", str(storage), "eval.probe_epochs=2", "data.train_limit=256",
              "eval.corruption_suite=fast", "eval.corruptions=[contrast]", "--results-dir", str(tmp_path / "s"),
              "--objectives", "corruption_error"]
    assert _run("search", common) == 0
    assert _run("search", [*common, "--overwrite"]) == 0
    study = optuna.load_study(study_name="search-supcon",
                              storage=optuna.storages.JournalStorage(JournalFileBackend(str(storage))))
    assert len(study.trials) == 2 and study.direction == optuna.study.StudyDirection.MINIMIZE  # not 4: the old ones went
    df = pd.read_parquet(tmp_path / "s" / "trials.parquet")
    assert len(df) == 2 and df["corruption_error"].notna().all()


def test_shipped_search_spaces_are_valid():
    from core.study.space import SearchSpace

    for path in sorted((REPO / "studies" / "spaces").glob("*.yaml")):
        assert SearchSpace.from_yaml(path, RunConfig(), 0).dimensions, path


def test_trials_that_differ_only_in_evaluation_train_once(ray_session, tmp_path):
    from core.study.ablate import main as ablate

    spec = tmp_path / "spec.yaml"
    spec.write_text("name: eval_only\nseeds: [0]\nmetrics: [knn_top1]\nvariants:\n  k5: {eval.knn_k: 5}\n"
                    "  k50: {eval.knn_k: 50}\n  k200: {eval.knn_k: 200}\n")
    assert ablate([str(spec), "--results-dir", str(tmp_path / "out"), *SMALL]) == 0
    df = pd.read_parquet(tmp_path / "out" / "trials.parquet")
    assert (df["status"] == "finished").all() and df["config_hash"].nunique() == 1 and len(df) == 3
    assert df["loss"].nunique() == 1 and df["knn_top1"].nunique() > 1  # one training, three scorings
    assert len(list((tmp_path / "out" / "runs").iterdir())) == 1
    trained = df["trial_seconds"].max()
    assert (df["trial_seconds"] < trained).sum() == 2  # the re-scored trials took less than the one that trained


def test_points_sharing_a_training_are_spread_apart():
    from core.study import Grid, Study
    from core.study.runner import interleaved

    study = Study("s", "q", RunConfig(), Grid({"loss.name": ["supcon", "varcon"], "eval.knn_k": [5, 50]}), seeds=[0])
    order = [(p["loss.name"], p["eval.knn_k"]) for p in interleaved(study)]
    assert order == [("supcon", 5), ("varcon", 5), ("supcon", 50), ("varcon", 50)]  # the two trainings first
    plain = Study("s", "q", RunConfig(), Grid({"loss.name": ["supcon", "varcon"], "augment.strength": [0.3, 1.0]}))
    assert interleaved(plain) == plain.points()  # no shared training: the grid's own order


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_worker_group_trials_report_every_epoch_and_asha_stops_the_poor_ones(ray_session, tmp_path):
    """A trial that is a Train worker group (--workers-per-trial 1) reaches Tune every epoch, as in-process
    trials do: ASHA reads it and stops the poor trials, and Tune's own results hold one row per epoch."""
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {categorical: [0.00001, 0.3]}\n")
    out = tmp_path / "s"
    # with --seed 0, TPE proposes 0.3 then 1e-5: the second, worse at epoch 1, is stopped
    assert _run("search", ["--loss", "supcon", "--space", str(space), "--seed", "0", "--num-samples", "2",
                           "--epochs", "2", "--grace-period", "1", "--max-concurrent", "1", "--workers-per-trial", "1",
                           "eval.probe_epochs=5", "data.train_limit=512", "model.width=8",
                           "--results-dir", str(out)]) == 0
    df = pd.read_parquet(out / "trials.parquet")
    assert len(df) == 2 and set(df["status"]) == {"finished", "stopped early"}, df[["status", "cfg.optim.lr"]]
    assert "checkpoint_path" not in df.columns
    rows = {}
    for result in (out / "tune").glob("*/result.json"):
        reports = [json.loads(line) for line in result.read_text().splitlines()]
        epochs = [r["epoch"] for r in reports if "checkpoint_path" in r]  # the worker group's epoch reports
        assert epochs == list(range(len(epochs))), epochs  # every epoch, in order, once
        rows.setdefault(reports[-1]["status"], []).append(len(epochs))
    assert set(rows) == {"finished", "running"} and sum(map(len, rows.values())) == 2, rows
    assert set(rows["finished"]) == {2} and set(rows["running"]) == {1}, rows  # stopped ones end at their rung


# -- a study's records: what it ran, kept with its storage; the tuner state it loads on --resume (#49) -----------
def _dirs(tmp_path, results: str, storage: str):
    from core.study.studydir import StudyDirs

    (tmp_path / results).mkdir(parents=True, exist_ok=True)
    return StudyDirs(tmp_path / results, str(tmp_path / storage))


def _grid_study(losses):
    from core.study import Grid, Study

    return Study(name="s", question="q", base=RunConfig(), trials=Grid({"loss.name": losses}), seeds=[0, 1, 2])


def test_a_resume_from_another_results_directory_is_checked_against_the_storages_record(tmp_path):
    from core.errors import ConfigError
    from core.study.runner import _record_spec

    _record_spec(_grid_study(["supcon"]), StudyOptions(), _dirs(tmp_path, "first", "store"))
    assert (tmp_path / "store" / "study.json").exists() and (tmp_path / "first" / "study.json").exists()
    resume = StudyOptions(resume=True)
    with pytest.raises(ConfigError, match=r"--resume with flags that change the study recorded in .*store/study.json"):
        _record_spec(_grid_study(["varcon"]), resume, _dirs(tmp_path, "new", "store"))
    _record_spec(_grid_study(["supcon"]), resume, _dirs(tmp_path, "new2", "store"))  # the same study: fine


def test_a_resume_loads_only_the_tuner_state_this_study_wrote(tmp_path):
    from core.errors import ConfigError
    from core.study.runner import check_tuner_state, record_tuner_state

    dirs = _dirs(tmp_path, "results", "results")
    (tmp_path / "results" / "tune").mkdir()
    (tmp_path / "results" / "tune" / "tuner.pkl").write_bytes(b"the pickle Tune wrote")
    record_tuner_state(dirs)
    check_tuner_state(dirs)  # unchanged: loaded
    (tmp_path / "results" / "tune" / "tuner.pkl").write_bytes(b"cos\nsystem\n(S'touch pwned'\ntR.")
    with pytest.raises(ConfigError, match=r"--resume: refusing to load .*tune/tuner.pkl \(a pickle, run as code when "
                                          r"loaded\): its sha256"):
        check_tuner_state(dirs)
    (tmp_path / "results" / "tuner-state.json").unlink()
    with pytest.raises(ConfigError, match="no record of the file this study wrote"):
        check_tuner_state(dirs)


def test_results_are_named_by_their_data_and_overwrite_refuses_other_data(tmp_path):
    from core.errors import ConfigError
    from core.study.runner import _refuse_other_data, default_results_dir

    study = _grid_study(["supcon"])
    assert default_results_dir(study, StudyOptions()) == "results/s"
    assert default_results_dir(study, StudyOptions(config_files=("configs/cifar10_laptop.yaml",))) == \
        "results/s_cifar10_laptop"
    cifar = _grid_study(["supcon"])
    cifar.base = RunConfig().with_overrides(["data.source=cifar10", "data.root=/d", "data.image_size=32"])
    assert default_results_dir(cifar, StudyOptions()) == "results/s_cifar10"
    (tmp_path / "study.json").write_text(json.dumps({"base": RunConfig().to_dict()}))
    _refuse_other_data(tmp_path, study)  # the same data: --overwrite may delete it
    with pytest.raises(ConfigError, match=r"--overwrite would delete the study in .*, which ran on other data "
                                          r"\(data.image_size: 16 -> 32"):
        _refuse_other_data(tmp_path, cifar)


def test_an_interrupted_study_says_resume_and_names_its_unfinished_trials(tmp_path):
    """Ctrl-C printed Ray's advice to call Tuner.restore(...), the report listed the unfinished trials as "stopped
    early" with no reason, and its overhead line read "nan s ... nanx"."""
    import signal
    import subprocess
    import sys
    import time

    argv = [sys.executable, str(REPO / "studies" / "augmentation_robustness.py"), *TINY, "--seeds", "0", "1", "2",
            "--results-dir", str(tmp_path), "--max-concurrent", "1"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, deadline = [], time.time() + 300
    for line in proc.stdout:  # interrupt once the first trial is done
        lines.append(line)
        if " done (" in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    out = "".join(lines) + proc.communicate(timeout=300)[0]
    assert proc.returncode == 130, out[-3000:]
    assert "Tuner.restore" not in out and "study interrupted" in out and "--resume" in out.split("study interrupted")[1]
    report = (tmp_path / "report.md").read_text()
    assert "interrupted (the study was interrupted before it ended: --resume finishes it)" in report
    assert "nan" not in report.split("## Overhead")[1].split("##")[0], report
    df = pd.read_parquet(tmp_path / "trials.parquet")
    assert (df["status"] == "finished").sum() >= 1 and (df["status"] == "interrupted").sum() >= 1


def test_a_study_runs_from_python_with_its_options_as_a_value(ray_session, tmp_path):
    """No command line: a Study and a StudyOptions are enough (a notebook, a benchmark, another tool)."""
    from core.study import Grid, Study, run_study

    base = RunConfig().with_overrides(["optim.epochs=1", "data.train_limit=256", "model.width=8",
                                       "eval.probe_epochs=2", "eval.online_knn=false", "eval.few_shot_episodes=0"])
    study = Study(name="py", question="from Python", base=base, trials=Grid({"loss.name": ["supcon"]}), seeds=[0])
    table, report = run_study(study, StudyOptions(results_dir=str(tmp_path / "py"), loggers=()))
    assert list(table["status"]) == ["finished"] and report == tmp_path / "py" / "report.md"
    assert (tmp_path / "py" / "trials.parquet").exists() and (tmp_path / "py" / "tuner-state.json").exists()
