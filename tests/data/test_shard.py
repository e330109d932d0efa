"""The shard writer and reader refuse what would silently corrupt a data set (#49)."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.config import DataConfig
from core.data.shard import shard_dataset
from core.data.sources import load_source
from core.errors import DataError, LockedError
from tests.data.test_sources import _write_folder


def test_a_symlink_out_of_src_is_refused_and_nothing_undecodable_is_stored(tmp_path):
    _write_folder(tmp_path / "src", classes=("a", "b"), per_class=2)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    link = tmp_path / "src" / "train" / "a" / "passwd.jpg"
    link.symlink_to(secret)
    with pytest.raises(DataError, match=r"passwd.jpg' is a symbolic link to .*secret.txt', outside SRC"):
        shard_dataset(str(tmp_path / "src"), str(tmp_path / "out"), 4)
    link.unlink()
    (tmp_path / "src" / "train" / "a" / "text.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"text.jpg' does not decode as an image"):
        shard_dataset(str(tmp_path / "src"), str(tmp_path / "out2"), 4)


def test_two_builds_into_one_destination_cannot_mix(tmp_path):
    from core.io import DirectoryLock

    _write_folder(tmp_path / "src", classes=("a", "b"), per_class=2)
    dest = tmp_path / "out"
    with DirectoryLock(dest, "shard destination"):  # another build holds it
        with pytest.raises(LockedError, match=r"shard destination .*out' is being written by another process"):
            shard_dataset(str(tmp_path / "src"), str(dest), 2)
    shard_dataset(str(tmp_path / "src"), str(dest), 2)
    assert not (dest / ".lock").exists()  # released and removed when the build ends


def test_relabelled_shards_of_unchanged_size_are_refused(tmp_path):
    _write_folder(tmp_path / "src", classes=("a", "b", "c", "d", "e"), per_class=2)
    dest = tmp_path / "out"
    shard_dataset(str(tmp_path / "src"), str(dest), 4)
    shard = dest / "train" / "shard-00000.parquet"
    table = pq.read_table(shard)
    relabelled = table.set_column(table.schema.get_field_index("label"), "label",
                                  pa.array((table.column("label").to_numpy() + 1) % 5))
    pq.write_table(relabelled, shard)
    with pytest.raises(DataError, match=r"shard-00000.parquet' holds labels .* but manifest.json recorded .*rebuild it"):
        load_source(DataConfig(source="parquet", root=str(dest), image_size=12))


@pytest.mark.parametrize("field, value", [("shard_size", "abc"), ("seed", 1.5), ("total", None)])
def test_a_manifest_with_a_field_of_the_wrong_type_is_one_line(tmp_path, field, value):
    from core.data.manifest import Manifest

    raw = {"shards": {}, "classes": ["a"], "shard_size": 4, "seed": 0, "total": 0, field: value}
    with pytest.raises(DataError, match=rf"m.json: field '{field}' must be an integer, got {value!r}"):
        Manifest.from_json(json.dumps(raw).encode(), "m.json")


def test_a_read_only_destination_is_named():
    import errno

    from core.errors import storage_error

    exc = OSError(errno.EROFS, "Failed to open local file '/ro/dest/train/.shard-00000.parquet.7.tmp'. Detail: ...")
    assert str(storage_error(exc)) == "cannot write '/ro/dest/train/.shard-00000.parquet.7.tmp': read-only file system"


def _tar(root, members):
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        with tarfile.open(root / split / "shard-000.tar", "w") as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _png():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("members, message", [
    ([("s0.png", None), ("s0.cls", b"0"), ("s1.png", None), ("s1.cls", b"7")],
     r"webdataset sample 's1': label 7 is outside \[0, 2\)"),
    ([("s0.png", None), ("s0.cls", b"0"), ("s1.png", None), ("s1.cls", b"-1")], r"sample 's1': label -1 is outside"),
    ([("s0.png", None), ("s0.cls", b"1"), ("s1.png", None)], r"webdataset sample 's1' lacks a .cls label"),
])
def test_webdataset_labels_are_checked_as_they_stream(ray_session, tmp_path, members, message):
    """Only the first sample was checked up front: a bad label trained, then failed the evaluation with a
    traceback, and a later sample without .cls was a RayTaskError. Each is one line naming the sample."""
    from core.errors import platform_cause

    _tar(tmp_path, [(n, _png() if d is None else d) for n, d in members])
    src = load_source(DataConfig(source="webdataset", root=str(tmp_path), num_classes=2, image_size=8))
    with pytest.raises(Exception) as caught:
        src.train_rows.ordered().take_all()
    assert platform_cause(caught.value) is not None and caught.match(message)
