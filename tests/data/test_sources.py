import json
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.config import DataConfig
from core.data.shard import main as shard_main
from core.data.shard import shard_dataset
from core.data.sources import DataError, digits_arrays, load_source


def _rows(ds):
    return {int(r["index"]): r for r in ds.take_all()}


def _write_folder(root, classes=("cat", "dog"), per_class=3, size=12, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i}.png")
                arrays[f"{split}/{c}/{i}.png"] = arr
    return arrays


def test_digits_split_is_fixed_and_real():
    a, b = digits_arrays(16), digits_arrays(16)
    assert a["train"][0].shape == (1400, 16, 16, 3) and a["test"][0].shape == (397, 16, 16, 3)
    assert np.array_equal(a["test"][2], b["test"][2])
    assert not set(a["train"][2]) & set(a["test"][2])
    assert np.bincount(a["test"][1]).min() >= 35  # stratified
    assert a["train"][0].max() == 255 and a["train"][0].std() > 50  # real strokes, not blank


def test_digits_source(ray_session):
    src = load_source(DataConfig(train_limit=100))
    assert src.num_classes == 10 and src.train_size == 100 and src.test.count() == 397
    row = src.train_rows.epoch(0, 0).take(1)[0]
    assert row["image"].shape == (16, 16, 3) and row["image"].dtype == np.uint8


def test_image_folder_with_corrupt_jpeg(ray_session, tmp_path):
    arrays = _write_folder(tmp_path)
    (tmp_path / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    src = load_source(DataConfig(source="imagefolder", root=str(tmp_path), image_size=12, eval_crop=1.0))
    assert src.num_classes == 2 and src.class_names == ["cat", "dog"]
    rows = list(_rows(src.train_eval).values())
    assert len(rows) == 7
    bad = [r for r in rows if not r["ok"]]
    assert len(bad) == 1 and bad[0]["path"].endswith("broken.jpg")
    good = {r["path"].split("train/")[1]: r for r in rows if r["ok"]}
    assert np.array_equal(good["cat/1.png"]["image"], arrays["train/cat/1.png"])
    assert good["dog/0.png"]["label"] == 1


def test_missing_and_empty_inputs_name_the_path(ray_session, tmp_path):
    with pytest.raises(DataError, match="no 'train'"):
        load_source(DataConfig(source="imagefolder", root=str(tmp_path / "nope")))
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=r"holds no images"):
        load_source(DataConfig(source="imagefolder", root=str(tmp_path)))
    with pytest.raises(DataError, match="no images"):  # train/ is there: read as an ImageFolder of CIFAR
        load_source(DataConfig(source="cifar10", root=str(tmp_path)))
    with pytest.raises(DataError, match=r"neither cifar-10-batches-py/ .* nor train/ and val/"):
        load_source(DataConfig(source="cifar10", root=str(tmp_path / "train" / "a")))
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataError, match="cifar-10-batches-py/data_batch_1"):
        load_source(DataConfig(source="cifar10", root=str(tmp_path)))


def test_cifar_on_disk_format(ray_session, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 9]}, fh)
    src = load_source(DataConfig(source="cifar10", root=str(tmp_path), image_size=32))
    assert src.train_size == 20 and src.test.count() == 4 and src.num_classes == 10
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({"data": rng.integers(0, 255, (1, 3072), dtype=np.uint8), "labels": [10]}, fh)
    with pytest.raises(DataError, match="label 10 .* outside"):
        load_source(DataConfig(source="cifar10", root=str(tmp_path)))


def test_shard_round_trip_and_resume(ray_session, tmp_path, capsys):
    arrays = _write_folder(tmp_path / "src", per_class=5)
    assert shard_main([str(tmp_path / "src"), str(tmp_path / "shards"), "--shard-size", "4"]) == 0
    manifest = json.loads((tmp_path / "shards" / "train" / "manifest.json").read_text())
    assert manifest["total"] == 10 and manifest["class_counts"] == {"0": 5, "1": 5} and len(manifest["shards"]) == 3
    src = load_source(DataConfig(source="parquet", root=str(tmp_path / "shards"), image_size=12, eval_crop=1.0))
    rows = [r for r in src.train_eval.take_all()]
    assert len(rows) == 10 and all(r["ok"] for r in rows)
    for r in rows:
        assert np.array_equal(r["image"], arrays["train/" + r["path"]])
        assert r["label"] == (0 if r["path"].startswith("cat") else 1)
    # resume: an intact shard is skipped (mtime unchanged), a deleted one is rewritten
    shard0 = tmp_path / "shards" / "train" / "shard-00000.parquet"
    shard1 = tmp_path / "shards" / "train" / "shard-00001.parquet"
    mtime = shard0.stat().st_mtime_ns
    shard1.unlink()
    shard_dataset(str(tmp_path / "src"), str(tmp_path / "shards"), 4)
    assert shard0.stat().st_mtime_ns == mtime and shard1.exists()


def test_a_shard_build_saves_its_manifest_every_few_seconds_not_every_shard(ray_session, tmp_path, monkeypatch):
    """Each manifest lists every shard so far: written per shard, a build was quadratic in its shards."""
    import core.data.shard as shard

    _write_folder(tmp_path / "src", per_class=20)  # 40 images: 40 shards of 1
    saved = []
    write = shard.write_manifest
    monkeypatch.setattr(shard, "write_manifest", lambda fs, base, m: (saved.append(len(m.shards)), write(fs, base, m)))
    shard_dataset(str(tmp_path / "src"), str(tmp_path / "shards"), 1)
    assert saved[-1] == 40 and len(saved) <= 2 + len({"train", "val"})  # each split: at the end (and maybe once)

    saved.clear()  # a build killed after 25 shards resumes from what the manifest saved (the interval
    # grows with the cost of a write, so not every shard is saved)
    monkeypatch.setattr(shard, "MANIFEST_EVERY_S", 0.0)
    encode = shard._encode_file
    calls = []

    def dies_after_25(record, root):
        calls.append(record)
        if len(calls) > 25:
            raise KeyboardInterrupt
        return encode(record, root)

    monkeypatch.setattr(shard, "_encode_file", dies_after_25)
    (tmp_path / "src" / "train" / "extra").mkdir()  # a different build: every shard is rewritten
    Image.new("RGB", (8, 8)).save(tmp_path / "src" / "train" / "extra" / "x.png")
    with pytest.raises(KeyboardInterrupt):
        shard_dataset(str(tmp_path / "src"), str(tmp_path / "shards"), 1)
    kept = len(_folder_manifest(tmp_path / "shards")["shards"])  # the first shard at least: the interval was 0
    assert saved and kept == saved[-1] and 1 <= kept <= 25
    calls.clear()
    monkeypatch.setattr(shard, "_encode_file", lambda record, root: (calls.append(record), encode(record, root))[1])
    shard_dataset(str(tmp_path / "src"), str(tmp_path / "shards"), 1)
    assert len(calls) == 41 - kept + 40  # the train split's other shards, then all 40 of val (its classes changed)


def test_parquet_wrong_label_fails_naming_the_shards(ray_session, tmp_path):
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        pq.write_table(pa.table({"image": [b"x", b"y"], "label": [0, 7], "index": [0, 1]}),
                       tmp_path / split / "part-0.parquet")
    with pytest.raises(DataError, match=r"label 7 at row 1 is outside \[0, 2\)"):
        load_source(DataConfig(source="parquet", root=str(tmp_path), num_classes=2))


def _write_tars(root, samples: int, classes: int, shape: tuple, fmt: str) -> None:
    """WebDataset shards ``root/{train,val}/shard-000.tar`` with ``sNNN.<png|jpg>`` + ``sNNN.cls`` members."""
    import io
    import tarfile

    rng = np.random.default_rng(0)
    ext = {"PNG": "png", "JPEG": "jpg"}[fmt]
    for split in ("train", "val"):
        (root / split).mkdir()
        with tarfile.open(root / split / "shard-000.tar", "w") as tar:
            for i in range(samples):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(buf, format=fmt)
                for name, data in ((f"s{i:03d}.{ext}", buf.getvalue()), (f"s{i:03d}.cls", str(i % classes).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def test_webdataset_tar_shards(ray_session, tmp_path):
    _write_tars(tmp_path, samples=4, classes=2, shape=(10, 10), fmt="PNG")
    with pytest.raises(DataError, match="data.num_classes is required"):
        load_source(DataConfig(source="webdataset", root=str(tmp_path)))
    src = load_source(DataConfig(source="webdataset", root=str(tmp_path), num_classes=2, image_size=10))
    rows = src.train_eval.take_all()
    assert len(rows) == 4 and sorted(r["label"] for r in rows) == [0, 0, 1, 1]
    assert all(r["ok"] and r["image"].shape == (10, 10, 3) for r in rows)
    assert len({r["index"] for r in rows}) == 4  # stable ids from the sample keys


def _folder_manifest(dest):
    return json.loads((dest / "train" / "manifest.json").read_text())


def test_shards_are_class_mixed_parallel_and_written_to_uris(ray_session, tmp_path):
    _write_folder(tmp_path / "src", classes=("a", "b", "c", "d"), per_class=6)
    shard_dataset(str(tmp_path / "src"), str(tmp_path / "serial"), 6)
    # a file:// URI goes through pyarrow.fs (no folder named "file:" appears); 2 Ray tasks at once
    shard_dataset(str(tmp_path / "src"), f"file://{tmp_path / 'parallel'}", 6, workers=2)
    assert not (tmp_path / "file:").exists() and (tmp_path / "parallel" / "train" / "manifest.json").exists()
    for name in ("shard-00000.parquet", "shard-00003.parquet"):
        a = pq.read_table(tmp_path / "serial" / "train" / name)
        b = pq.read_table(tmp_path / "parallel" / "train" / name)
        assert a.equals(b)  # same seeded order whatever the parallelism
    labels = pq.read_table(tmp_path / "serial" / "train" / "shard-00000.parquet").column("label").to_pylist()
    assert len(set(labels)) >= 3  # seeded random order: not one class per shard
    m = _folder_manifest(tmp_path / "serial")
    assert m["complete"] and m["shard_size"] == 6 and m["seed"] == 0 and len(m["source_digest"]) == 64


def test_shard_rerun_after_the_source_changed_rebuilds(ray_session, tmp_path):
    _write_folder(tmp_path / "src", per_class=10)
    dest = tmp_path / "shards"
    shard_dataset(str(tmp_path / "src"), str(dest), 4)
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "src" / "train" / "cat" / "new.png")
    shard_dataset(str(tmp_path / "src"), str(dest), 4)  # a new image: every shard rebuilt
    rows = pd.concat([pq.read_table(p).to_pandas() for p in (dest / "train").glob("*.parquet")])
    assert len(rows) == 21 and rows["path"].is_unique and "cat/new.png" in set(rows["path"])
    shard_dataset(str(tmp_path / "src"), str(dest), 10)  # another shard size: no stale shards left
    files = sorted(p.name for p in (dest / "train").glob("shard-*.parquet"))
    assert files == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    assert _folder_manifest(dest)["total"] == 21
    assert sum(pq.read_metadata(p).num_rows for p in (dest / "train").glob("*.parquet")) == 21


def test_parquet_reader_checks_the_manifest(ray_session, tmp_path):
    _write_folder(tmp_path / "src", per_class=6)
    dest = tmp_path / "shards"
    shard_dataset(str(tmp_path / "src"), str(dest), 4)
    src = load_source(DataConfig(source="parquet", root=str(dest), image_size=12))
    assert src.num_classes == 2 and src.train_size == 12  # num_classes from the manifest
    (dest / "train" / "shard-00001.parquet").unlink()
    with pytest.raises(DataError, match=r"missing \['shard-00001.parquet'\]"):
        load_source(DataConfig(source="parquet", root=str(dest), image_size=12))


def test_each_parquet_shard_is_read_and_decoded_by_a_task_of_its_own(ray_session, tmp_path):
    """Ray 2.60's read_parquet packed small shards into one 128 MiB read unit (100,000 tiny JPEGs in 100
    shards: one task, one core, the first batch after 32 s); one placeholder row per shard row keeps Ray's
    bundler from putting 64 one-row shard blocks into one decode task."""
    from core.config import RunConfig
    from core.data.pipeline import epoch_dataset

    _write_folder(tmp_path / "src", per_class=140, size=8)
    shard_dataset(str(tmp_path / "src"), str(tmp_path / "shards"), 70)
    cfg = RunConfig().with_(**{"data.source": "parquet", "data.root": str(tmp_path / "shards"), "data.image_size": 8})
    rows = load_source(cfg.data).train_rows
    assert rows.rows == [70, 70, 70, 70] and rows.count() == 280
    epoch = epoch_dataset(rows, cfg, 1).materialize()
    assert epoch.num_blocks() == 4  # one per shard (before: 1)
    index = [int(i) for b in epoch.iter_batches(batch_size=None, batch_format="numpy") for i in b["index"]]
    stored = [int(i) for f in rows.files for i in pq.read_table(f).column("index").to_pylist()]
    assert sorted(index) == sorted(stored) and index != stored  # every row once, in this epoch's order

    (tmp_path / "small").mkdir()
    _write_folder(tmp_path / "small" / "src", per_class=5, size=8)
    shard_dataset(str(tmp_path / "small" / "src"), str(tmp_path / "small" / "shards"), 4)
    small = load_source(DataConfig(source="parquet", root=str(tmp_path / "small" / "shards"), image_size=8))
    assert small.train_rows.rows == [4, 4, 2]  # each shard's rows, in the files' order


def test_webdataset_epoch_stream_decodes_views(ray_session, tmp_path):
    from core.config import RunConfig
    from core.data.pipeline import epoch_dataset

    _write_tars(tmp_path, samples=6, classes=3, shape=(20, 16), fmt="JPEG")
    cfg = RunConfig().with_(**{"data.source": "webdataset", "data.root": str(tmp_path), "data.num_classes": 3,
                               "data.image_size": 8})
    src = load_source(cfg.data)
    rows = epoch_dataset(src.train_rows, cfg, 1).take_all()
    assert len(rows) == 6 and all(r["ok"] and r["views"].shape == (2, 8, 8, 3) for r in rows)
    assert sorted(r["label"] for r in rows) == [0, 0, 1, 1, 2, 2]


def test_epoch_datasets_start_no_ray_task(ray_session, tmp_path):
    """Rank 0 of a TorchTrainer builds every epoch's dataset while the workers hold the CPUs: building
    it must not wait on a Ray task (from_arrow/from_pandas run one for block metadata: a deadlock)."""
    from core.data.sources import ArrayRows, FolderRows

    _write_folder(tmp_path / "src", per_class=3)
    paths = sorted(str(p) for p in (tmp_path / "src").rglob("*.png"))
    shard_dataset(str(tmp_path / "src"), str(tmp_path / "shards"), 4)
    shards = load_source(DataConfig(source="parquet", root=str(tmp_path / "shards"), image_size=8)).train_rows
    cpus = int(ray_session.cluster_resources()["CPU"])

    @ray_session.remote(num_cpus=cpus)  # an actor holding every CPU, as a Train worker group does
    class Rank0:
        def build(self) -> int:
            images = np.zeros((64, 8, 8, 3), np.uint8)
            FolderRows(paths, np.zeros(len(paths), np.int64), np.arange(len(paths))).epoch(1, 0)
            shards.epoch(1, 0)
            return ArrayRows(images, np.arange(64) % 4, np.arange(64)).epoch(1, 0).count()  # from metadata

    rank0 = Rank0.remote()
    try:
        assert ray_session.get(rank0.build.remote(), timeout=60) == 64
    finally:
        ray_session.kill(rank0)


# -- no silent wrong results (issue 27) -------------------------------------------------------------

def test_validation_shards_use_the_training_classes(ray_session, tmp_path):
    """A class missing from val/ used to shift every later val label by one (kNN 20%, exit 0)."""
    _write_folder(tmp_path / "src", classes=("a", "b", "c"), per_class=3)
    import shutil

    shutil.rmtree(tmp_path / "src" / "val" / "a")
    manifests = shard_dataset(str(tmp_path / "src"), str(tmp_path / "shards"), 4)
    assert manifests["val"].classes == ["a", "b", "c"]
    src = load_source(DataConfig(source="parquet", root=str(tmp_path / "shards"), image_size=12))
    labels = sorted(int(r["label"]) for r in src.test.take_all())
    assert labels == [1, 1, 1, 2, 2, 2]  # b and c keep their training labels


def test_manifests_that_disagree_or_overclaim_are_refused(ray_session, tmp_path):
    _write_folder(tmp_path / "src", per_class=4)
    dest = tmp_path / "shards"
    shard_dataset(str(tmp_path / "src"), str(dest), 4)
    manifest_path = dest / "train" / "manifest.json"
    good = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**good, "classes": [*good["classes"], "x", "y", "z", "w", "v"]}))
    with pytest.raises(DataError, match="lists 7 classes but the shards hold labels of 2"):
        load_source(DataConfig(source="parquet", root=str(dest), image_size=12))
    val_manifest = dest / "val" / "manifest.json"
    manifest_path.write_text(json.dumps(good))
    val_manifest.write_text(json.dumps({**json.loads(val_manifest.read_text()), "classes": ["dog", "cat"]}))
    with pytest.raises(DataError, match="list different classes"):
        load_source(DataConfig(source="parquet", root=str(dest), image_size=12))
    for damaged, message in (({k: v for k, v in good.items() if k != "shards"}, "field 'shards' must be a JSON object"),
                             ({**good, "shards": list(good["shards"])}, "field 'shards' must be a JSON object"),
                             ({**good, "shards": {n: {"sha256": "x"} for n in good["shards"]}}, "integer 'rows'")):
        manifest_path.write_text(json.dumps(damaged))
        with pytest.raises(DataError, match=message):
            load_source(DataConfig(source="parquet", root=str(dest), image_size=12))


def test_hidden_folders_and_files_are_never_classes_or_images(ray_session, tmp_path):
    _write_folder(tmp_path, per_class=2)
    for split in ("train", "val"):
        (tmp_path / split / ".ipynb_checkpoints").mkdir()
        Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / split / ".ipynb_checkpoints" / "x.png")
        Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / split / "cat" / ".hidden.png")
    src = load_source(DataConfig(source="imagefolder", root=str(tmp_path), image_size=12))
    assert src.num_classes == 2 and src.train_size == 4
    manifests = shard_dataset(str(tmp_path), str(tmp_path / "out"), 10)
    assert manifests["train"].classes == ["cat", "dog"] and manifests["train"].total == 4


def test_a_fifo_is_refused_not_waited_on(ray_session, tmp_path):
    import os

    _write_folder(tmp_path, per_class=2)
    os.mkfifo(tmp_path / "train" / "cat" / "pipe.jpg")
    with pytest.raises(DataError, match="pipe.jpg' is not a regular file"):
        load_source(DataConfig(source="imagefolder", root=str(tmp_path), image_size=12))
    with pytest.raises(DataError, match="not a regular file"):
        shard_dataset(str(tmp_path), str(tmp_path / "out"), 10)


def test_num_classes_that_cannot_apply_is_refused(ray_session, tmp_path):
    for n in (2, 50):
        with pytest.raises(DataError, match=f"data.num_classes={n} but scikit-learn digits"):
            load_source(DataConfig(num_classes=n))
    _write_folder(tmp_path / "src", per_class=2)
    shard_dataset(str(tmp_path / "src"), str(tmp_path / "shards"), 4)
    with pytest.raises(DataError, match="data.num_classes=10 but the shards .* hold 2 classes"):
        load_source(DataConfig(source="parquet", root=str(tmp_path / "shards"), num_classes=10))


def test_damaged_parquet_columns_are_named(ray_session, tmp_path):
    cases = {"null label": (pa.table({"image": [b"x", b"y"], "label": pa.array([0, None], pa.int64()),
                                      "index": [0, 1]}), "'label' has 1 null value"),
             "string images": (pa.table({"image": ["a", "b"], "label": [0, 1], "index": [0, 1]}),
                               "column 'image' must hold encoded image bytes, got string")}
    for name, (table, message) in cases.items():
        root = tmp_path / name.replace(" ", "_")
        for split in ("train", "val"):
            (root / split).mkdir(parents=True)
            pq.write_table(table, root / split / "part-0.parquet")
        with pytest.raises(DataError, match=message):
            load_source(DataConfig(source="parquet", root=str(root)))


def test_webdataset_without_labels_is_named(ray_session, tmp_path):
    import io
    import tarfile

    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        with tarfile.open(tmp_path / split / "shard-000.tar", "w") as tar:
            buf = io.BytesIO()
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
            info = tarfile.TarInfo("s000.png")
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
    with pytest.raises(DataError, match=r"shard-000.tar': sample 's000' has members \['png'\]"):
        load_source(DataConfig(source="webdataset", root=str(tmp_path), num_classes=2))


def test_a_crafted_cifar_pickle_cannot_run_code(tmp_path):
    import os

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": Exploit()}, fh)
    with pytest.raises(DataError, match="not a plain CIFAR batch .*refusing to load posix.system"):
        load_source(DataConfig(source="cifar10", root=str(tmp_path)))
    assert not marker.exists()
    # the shard writer reads it the same way: a one-line error, exit 2
    assert shard_main([str(tmp_path), str(tmp_path / "out"), "--format", "cifar10"]) == 2
    assert not marker.exists()


# -- CIFAR as an ImageFolder, decoded once; the source's own defaults; the stratified test subset (#47) ----
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def test_cifar_image_folder_is_decoded_once_and_cached(tmp_path, monkeypatch):
    from core.data import decoded

    monkeypatch.setenv("CONTRASTIVE_CACHE", str(tmp_path / "cache"))
    arrays = _write_folder(tmp_path / "cifar", classes=CIFAR10, per_class=3, size=32)
    src = load_source(DataConfig(source="cifar10", root=str(tmp_path / "cifar"), image_size=32))
    assert (src.train_size, src.test.count(), src.num_classes) == (30, 30, 10)
    rows = src.train_rows  # held as arrays: no JPEG decoding per epoch
    assert rows.images.shape == (30, 32, 32, 3) and sorted(np.bincount(rows.labels)) == [3] * 10
    first = {int(i): rows.images[k] for k, i in enumerate(rows.index)}
    assert np.array_equal(first[int(rows.index[0])], arrays["train/airplane/0.png"])  # labels: sorted class folders
    assert rows.labels[0] == 0 and set(rows.labels[rows.labels == 9]) == {9}

    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(decoded, "decode_folder", must_not_decode)
    again = load_source(DataConfig(source="cifar10", root=str(tmp_path / "cifar"), image_size=32)).train_rows
    assert np.array_equal(np.asarray(again.images), np.asarray(rows.images))
    (tmp_path / "cifar" / "train" / "cat" / "0.png").unlink()  # the folder changed: decoded again
    with pytest.raises(AssertionError, match="decoded again"):
        load_source(DataConfig(source="cifar10", root=str(tmp_path / "cifar"), image_size=32))


def test_cifar_image_folder_is_refused_when_it_is_not_cifar(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRASTIVE_CACHE", str(tmp_path / "cache"))
    _write_folder(tmp_path / "two", classes=("cat", "dog"), size=32)
    with pytest.raises(DataError, match="has 2 class folders, not 10"):
        load_source(DataConfig(source="cifar10", root=str(tmp_path / "two")))
    _write_folder(tmp_path / "big", classes=CIFAR10, per_class=1, size=32)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "big" / "train" / "dog" / "0.png")
    with pytest.raises(DataError, match=r"every image must be 32x32; .*dog/0.png' is 40x40"):
        load_source(DataConfig(source="cifar10", root=str(tmp_path / "big")))


def test_a_source_brings_its_own_defaults_below_every_user_layer(tmp_path):
    from core.config import RunConfig, layered, resolve_layers

    cifar = layered(RunConfig(), overrides=["data.source=cifar10", "data.root=/data"])
    assert (cifar.data.image_size, cifar.data.num_classes, cifar.eval.corruption_suite) == (32, 10, "cifar_c")
    assert cifar.data.mean == (0.4914, 0.4822, 0.4465) and cifar.data.std == (0.2470, 0.2435, 0.2616)
    assert layered(RunConfig(), overrides=["data.source=cifar100", "data.root=/d"]).data.num_classes == 100
    # a study's defaults, a file and an override each win over the source's
    study = RunConfig().with_overrides(["model.width=24", "eval.corruption_suite=fast"])
    f = tmp_path / "c.yaml"
    f.write_text("data: {source: cifar10, root: /data, image_size: 24}\n")
    resolved = resolve_layers(study, [f], ["data.std=[0.2]"], base_origin="study defaults",
                              flags={"optim.epochs": 3})
    cfg = resolved.config
    assert (cfg.data.image_size, cfg.data.std, cfg.eval.corruption_suite, cfg.model.width, cfg.optim.epochs) == \
        (24, (0.2,), "fast", 24, 3)
    assert cfg.data.mean == (0.4914, 0.4822, 0.4465)  # what no layer above set stays the source's
    origins = resolved.origins
    assert origins["data.mean"] == "data.source=cifar10" and origins["data.image_size"] == f"config file {str(f)!r}"
    assert origins["data.std"] == "override" and origins["model.width"] == "study defaults"
    assert origins["optim.epochs"] == "flag" and resolved.origin("optim.lr") == "built-in default"
    printed = resolved.to_yaml()  # --print-config: every value with where it came from
    assert "# data.source=cifar10" in printed.split("mean:")[1].splitlines()[0]
    import yaml

    assert RunConfig.from_dict(yaml.safe_load(printed)) == cfg  # and it loads back as a config
    # the digits' defaults are the built-in ones: the main job's runs keep their names
    from core.runs.identity import config_hash

    assert config_hash(layered(RunConfig(), overrides=[])) == config_hash(RunConfig()) == "b777ea6a168b"


def test_the_test_limit_is_a_stratified_subset_the_same_for_every_run(tmp_path):
    digits = load_source(DataConfig(), test_limit=100)
    assert digits.test.count() == 100 and np.bincount(digits.test.labels).min() >= 9
    assert np.array_equal(digits.test.index, load_source(DataConfig(), test_limit=100).test.index)
    assert "100 of 397 test images (stratified by class" in digits.test_note
    assert load_source(DataConfig(), test_limit=1000).test.count() == 397  # more than there are: all of them
    _write_folder(tmp_path / "f", classes=("a", "b", "c", "d"), per_class=5, size=8)
    folder = load_source(DataConfig(source="imagefolder", root=str(tmp_path / "f"), image_size=8), test_limit=12)
    assert folder.test_size == 12 and sorted(np.bincount([r["label"] for r in folder.test.take_all()])) == [3] * 4
