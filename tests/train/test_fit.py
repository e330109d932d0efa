"""The TorchTrainer loop end to end on the embedded digits (real images)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import RunConfig
from core.data.sources import load_source
from core.errors import CheckpointError, DataError
from core.runs.identity import config_hash, run_name
from core.train import fit

REPO = Path(__file__).resolve().parents[2]


def _cfg(tmp_path, *overrides):
    return RunConfig().with_overrides([f"storage_path={tmp_path}", "eval.probe_epochs=30", *overrides])


@pytest.fixture(scope="module")
def digits(ray_session):
    return load_source(RunConfig().data)


@pytest.mark.parametrize("loss", ["supcon", "varcon"])
def test_local_run_reaches_accuracy_floor(digits, tmp_path, loss):
    cfg = _cfg(tmp_path, f"loss.name={loss}", "optim.epochs=15")
    res = fit(cfg, digits, verbose=False)
    m = res.metrics
    assert res.status == "finished" and m["epoch"] == 14
    assert m["probe_top1"] >= 95.0 and m["knn_top1"] >= 93.0, m
    for key in ("probe_protocol", "knn_protocol", "eval_epoch", "seed", "world_size", "global_batch",
                "effective_lr", "config_hash"):
        assert key in m
    assert m["world_size"] == 1 and m["global_batch"] == 256 and m["config_hash"] == config_hash(cfg)
    rows = [json.loads(x) for x in (Path(res.run_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(15)) and all("knn_top1" in r for r in rows)
    assert json.loads((Path(res.run_dir) / "summary.json").read_text())["probe_top1"] == m["probe_top1"]


@pytest.mark.parametrize("loss", ["cross_entropy", "vsupcon"])
def test_other_losses_train(digits, tmp_path, loss):
    res = fit(_cfg(tmp_path, f"loss.name={loss}", "optim.epochs=3"), digits, verbose=False)
    assert res.status == "finished" and res.metrics["probe_top1"] > 50


def test_diverging_lr_stops_with_status(digits, tmp_path):
    res = fit(_cfg(tmp_path, "optim.lr=1e30", "optim.epochs=5"), digits, verbose=False)
    assert res.status == "diverged"
    assert res.metrics["diverged_at"].startswith("diverged at epoch 0, step ")


def _cli(tmp_path, *overrides):
    cmd = [sys.executable, "-m", "core.train", f"storage_path={tmp_path}", "optim.epochs=6",
           "eval.probe_epochs=5", "data.train_limit=512", "optim.batch_size=128", *overrides]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)


def test_killed_run_resumes_from_last_checkpoint(tmp_path):
    proc = _cli(tmp_path)
    cfg = RunConfig().with_overrides(["optim.epochs=6", "eval.probe_epochs=5", "data.train_limit=512",
                                      "optim.batch_size=128"])
    metrics = tmp_path / run_name(cfg) / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole session: driver and its Ray processes
    proc.wait()
    done_before = metrics.read_text().count("\n")
    assert 2 <= done_before < 6
    proc = _cli(tmp_path)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    assert "resumed from epoch" in out
    epochs = [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()]
    assert epochs[-1] == 5 and sorted(set(epochs)) == list(range(6))
    assert json.loads((tmp_path / run_name(cfg) / "summary.json").read_text())["epoch"] == 5
    # a different config never picks up this run's checkpoint
    proc = _cli(tmp_path, "loss.temperature=0.2", "optim.epochs=1")
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0 and "resumed" not in out, out


def test_cli_rejects_bad_config_before_ray():
    out = subprocess.run([sys.executable, "-m", "core.train", "loss.temperature=-1"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "loss.temperature must be > 0, got -1" in out.stderr


def test_a_successful_run_prints_no_traceback_and_no_warning(tmp_path):
    """What a user sees of a good run: its progress and summary, nothing to learn to ignore (Ray's notice
    that it turned token authentication on was printed at every start)."""
    out = subprocess.run([sys.executable, "-m", "core.train", f"storage_path={tmp_path}", "optim.epochs=1",
                          "data.train_limit=256", "model.width=4", "eval.probe_epochs=2"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and re.search(r"\n  status +finished\n", text), text[-3000:]
    noise = [line for line in text.splitlines() if "Traceback" in line or "WARNING" in line or "Warning:" in line]
    assert not noise, noise


def test_corrupt_images_are_skipped_counted_or_fail_the_run(ray_session, tmp_path):
    import numpy as np
    from PIL import Image

    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(np.full((12, 12, 3), 50 * i + (100 if c == "b" else 0), np.uint8)).save(
                    tmp_path / "data" / split / c / f"{i}.png")
    (tmp_path / "data" / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    base = ["data.source=imagefolder", f"data.root={tmp_path / 'data'}", "data.image_size=12",
            "optim.batch_size=9", "optim.epochs=2", "eval.probe_epochs=2", "eval.knn_k=3"]
    with pytest.raises(DataError, match=r"1 of 9 images undecodable .*broken\.jpg"):
        fit(_cfg(tmp_path, *base), verbose=False)
    with pytest.warns(UserWarning, match="broken.jpg"):
        res = fit(_cfg(tmp_path, *base, "data.max_bad_fraction=0.2"), verbose=False)
    assert res.status == "finished"
    rows = [json.loads(x) for x in (Path(res.run_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [r["bad_images"] for r in rows] == [1, 1]


def test_robustness_metrics_are_recorded(digits, tmp_path):
    cfg = _cfg(tmp_path, "optim.epochs=2", "eval.robustness=true", "eval.corruptions=[gaussian_noise,contrast]",
               "eval.probe_epochs=10")
    m = fit(cfg, digits, verbose=False).metrics
    accs = [m[f"corruption_acc_s{s}"] for s in range(1, 6)]
    assert accs[0] > accs[-1]  # severity 5 hurts more than severity 1
    assert m["corruption_error"] == pytest.approx(100 - m["corruption_acc"])
    assert 0 <= m["probe_ece"] <= 100 and m["probe_nll"] > 0 and 0 <= m["ece_s5"] <= 100
    assert 0 < m["fewlabel_1_acc"] <= m["fewlabel_10_acc"] + 10
    assert 1 <= m["effective_rank_embedding"] <= 128
    assert 0.5 < m["unc_auroc_centroid"] <= 1  # far-from-centroid inputs are the misclassified ones
    assert m["unc_spearman_centroid"] > 0  # and the distance grows with severity
    assert 0 <= m["alignment"] <= 4 and -4 <= m["uniformity"] <= 0 and -0.5 < m["cluster_ari"] <= 1
    assert 20 < m["fewshot_5w1s_acc"] <= m["fewshot_5w5s_acc"] + 5 and 0 < m["fewshot_5w1s_ci95"] < 5
    records = fit(cfg, digits, verbose=False).records  # the finished run returns at once, records included
    assert len(records["spectrum_features"]) == 64 and len(records["per_corruption"]) == 10
    saved = json.loads((Path(fit(cfg, digits, verbose=False).run_dir) / "evaluation.json").read_text())
    assert saved["spectrum_features"] == records["spectrum_features"] and saved["probe_top1"] == m["probe_top1"]


def test_results_are_written_then_renamed(tmp_path, monkeypatch):
    """A crash while writing leaves the previous file whole, never a half-written one."""
    import pandas as pd

    from core.io import write_json_atomic
    from core.study.report import write_table

    summary, table = tmp_path / "summary.json", tmp_path / "trials.parquet"
    write_json_atomic(summary, {"epoch": 1})
    write_table(pd.DataFrame({"a": [1]}), table)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_json_atomic(summary, {"epoch": 2})
    with pytest.raises(OSError):
        write_table(pd.DataFrame({"a": [2]}), table)
    monkeypatch.undo()
    assert json.loads(summary.read_text()) == {"epoch": 1}
    assert pd.read_parquet(table)["a"].tolist() == [1]


def test_training_with_views_made_by_ray_data(digits, tmp_path):
    res = fit(_cfg(tmp_path, "optim.epochs=3", "data.augment_in=ray_data"), digits, verbose=False)
    assert res.status == "finished" and res.metrics["probe_top1"] > 80
    rows = [json.loads(x) for x in (Path(res.run_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [r["samples_per_rank"] for r in rows] == [rows[0]["samples_per_rank"]] * 3


def test_two_ddp_workers_split_the_ray_data_stream(digits, tmp_path):
    """A 2-worker CPU run (DDP): each rank trains on its own half of the epoch's stream (views made in
    Ray Data tasks), the global batch is split, and the encoder it learns is evaluated."""
    cfg = _cfg(tmp_path, "num_workers=2", "optim.epochs=2", "optim.batch_size=128", "eval.probe_epochs=5",
               "data.augment_in=ray_data")
    res = fit(cfg, digits, verbose=False)
    assert res.status == "finished" and res.metrics["epoch"] == 1
    assert res.metrics["world_size"] == 2 and res.metrics["global_batch"] == 128
    assert res.metrics["knn_top1"] > 50
    first = json.loads((Path(res.run_dir) / "metrics.jsonl").read_text().splitlines()[0])
    a, b = first["samples_per_rank"]
    assert a == b > 0 and first["shard_overlap"] == 0


def test_evaluation_stage_rescores_a_finished_run_without_retraining(digits, tmp_path):
    from core.eval.rescore import evaluate_run

    res = fit(_cfg(tmp_path, "optim.epochs=2", "eval.probe_epochs=5"), digits, verbose=False)
    state = Path(res.run_dir) / "latest_state.pt"
    mtime = state.stat().st_mtime_ns
    m = evaluate_run(res.run_dir, ["eval.knn_k=5", "eval.robustness=true", "eval.corruption_suite=fast",
                                   "eval.corruptions=[contrast]"])
    assert state.stat().st_mtime_ns == mtime  # nothing retrained
    assert m["knn_top1"] != res.metrics["knn_top1"] and "corruption_acc_s5" in m and m["eval_epoch"] == 1
    saved = json.loads((Path(res.run_dir) / "evaluation.json").read_text())
    assert [(c["corruption"], c["severity"]) for c in saved["per_corruption"]] == [("contrast", s) for s in range(1, 6)]
    assert m["probe_top1"] == pytest.approx(res.metrics["probe_top1"], abs=1e-6)  # same protocol, same number
    summary = json.loads((Path(res.run_dir) / "summary.json").read_text())
    assert summary["knn_top1"] == m["knn_top1"] and (Path(res.run_dir) / "evaluation.json").exists()
    out = subprocess.run([sys.executable, "-m", "core.eval", res.run_dir, "optim.lr=1"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "only eval.* fields" in out.stderr


def test_truncated_checkpoint_falls_back_to_the_previous_one(digits, tmp_path):
    cfg = _cfg(tmp_path, "optim.epochs=2", "eval.probe_epochs=5")
    res = fit(cfg, digits, verbose=False)
    state, summary = Path(res.run_dir) / "latest_state.pt", Path(res.run_dir) / "summary.json"
    state.write_bytes(state.read_bytes()[:1000])  # killed while writing its last checkpoint: a torn file,
    summary.unlink()  # and no summary (a finished run is returned as saved, its checkpoint unread)
    with pytest.warns(UserWarning, match="unreadable checkpoint .*latest_state.pt"):
        again = fit(cfg, digits, verbose=False)  # the previous (epoch 0) state: one epoch retrained
    assert again.status == "finished" and again.metrics["resumed_from_epoch"] == 1
    assert fit(cfg, digits, verbose=False).metrics == again.metrics  # finished: returned as saved
    summary.unlink()
    for p in (state, Path(str(state) + ".previous")):
        p.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"no readable checkpoint: .*latest_state.pt"):
        fit(cfg, digits, verbose=False)


@pytest.fixture(scope="module")
def photo_folder(ray_session, tmp_path_factory):
    from core.tools.photos import make_photo_folder

    return make_photo_folder(str(tmp_path_factory.mktemp("photos")), 4, {"train": 16, "val": 4}, size=(40, 30))


@pytest.mark.parametrize("extra", [["num_workers=2"], ["data.augment_in=ray_data"]])
def test_encoded_images_train_through_both_stream_paths(photo_folder, tmp_path, extra):
    """JPEGs cropped at decode time: split across 2 DDP workers, or augmented entirely in Ray Data."""
    cfg = _cfg(tmp_path, "data.source=imagefolder", f"data.root={photo_folder}", "data.image_size=16",
               "optim.batch_size=16", "optim.epochs=2", "eval.probe_epochs=5", "eval.knn_k=5", "model.width=4",
               "eval.few_shot_episodes=0", *extra)
    res = fit(cfg, verbose=False)
    assert res.status == "finished" and res.metrics["epoch"] == 1
    rows = [json.loads(x) for x in (Path(res.run_dir) / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["classes_per_batch"] > 2.5  # 4 classes, batches of 16 (8 per rank with 2 workers)
    if "num_workers=2" in extra:
        a, b = rows[0]["samples_per_rank"]
        assert a == b == 32 and rows[0]["shard_overlap"] == 0


def _tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Read TensorBoard event files (TFRecord frames of Event protos) without TensorBoard itself."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_rerun_of_finished_config_says_so_and_overwrite_retrains(digits, tmp_path, capsys):
    from core.train import main as train_main

    overrides = [f"storage_path={tmp_path}", "optim.epochs=1", "eval.probe_epochs=5", "data.train_limit=256"]
    cfg = RunConfig().with_overrides(overrides)
    first = fit(cfg, digits, verbose=False)
    scalars = _tensorboard_scalars(Path(first.run_dir) / "tensorboard")
    assert scalars["loss"] == [(0, pytest.approx(first.metrics["loss"]))]  # a single run's TensorBoard scalars
    assert scalars["probe_top1"][0][1] == pytest.approx(first.metrics["probe_top1"])
    marker = Path(first.run_dir) / "stale.txt"
    marker.write_text("from the first run")
    assert train_main(overrides) == 0  # returns before starting Ray: nothing is trained
    out = capsys.readouterr().out
    assert f"finished earlier: {first.run_dir}; --overwrite to train again" in out and "probe_top1" in out
    again = fit(cfg, digits, verbose=False, overwrite=True)
    assert again.status == "finished" and not marker.exists()
    assert len((Path(again.run_dir) / "metrics.jsonl").read_text().splitlines()) == 1  # one fresh epoch


TIMING_KEYS = {"views_per_s", "epoch_seconds", "data_wait_seconds", "worker_nodes", "worker_pids", "eval_seconds",
               "train_seconds", "time_total_s"}


def test_cpu_run_repeats_exactly(digits, tmp_path):
    """Same config, seed and thread count in two directories: every metric and every epoch's loss equal
    to the last bit (the data order is the platform's permutation, not a shuffle buffer's timing)."""
    overrides = ["optim.epochs=2", "model.width=8", "eval.probe_epochs=10", "data.train_limit=512",
                 "optim.batch_size=128", "eval.robustness=true", "eval.corruption_suite=fast",
                 "eval.few_shot_episodes=20"]
    runs = [fit(_cfg(tmp_path / d, *overrides), digits, verbose=False, torch_threads=1) for d in "ab"]
    a, b = ({k: v for k, v in r.metrics.items() if k not in TIMING_KEYS and "seconds" not in k} for r in runs)
    assert a == b
    assert a["status"] == "finished" and "fewshot_5w1s_acc" in a and "corruption_error" in a
    losses = [[json.loads(x)["loss"] for x in (Path(r.run_dir) / "metrics.jsonl").read_text().splitlines()]
              for r in runs]
    assert losses[0] == losses[1] and len(losses[0]) == 2


def test_ray_data_routine_logs_are_dropped(digits, tmp_path, capfd):
    fit(_cfg(tmp_path, "optim.epochs=1", "eval.probe_epochs=5", "data.train_limit=256"), digits, verbose=True)
    out, err = capfd.readouterr()
    assert "epoch 1/1" in out  # the run's own progress line
    for chatter in ("Running Dataset", "execution finished", "Progress bars disabled", "Total Progress"):
        assert chatter not in out + err


def _fake_cifar(root: Path, per_batch: int = 64) -> Path:
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": rng.integers(0, 255, (per_batch, 3072), dtype=np.uint8),
                         "labels": [int(x) for x in rng.integers(0, 10, per_batch)]}, fh)
    return root


def test_shipped_configs_and_their_commands_work(ray_session, tmp_path):
    """configs/cifar10_local.yaml trains from torchvision's on-disk layout (its own quick-check command,
    shortened); the shard command in cifar10_resnet18.yaml's comment runs as written (local paths)."""
    from core.config import layered
    from core.data.shard import main as shard_main

    root = _fake_cifar(tmp_path / "cifar10")
    for path in sorted((REPO / "configs").glob("*.yaml")):
        RunConfig.from_yaml(path)  # every shipped config validates
    local = (REPO / "configs" / "cifar10_local.yaml").read_text().replace("\\\n#", "")
    quick = next(line for line in local.splitlines() if "optim.epochs=1" in line)
    overrides = [a.replace("/path/to/cifar10", str(root)) for a in quick.split() if "=" in a]
    cfg = layered(RunConfig(), [REPO / "configs" / "cifar10_local.yaml"],  # + smaller sizes for the test
                  [*overrides, f"storage_path={tmp_path / 'runs'}", "data.train_limit=256", "model.width=8",
                   "optim.batch_size=64", "eval.probe_epochs=2", "eval.robustness=false"])
    assert fit(cfg, verbose=False).status == "finished"
    comment = (REPO / "configs" / "cifar10_resnet18.yaml").read_text()
    command = next(line for line in comment.splitlines() if "python -m core.data.shard" in line)
    argv = command.split("python -m core.data.shard", 1)[1].split()
    argv = [str(root) if a == "/data/cifar10" else str(tmp_path / "shards") if a.startswith("s3://") else a
            for a in argv]
    assert shard_main(argv) == 0
    sharded = RunConfig.from_yaml(REPO / "configs" / "cifar10_resnet18.yaml", [f"data.root={tmp_path / 'shards'}"])
    assert load_source(sharded.data).train_size == 5 * 64  # the config reads what the command wrote


def test_imagenet_shaped_photos_train_with_no_image_lost(ray_session, tmp_path):
    """Odd-sided real-photo JPEGs (501 x 375) at 64 px, batch 32: every image decodes (the old draft
    geometry lost 5 of 32 images in the first batch and failed the run at the default limit)."""
    from core.tools.photos import make_photo_folder

    root = make_photo_folder(str(tmp_path / "photos"), 4, {"train": 16, "val": 4}, size=(501, 375))
    cfg = _cfg(tmp_path, "data.source=imagefolder", f"data.root={root}", "data.image_size=64", "optim.batch_size=32",
               "optim.epochs=1", "eval.probe_epochs=2", "eval.knn_k=5", "model.width=4", "eval.few_shot_episodes=0",
               "augment.min_crop_area=0.08")
    res = fit(cfg, verbose=False)
    assert res.status == "finished" and res.metrics["bad_images"] == 0 and res.metrics["bad_eval_images"] == 0


# -- no silent wrong results (issue 27) -------------------------------------------------------------

def test_a_named_run_with_another_config_is_refused(digits, tmp_path, capsys):
    from core.errors import ConfigError
    from core.train import main as train_main

    base = [f"storage_path={tmp_path}", "name=myrun", "optim.epochs=1", "eval.probe_epochs=2", "data.train_limit=256"]
    first = fit(RunConfig().with_overrides(base), digits, verbose=False)
    assert first.status == "finished"
    with pytest.raises(ConfigError, match=r"holds another config .*loss.temperature: 0.1 -> 0.3"):
        fit(RunConfig().with_overrides([*base, "loss.temperature=0.3"]), digits, verbose=False)
    assert train_main([*base, "loss.temperature=0.3"]) == 2  # not "finished earlier" with the first's summary
    assert "holds another config" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="holds another config"):  # --overwrite never deletes another config's run
        fit(RunConfig().with_overrides([*base, "loss.temperature=0.3"]), digits, verbose=False, overwrite=True)
    assert (Path(first.run_dir) / "summary.json").exists()


def test_non_finite_weights_end_the_run_diverged(digits, tmp_path):
    """One step at lr=1e30 leaves a finite loss and infinite weights: the run used to crash in
    evaluation (torch.linalg.svd) with no summary."""
    for bad in ("optim.lr=1e30", "optim.weight_decay=inf"):
        res = fit(_cfg(tmp_path, bad, "optim.epochs=1", "data.train_limit=256", "eval.probe_epochs=2"), verbose=False)
        assert res.status == "diverged", (bad, res.metrics)  # one step: the loss never saw the weights blow up
        assert res.metrics["diverged_at"] in ("diverged at epoch 0, step 0 (non-finite weights)",
                                              "diverged at epoch 0, step 0 (non-finite features)"), res.metrics


def test_requests_the_cluster_can_never_meet_fail_at_once(digits, tmp_path):
    from core.errors import ResourceError
    from core.runtime import start_ray

    with pytest.raises(ResourceError, match="num_workers=8 asks for 8 x .* can never offer"):
        fit(_cfg(tmp_path, "num_workers=8", "optim.epochs=1"), digits, verbose=False)
    with pytest.raises(ResourceError, match="cannot reach a Ray cluster at 127.0.0.1:1"):
        start_ray("127.0.0.1:1")


def test_resume_drops_log_rows_past_the_checkpoint(digits, tmp_path):
    """A full disk made a rerun fall back to .previous; metrics.jsonl then held a duplicated epoch row."""
    cfg = _cfg(tmp_path, "optim.epochs=3", "eval.probe_epochs=2", "data.train_limit=256")
    res = fit(cfg, digits, verbose=False)
    run = Path(res.run_dir)
    state = run / "latest_state.pt"
    state.write_bytes(b"torn")  # the newest checkpoint (epoch 2) is lost: resume from epoch 1's
    (run / "summary.json").unlink()
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        again = fit(cfg, digits, verbose=False)
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert again.status == "finished" and epochs == [0, 1, 2]


def test_a_read_only_or_full_storage_is_one_line(digits, tmp_path):
    import os

    from core.errors import StorageError
    from core.train import main as train_main

    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    try:
        if os.access(tmp_path / "ro", os.W_OK):  # root ignores permissions: read-only needs a read-only mount
            pytest.skip("running as root: a chmod'ed directory stays writable")
        out = subprocess.run([sys.executable, "-m", "core.train", f"storage_path={tmp_path / 'ro'}", "optim.epochs=1"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and "permission denied" in out.stderr and "Traceback" not in out.stderr
    finally:
        os.chmod(tmp_path / "ro", 0o700)
    assert train_main([f"storage_path={tmp_path}", "name=" + "x" * 300]) == 2
    from core.runs.checkpoint import TrainState, save_state

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    import torch
    real_save = torch.save
    torch.save = full
    try:
        with pytest.raises(StorageError, match="cannot write .*state.pt"):
            import shutil
            usage = shutil.disk_usage
            shutil.disk_usage = lambda p: usage(p)._replace(free=1 << 20)  # 1 MiB free: a full disk
            try:
                save_state(tmp_path / "state.pt", TrainState("h"))
            finally:
                shutil.disk_usage = usage
    finally:
        torch.save = real_save


def test_cifar_from_an_image_folder_trains_at_32_px_and_scores_on_cifar10_c(ray_session, tmp_path, capsys,
                                                                            monkeypatch):
    """data.source=cifar10 with an ImageFolder root and nothing else: CIFAR's size and statistics, the images held
    in memory, and with eval.robustness=true CIFAR-10-C's types, built before training with a progress line."""
    import numpy as np
    from PIL import Image

    from core.train import main as train_main

    monkeypatch.setenv("CONTRASTIVE_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    for split, n in (("train", 8), ("val", 3)):
        for c in classes:
            (tmp_path / "cifar" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                    tmp_path / "cifar" / split / c / f"{i:04d}.jpg")
    argv = ["data.source=cifar10", f"data.root={tmp_path / 'cifar'}", "eval.robustness=true", "optim.epochs=1",
            "optim.batch_size=32", "model.width=8", "eval.probe_epochs=2", "eval.few_shot_episodes=0",
            "eval.corruptions=[contrast,pixelate]", f"storage_path={tmp_path / 'runs'}"]
    assert train_main(["--print-config", *argv]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"image_size: 32 +# data.source=cifar10", printed) and "corruption_suite: cifar_c" in printed
    assert train_main(argv) == 0
    out = capsys.readouterr().out
    assert "decoded 80 images once" in out and "building CIFAR-10-C (make_cifar_c.py's parameters): 2 types x 5 severities of 30 test images" in out
    summary = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())
    assert summary["status"] == "finished" and summary["test_images"] == 30
    assert summary["corruption_protocol"].startswith("cifar_c: CIFAR-10-C") and "WARNING" not in \
        summary["corruption_protocol"]
    assert 0 <= summary["corruption_acc"] <= 100 and summary["corruption_error"] == pytest.approx(
        100 - summary["corruption_acc"])
    config = json.loads(next((tmp_path / "runs").glob("*/config.json")).read_text())["config"]
    assert config["data"]["image_size"] == 32 and config["data"]["mean"] == [0.4914, 0.4822, 0.4465]
