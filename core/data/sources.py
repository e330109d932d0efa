"""Image sources: a training set whose rows are shuffled per epoch, plus evaluation views.

Training rows come from a :class:`TrainRows` whose ``epoch(e, seed)`` gives that epoch's Ray
Dataset in a seeded order that mixes classes at any scale: array sources (the embedded digits,
CIFAR) are permuted once and their blocks reordered each epoch; file sources (ImageFolder,
parquet shards, WebDataset tars) permute their file list (and an ImageFolder its image list) each
epoch, and shards written by ``python -m core.data.shard`` hold their rows in a seeded random
order. Array rows are ``{image: uint8 [H, W, 3], label, index}`` (the stored image is the
original); file rows are ``{bytes, label, index, path}``: the image stays encoded until the
training stage cuts each view's crop from it at decode time (``core.data.decode``).

Evaluation datasets (``train_eval``, ``test``) yield ``{image: uint8 [S, S, 3], label, index}``
(file sources add ``ok``, False for an undecodable image, and ``path``): the standard
resize-then-centre-crop view. ``index`` is a stable sample id that seeds augmentation (the
position in the embedded/CIFAR arrays, a hash of the relative path for files).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import ray.data
import torch
import torch.nn.functional as F

from core.config import DataConfig
from core.data.decode import decode_eval_batch

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
DIGITS_TEST_SIZE = 397  # fixed held-out split of scikit-learn's 1797 digits (stratified, seed 0)


class DataError(ValueError):
    """Bad or missing input data; the message names the file or directory."""


ROWS_PER_BLOCK = 256  # listing rows per block of a file source (one decode task each)


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**32)


class TrainRows:
    """A training set as per-epoch Ray Datasets. ``encoded``: rows hold image bytes (cropped at
    decode time) rather than uint8 arrays."""

    encoded = False

    def count(self) -> int:
        raise NotImplementedError

    def epoch(self, epoch: int, seed: int) -> ray.data.Dataset:
        """This epoch's rows, in an order drawn from (seed, epoch)."""
        raise NotImplementedError

    def ordered(self) -> ray.data.Dataset:
        """The rows in a fixed order (what evaluation reads)."""
        raise NotImplementedError


class ArrayRows(TrainRows):
    """In-memory arrays (digits, CIFAR): every epoch a full permutation drawn from (seed, epoch).
    The order is the platform's, not a shuffle buffer's, so batches are the same from run to run."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, index: np.ndarray) -> None:
        self.images, self.labels, self.index = images, labels, index

    def count(self) -> int:
        return len(self.labels)

    def epoch(self, epoch: int, seed: int) -> ray.data.Dataset:
        perm = np.random.default_rng(epoch_seed(seed, epoch)).permutation(len(self.labels))
        return arrays_to_dataset(self.images[perm], self.labels[perm], self.index[perm])

    def ordered(self) -> ray.data.Dataset:
        return arrays_to_dataset(self.images, self.labels, self.index)


def permute_rows(block, seed: int):
    """Shuffle the rows of one block (a shard's row group) with a permutation drawn from the epoch's
    seed and the block's first sample id: a new order inside every shard each epoch, at the cost of
    reordering encoded bytes, not decoded views."""
    n = block.num_rows
    if n < 2:
        return block
    first = int(block.column("index")[0].as_py())
    perm = np.random.default_rng([seed, first & 0xFFFFFFFF, first >> 32]).permutation(n)
    return block.take(perm)


def rows_permuted_in_blocks(ds: ray.data.Dataset, seed: int, epoch: int) -> ray.data.Dataset:
    """``ds`` with the rows of every block in this epoch's order (:func:`permute_rows`)."""
    return ds.map_batches(permute_rows, fn_kwargs={"seed": epoch_seed(seed, epoch)}, batch_size=None,
                          batch_format="pyarrow")


def _listing_dataset(paths: np.ndarray, labels: np.ndarray, index: np.ndarray) -> ray.data.Dataset:
    rows = blocks_dataset(len(paths), ROWS_PER_BLOCK, lambda b: pa.table(
        {"path": pa.array(paths[b], pa.string()), "label": np.asarray(labels[b], np.int64),
         "index": np.asarray(index[b], np.int64)}))
    return in_order(rows.map_batches(_read_files, batch_format="pandas", batch_size=None))


def _read_files(batch: pd.DataFrame) -> pd.DataFrame:
    data = []
    for p in batch["path"]:
        try:
            with open(p, "rb") as fh:
                data.append(fh.read())
        except OSError:
            data.append(b"")  # decoding fails: counted and named as undecodable
    return batch.assign(bytes=data)


class FolderRows(TrainRows):
    """An ImageFolder listing; each epoch reads it in a fresh seeded permutation."""

    encoded = True

    def __init__(self, paths: list[str], labels: np.ndarray, index: np.ndarray) -> None:
        self.paths, self.labels, self.index = np.asarray(paths), np.asarray(labels, np.int64), np.asarray(index)

    def count(self) -> int:
        return len(self.paths)

    def epoch(self, epoch: int, seed: int) -> ray.data.Dataset:
        perm = np.random.default_rng(epoch_seed(seed, epoch)).permutation(len(self.paths))
        return _listing_dataset(self.paths[perm], self.labels[perm], self.index[perm])

    def ordered(self) -> ray.data.Dataset:
        return _listing_dataset(self.paths, self.labels, self.index)

    def subset(self, n: int) -> "FolderRows":
        """A fixed, class-mixed subset of ``n`` images (a seeded permutation's first ``n``)."""
        keep = np.sort(np.random.default_rng(0).permutation(len(self.paths))[:n])
        return FolderRows(list(self.paths[keep]), self.labels[keep], self.index[keep])


class ParquetRows(TrainRows):
    """Parquet shards (``image`` bytes, ``label``, ``index``, ``path``); file order redrawn each epoch."""

    encoded = True

    def __init__(self, fs, files: list[str], count: int) -> None:
        self.fs, self.files, self.n = fs, list(files), count

    def count(self) -> int:
        return self.n

    def epoch(self, epoch: int, seed: int) -> ray.data.Dataset:
        perm = np.random.default_rng(epoch_seed(seed, epoch)).permutation(len(self.files))
        ds = ray.data.read_parquet([self.files[i] for i in perm], filesystem=self.fs)
        return rows_permuted_in_blocks(ds.rename_columns({"image": "bytes"}), seed, epoch)

    def ordered(self) -> ray.data.Dataset:
        return in_order(ray.data.read_parquet(self.files, filesystem=self.fs).rename_columns({"image": "bytes"}))


class WebDatasetRows(TrainRows):
    """WebDataset tar shards (``jpg``/``png`` + ``cls`` members); file order redrawn each epoch."""

    encoded = True

    def __init__(self, files: list[str], count: int | None = None) -> None:
        self.files, self.n = list(files), count

    def count(self) -> int:
        if self.n is None:
            self.n = self.ordered().count()
        return self.n

    def epoch(self, epoch: int, seed: int) -> ray.data.Dataset:
        perm = np.random.default_rng(epoch_seed(seed, epoch)).permutation(len(self.files))
        return rows_permuted_in_blocks(self._read([self.files[i] for i in perm]), seed, epoch)

    def ordered(self) -> ray.data.Dataset:
        return in_order(self._read(self.files))

    @staticmethod
    def _read(files: list[str]) -> ray.data.Dataset:
        return ray.data.read_webdataset(files, decoder=None).map_batches(_webdataset_rows, batch_size=ROWS_PER_BLOCK)


def _webdataset_rows(batch: dict) -> dict:
    key = "jpg" if "jpg" in batch else "png"
    keys = batch["__key__"]
    return {"bytes": list(batch[key]), "label": np.asarray([int(bytes(c).decode() if isinstance(c, (bytes, bytearray))
                                                                else c) for c in batch["cls"]], np.int64),
            "index": np.asarray([stable_index(str(k)) for k in keys], np.int64), "path": np.asarray(keys)}


@dataclass
class ImageSource:
    """The training rows, the evaluation views of both splits, and what the model needs to know."""

    train_rows: TrainRows
    train_eval: "ray.data.Dataset | ArraySplit"  # training images as evaluation views (probe, kNN bank)
    test: "ray.data.Dataset | ArraySplit"  # evaluation views
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    description: str = ""

    @property
    def train_size(self) -> int:
        return self.train_rows.count()


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of uint8 ``[N, H, W, C]`` to ``[N, size, size, C]`` (no-op if already so)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    t = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def digits_arrays(image_size: int = 16) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """scikit-learn's 8x8 digits (real scanned handwriting, shipped inside the package), as RGB
    uint8 upscaled to ``image_size``, split into a fixed stratified train/test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images / 16.0 * 255).astype(np.uint8)[..., None].repeat(3, axis=-1)
    images = resize_uint8(images, image_size)
    index = np.arange(len(images))
    tr, te = train_test_split(index, test_size=DIGITS_TEST_SIZE, stratify=digits.target, random_state=0)
    return {split: (images[i], digits.target[i].astype(np.int64), i.astype(np.int64))
            for split, i in (("train", np.sort(tr)), ("test", np.sort(te)))}


class ArraySplit:
    """An in-memory evaluation split (the embedded digits, CIFAR arrays): batches straight from the
    arrays, without a Ray Data pass per read (the evaluation stage reads a split several times).
    ``to_dataset()`` gives the Ray Dataset a TorchTrainer needs."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, index: np.ndarray) -> None:
        self.images, self.labels, self.index = images, np.asarray(labels, np.int64), np.asarray(index, np.int64)

    def count(self) -> int:
        return len(self.labels)

    def iter_batches(self, batch_size: int = 512, batch_format: str = "numpy", **_: object):
        for i in range(0, len(self.labels), batch_size):
            yield {"image": self.images[i: i + batch_size], "label": self.labels[i: i + batch_size],
                   "index": self.index[i: i + batch_size]}

    def take_all(self) -> list[dict]:
        return [{"image": im, "label": int(lb), "index": int(ix)} for im, lb, ix in zip(self.images, self.labels,
                                                                                     self.index)]

    def to_dataset(self) -> ray.data.Dataset:
        return arrays_to_dataset(self.images, self.labels, self.index)


def as_dataset(split) -> ray.data.Dataset:
    """A Ray Dataset for an evaluation split (TorchTrainer's ``datasets`` take only those)."""
    return split.to_dataset() if isinstance(split, ArraySplit) else split


ARRAY_BLOCK_ROWS = 2048


def arrays_to_dataset(images: np.ndarray, labels: np.ndarray, index: np.ndarray) -> ray.data.Dataset:
    """Arrays -> a Dataset of ``image``/``label``/``index`` rows in this order (Arrow blocks of
    ``ARRAY_BLOCK_ROWS``), read back in order (``preserve_order``). Starts no Ray task."""
    from ray.data.extensions import ArrowTensorArray

    labels, index = np.asarray(labels, dtype=np.int64), np.asarray(index, dtype=np.int64)
    return blocks_dataset(len(labels), ARRAY_BLOCK_ROWS, lambda b: pa.table(
        {"image": ArrowTensorArray.from_numpy(np.ascontiguousarray(images[b])), "label": labels[b],
         "index": index[b]}))


def blocks_dataset(n: int, block_rows: int, table: Callable[[slice], pa.Table]) -> ray.data.Dataset:
    """In-memory rows ``0..n`` as an ordered dataset of blocks of ``block_rows`` (``table(rows)`` builds
    one). ``from_blocks`` computes the block metadata here: ``from_arrow``/``from_pandas`` would run a
    Ray task for it, which never starts while Train workers hold every CPU (rank 0 builds each epoch's
    dataset inside the worker group: a deadlock on a 2-CPU machine)."""
    return in_order(ray.data.from_blocks([table(slice(i, i + block_rows)) for i in range(0, n, block_rows)]))


def in_order(ds: ray.data.Dataset) -> ray.data.Dataset:
    """The dataset's rows come out in its order, whatever order its tasks finish in (a run's batches
    depend on its seed only, not on timing)."""
    ds.context.execution_options.preserve_order = True
    return ds


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise DataError(f"{where}: label {int(labels[bad[0]])} at row {int(bad[0])} is outside [0, {num_classes})")


def load_cifar(root: str, name: str, image_size: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """CIFAR-10/100 from torchvision's on-disk python format under ``root`` (no download)."""
    folder = os.path.join(root, "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    files = ({"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]} if name == "cifar10"
             else {"train": ["train"], "test": ["test"]})
    key = "labels" if name == "cifar10" else "fine_labels"
    out = {}
    for split, names in files.items():
        xs, ys = [], []
        for fname in names:
            path = os.path.join(folder, fname)
            if not os.path.isfile(path):
                raise DataError(f"{name}: missing file {path!r} (expected torchvision's on-disk layout under "
                                f"data.root={root!r}; this platform never downloads at run time)")
            with open(path, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(entry[key], dtype=np.int64))
        images, labels = np.concatenate(xs), np.concatenate(ys)
        _check_labels(labels, 10 if name == "cifar10" else 100, f"{name} {split}")
        out[split] = (resize_uint8(images, image_size), labels, np.arange(len(labels), dtype=np.int64))
    return out


def stable_index(key: str) -> int:
    """63-bit stable sample id from a string (relative path)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1


def _eval_views(rows: ray.data.Dataset, cfg: DataConfig) -> ray.data.Dataset:
    """Encoded rows -> uint8 evaluation views (resize-then-centre-crop, decoded as far as needed)."""
    return rows.map_batches(decode_eval_batch, fn_kwargs={"size": cfg.image_size, "crop": cfg.eval_crop},
                            batch_size=ROWS_PER_BLOCK)


def _list_image_folder(root: str) -> tuple[list[str], list[str]]:
    if not os.path.isdir(root):
        raise DataError(f"image folder {root!r} does not exist")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise DataError(f"image folder {root!r} has no class sub-directories")
    paths, empty = [], []
    for c in classes:
        found = []
        for dirpath, _, files in os.walk(os.path.join(root, c)):
            found += [os.path.join(dirpath, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
        paths += found
        if not found:
            empty.append(c)
    if not paths:
        raise DataError(f"image folder {root!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    if empty:  # it would silently become a class with no images (an extra output, a wrong chance level)
        raise DataError(f"image folder {root!r}: class folder(s) {empty[:5]} hold no images; remove them")
    return sorted(paths), classes


def image_folder_rows(root: str) -> tuple[FolderRows, list[str]]:
    """An ImageFolder tree (``root/CLASS/*.jpg``) as a listing; labels are sorted folder names."""
    paths, classes = _list_image_folder(root)
    class_idx = {c: i for i, c in enumerate(classes)}
    rel = [os.path.relpath(p, root) for p in paths]
    return FolderRows(paths, np.asarray([class_idx[r.split(os.sep)[0]] for r in rel]),
                      np.asarray([stable_index(r) for r in rel], np.int64)), classes


def eval_folder_dataset(root: str, image_size: int, crop: float = 0.875) -> ray.data.Dataset:
    """Evaluation views of an ImageFolder tree (e.g. one ``corruption/severity`` folder of ImageNet-C)."""
    rows, _ = image_folder_rows(root)
    return _eval_views(_listing_dataset(rows.paths, rows.labels, rows.index), DataConfig(image_size=image_size,
                                                                                         eval_crop=crop))


def _parquet_files(root: str):
    """``*.parquet`` files under ``root`` (local path or pyarrow/fsspec URL such as s3://, gs://)."""
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(root) if "://" in root else (pafs.LocalFileSystem(), os.path.abspath(root))
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise DataError(f"parquet shards {root!r}: {exc}") from exc
    files = sorted(i.path for i in infos if i.is_file and i.path.endswith(".parquet")
                   and not os.path.basename(i.path).startswith((".", "_")))
    if not files:
        raise DataError(f"parquet shards {root!r}: no *.parquet files")
    return fs, files


def parquet_rows(root: str, num_classes: int | None) -> tuple[ParquetRows, int]:
    """Parquet shards with columns ``image`` (encoded bytes), ``label``, ``index`` and ``path``
    (as written by ``python -m core.data.shard``); local path or any pyarrow/fsspec URL."""
    import pyarrow.dataset as pads

    fs, files = _parquet_files(root)
    manifest = _check_manifest(fs, root, files)
    if manifest and num_classes is None:
        num_classes = len(manifest["classes"])
    try:
        meta = pads.dataset(files, format="parquet", filesystem=fs)
        missing = {"image", "label", "index"} - set(meta.schema.names)
        if missing:
            raise DataError(f"parquet shards {root!r} lack column(s) {sorted(missing)} "
                            f"(write them with python -m core.data.shard)")
        if not str(meta.schema.field("label").type).startswith(("int", "uint")):
            raise DataError(f"parquet shards {root!r}: column 'label' must hold integers, "
                            f"got {meta.schema.field('label').type}")
        labels = meta.to_table(columns=["label"]).column("label").to_numpy()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError: name the shards, no traceback
        if isinstance(exc, DataError):
            raise
        raise DataError(f"parquet shards {root!r} are not readable parquet: {str(exc).splitlines()[0][:300]}") from None
    if labels.size == 0:
        raise DataError(f"parquet shards {root!r} hold no rows")
    n_cls = num_classes or int(labels.max()) + 1
    _check_labels(labels, n_cls, f"parquet shards {root!r}")
    return ParquetRows(fs, files, int(labels.size)), n_cls


def _check_manifest(fs, root: str, files: list[str]) -> dict | None:
    """Verify shards against ``manifest.json`` when there is one (written by ``core.data.shard``):
    every listed shard present with its row count, no unlisted shard, the build complete."""
    import pyarrow.parquet as pq

    base = root.split("://", 1)[1] if "://" in root else os.path.abspath(root)
    try:
        with fs.open_input_stream(f"{base.rstrip('/')}/manifest.json") as f:
            manifest = json.loads(f.read())
    except (FileNotFoundError, OSError):
        return None
    except ValueError as exc:
        raise DataError(f"parquet shards {root!r}: unreadable manifest.json ({exc})") from exc
    listed = manifest.get("shards", {})
    found = {os.path.basename(f): f for f in files}
    missing = sorted(set(listed) - set(found))
    extra = sorted(set(found) - set(listed))
    if missing or extra or not manifest.get("complete", True):
        raise DataError(f"parquet shards {root!r} do not match manifest.json: "
                        + "; ".join(x for x in (f"missing {missing[:5]}" if missing else "",
                                                f"not in the manifest {extra[:5]}" if extra else "",
                                                "the build did not finish (rerun python -m core.data.shard)"
                                                if not manifest.get("complete", True) else "") if x))
    for name, path in found.items():
        rows = pq.ParquetFile(fs.open_input_file(path)).metadata.num_rows
        if rows != listed[name]["rows"]:
            raise DataError(f"parquet shard {path!r} holds {rows} rows, manifest.json says {listed[name]['rows']}")
    return manifest


def _tar_files(root: str) -> list[str]:
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(root) if "://" in root else (pafs.LocalFileSystem(), os.path.abspath(root))
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"webdataset shards {root!r}: {exc}") from exc
    files = sorted(i.path for i in infos if i.is_file and i.path.endswith(".tar"))
    if not files:
        raise DataError(f"webdataset shards {root!r}: no *.tar files")
    prefix = root.split("://")[0] + "://" if "://" in root else ""
    return [prefix + f for f in files]


def load_source(cfg: DataConfig, seed: int = 0) -> ImageSource:
    """The training rows and evaluation views a DataConfig names; fails early with the offending path."""
    if cfg.source == "digits":
        arrays = digits_arrays(cfg.image_size)
        num_classes, names, desc = 10, [str(i) for i in range(10)], "scikit-learn digits (embedded)"
    elif cfg.source in ("cifar10", "cifar100"):
        arrays = load_cifar(cfg.root, cfg.source, cfg.image_size)  # type: ignore[arg-type]
        num_classes, names, desc = (10 if cfg.source == "cifar10" else 100), [], f"{cfg.source} at {cfg.root}"
    else:
        return _load_file_source(cfg)
    if cfg.train_limit:
        arrays["train"] = tuple(a[: cfg.train_limit] for a in arrays["train"])  # type: ignore[assignment]
    return ImageSource(ArrayRows(*arrays["train"]), ArraySplit(*arrays["train"]),
                       ArraySplit(*arrays["test"]), num_classes, names, desc)


def _load_file_source(cfg: DataConfig) -> ImageSource:
    """ImageFolder / parquet / WebDataset: ``root/train`` and ``root/val`` (or ``root/test``)."""
    root = cfg.root or ""
    splits = {}
    for split, candidates in (("train", ("train",)), ("test", ("val", "test"))):
        path = next((os.path.join(root, c) for c in candidates if "://" in root or os.path.exists(os.path.join(root, c))), None)
        if path is None:
            raise DataError(f"{cfg.source} source {root!r} has no {' or '.join(candidates)!r} sub-directory")
        splits[split] = path
    names: list[str] = []
    if cfg.source == "imagefolder":
        train, names = image_folder_rows(splits["train"])
        test, test_names = image_folder_rows(splits["test"])
        if test_names != names:
            raise DataError(f"class folders differ between {splits['train']!r} and {splits['test']!r}")
        num_classes = len(names)
        if cfg.num_classes is not None and cfg.num_classes != num_classes:
            raise DataError(f"data.num_classes={cfg.num_classes} but {splits['train']!r} has {num_classes} class "
                            f"folders {names[:5]}{'...' if num_classes > 5 else ''}")
        if cfg.train_limit:
            train = train.subset(cfg.train_limit)
    elif cfg.source == "parquet":
        train, num_classes = parquet_rows(splits["train"], cfg.num_classes)
        test, _ = parquet_rows(splits["test"], num_classes)
    else:
        if cfg.num_classes is None:
            raise DataError("data.num_classes is required for webdataset sources")
        train, test = WebDatasetRows(_tar_files(splits["train"])), WebDatasetRows(_tar_files(splits["test"]))
        num_classes = cfg.num_classes
    if cfg.train_limit and not isinstance(train, FolderRows):
        train = LimitedRows(train, cfg.train_limit)
    return ImageSource(train, _eval_views(train.ordered(), cfg), _eval_views(test.ordered(), cfg),
                       cfg.num_classes or num_classes, names, f"{cfg.source} at {root}")


class LimitedRows(TrainRows):
    """The first ``limit`` rows of another training set (quick runs)."""

    encoded = True

    def __init__(self, rows: TrainRows, limit: int) -> None:
        self.rows, self.limit = rows, limit

    def count(self) -> int:
        return min(self.rows.count(), self.limit)

    def epoch(self, epoch: int, seed: int) -> ray.data.Dataset:
        # a fixed subset (shards are written in a random order: class-mixed), reordered within each block
        return rows_permuted_in_blocks(self.ordered(), seed, epoch)

    def ordered(self) -> ray.data.Dataset:
        return self.rows.ordered().limit(self.limit)
