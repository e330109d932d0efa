"""Faults and bad input either recover or stop early with an error naming the file or field:
never exit 0 with a wrong result."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from core.config import ConfigError, DataConfig, RunConfig
from core.data.shard import shard_dataset
from core.data.sources import DataError, load_source
from core.eval.probe import knn_accuracy
from core.io import DirectoryLock, LockedError, remove_paths, unlocked_entries
from core.runs.identity import run_name

REPO = Path(__file__).resolve().parents[1]


def _folder(root: Path, classes=("a", "b", "c"), per_class=6, size=12) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for k, c in enumerate(classes):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8) // (k + 1)).save(
                    root / split / c / f"{i}.png")
    return root


# -- configuration files and fields -----------------------------------------------------------------

@pytest.mark.parametrize("text, match", [
    (b"loss:\n  name: [supcon\n", "is not valid YAML"),
    (b"loss:\n  name: supcon\n\xff\xfe\n", "is not UTF-8"),
    (b"optim:\n  lr: 0.1\n  lr: 0.2\n", "duplicate key 'lr' at line 3"),
])
def test_bad_yaml_files_name_the_file(tmp_path, text, match):
    path = tmp_path / "run.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match=match) as exc:
        RunConfig.from_yaml(path)
    assert "run.yaml" in str(exc.value)


@pytest.mark.parametrize("override, match", [
    ("name=../../x", "name must be a plain directory name"),
    ("seed=18446744073709551616", r"seed must be in \[0, 2\*\*32\)"),
    ("eval.probe_lr=inf", "eval.probe_lr must be finite"),
    ("loss.base_temperature=inf", "loss.base_temperature must be finite"),
    ("eval.knn_temperature=nan", "eval.knn_temperature must be finite"),
])
def test_valid_looking_but_meaningless_values_are_refused(override, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig().with_overrides([override])


def test_knn_weights_are_stable_at_any_temperature():
    g = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(5, 16, generator=g), dim=1)
    ytr, yte = torch.arange(500) % 5, torch.arange(100) % 5
    xtr = centres[ytr] + 0.3 * torch.randn(500, 16, generator=g)
    xte = centres[yte] + 0.3 * torch.randn(100, 16, generator=g)
    ref = knn_accuracy(xtr, ytr, xte, yte, 5, k=50, temperature=0.1)["top1"]
    for t in (0.01, 0.001):  # exp(sim / T) overflows float32 below T ~ 0.012
        assert knn_accuracy(xtr, ytr, xte, yte, 5, k=50, temperature=t)["top1"] >= ref - 5 > 50


# -- data -------------------------------------------------------------------------------------------

def test_empty_class_folder_and_wrong_class_count_are_refused(ray_session, tmp_path):
    root = _folder(tmp_path / "data")
    with pytest.raises(DataError, match=r"data.num_classes=2 but .* has 3 class folders"):
        load_source(DataConfig(source="imagefolder", root=str(root), num_classes=2))
    (root / "train" / "empty").mkdir()
    (root / "val" / "empty").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) \['empty'\] hold no images"):
        load_source(DataConfig(source="imagefolder", root=str(root)))


def test_shard_writer_names_a_symlink_loop(tmp_path):
    root = _folder(tmp_path / "data", per_class=2)
    os.symlink(root / "train" / "a" / "loop.jpg", root / "train" / "a" / "loop.jpg")  # points at itself
    with pytest.raises(DataError, match=r"cannot read .*loop\.jpg"):
        shard_dataset(str(root), str(tmp_path / "shards"), 4)


def test_malformed_parquet_names_the_shards(ray_session, tmp_path):
    for split in ("train", "val"):
        (tmp_path / "bad" / split).mkdir(parents=True)
        (tmp_path / "bad" / split / "part-0.parquet").write_bytes(b"PAR1 this is not parquet at all")
        (tmp_path / "str" / split).mkdir(parents=True)
        pq.write_table(pa.table({"image": [b"x"], "label": ["cat"], "index": [0]}),
                       tmp_path / "str" / split / "part-0.parquet")
    with pytest.raises(DataError, match=r"parquet shards .*bad/train.* are not readable parquet"):
        load_source(DataConfig(source="parquet", root=str(tmp_path / "bad")))
    with pytest.raises(DataError, match=r"column 'label' must hold integers, got string"):
        load_source(DataConfig(source="parquet", root=str(tmp_path / "str")))


# -- runs -------------------------------------------------------------------------------------------

def _run_cfg(tmp_path, root, *extra):
    return RunConfig().with_overrides([f"storage_path={tmp_path / 'runs'}", "data.source=imagefolder",
                                       f"data.root={root}", "data.image_size=12", "optim.batch_size=9",
                                       "optim.epochs=1", "eval.probe_epochs=2", "eval.knn_k=3",
                                       "eval.few_shot_episodes=0", "model.width=4", *extra])


def test_undecodable_evaluation_images_are_counted_and_a_lost_class_is_refused(ray_session, tmp_path):
    from core.errors import EvaluationError
    from core.train import fit

    root = _folder(tmp_path / "data")
    (root / "val" / "a" / "0.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match=r"evaluation: skipping undecodable image .*0\.png"):
        res = fit(_run_cfg(tmp_path, root), verbose=False)
    assert res.status == "finished" and res.metrics["bad_eval_images"] == 1
    for i in range(6):
        (root / "val" / "c" / f"{i}.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning), pytest.raises(EvaluationError, match=r"every image of class\(es\) \[2\]"):
        fit(_run_cfg(tmp_path, root, "seed=1"), verbose=False)


def test_a_run_directory_is_locked_while_written(ray_session, tmp_path):
    from core.train import fit

    cfg = RunConfig().with_overrides([f"storage_path={tmp_path}", "optim.epochs=1", "data.train_limit=256"])
    with DirectoryLock(tmp_path / run_name(cfg), "run directory"):  # another writer holds it
        with pytest.raises(LockedError, match=f"run directory .*{run_name(cfg)}.* is being written by another process"):
            fit(cfg, verbose=False)
    # and from another process: the CLI refuses with exit 2 while the lock is held here
    lock = DirectoryLock(tmp_path / run_name(cfg)).acquire()
    try:
        out = subprocess.run([sys.executable, "-m", "core.train", f"storage_path={tmp_path}", "optim.epochs=1",
                              "data.train_limit=256"], cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        lock.release()
    assert out.returncode == 2 and "is being written by another process" in out.stderr, out.stderr[-500:]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_overwrite_clears_everything_but_the_held_lock(tmp_path):
    run = tmp_path / "run"
    (run / "epoch=0000").mkdir(parents=True)
    (run / "epoch=0000" / "state.pt").write_text("x")
    (run / "metrics.jsonl").write_text("{}\n")
    outside = tmp_path / "kept.txt"
    outside.write_text("not in the run")
    (run / "link").symlink_to(outside)
    with DirectoryLock(run):
        remove_paths([*unlocked_entries(run), tmp_path / "missing"])  # a missing path is fine
        assert [p.name for p in run.iterdir()] == [".lock"]
    assert outside.read_text() == "not in the run"  # a symlink is removed, never followed


def test_use_gpu_without_a_gpu_stops_with_a_clear_error(ray_session, tmp_path):
    from core.train import fit

    with pytest.raises(ValueError, match="use_gpu=true but torch sees no CUDA device"):
        fit(RunConfig().with_overrides([f"storage_path={tmp_path}", "use_gpu=true"]), verbose=False)
