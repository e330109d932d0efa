"""Image sources: a training set whose rows are shuffled per epoch, plus evaluation views.

Training rows come from a :class:`TrainRows` whose ``epoch(e, seed)`` gives that epoch's Ray
Dataset in a seeded order that mixes classes at any scale: array sources (the embedded digits,
CIFAR) draw a full permutation each epoch; file sources (ImageFolder, parquet shards, WebDataset
tars) permute their file list (and an ImageFolder its image list) each epoch, and shards written by
``python -m core.data.shard`` hold their rows in a seeded random order. Array rows are
``{image: uint8 [H, W, 3], label, index}`` (the stored image is the original); file rows are
``{bytes, label, index, path}``: the image stays encoded until the training stage cuts each view's
crop from it at decode time (``core.data.decode``).

Evaluation datasets (``train_eval``, ``test``) yield ``{image: uint8 [S, S, 3], label, index}``
(file sources add ``ok``, False for an undecodable image, and ``path``): the standard
resize-then-centre-crop view. ``index`` is a stable sample id that seeds augmentation (the
position in the embedded/CIFAR arrays, a hash of the relative path for files).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa
import ray.data

from core.config import DataConfig
from core.data.arrays import (  # noqa: F401  (re-exported: the names sources were read by)
    ArraySplit,
    arrays_to_dataset,
    as_dataset,
    blocks_dataset,
    check_labels,
    digits_arrays,
    in_order,
    load_cifar,
    resize_uint8,
)
from core.data.block_ops import ROWS_PER_BLOCK, permute_rows, read_files, read_shards, webdataset_rows
from core.data.budget import bounded, evaluation_budget
from core.data.decode import decode_eval_batch
from core.data.folders import FolderListing, list_image_folder
from core.data.manifest import read_manifest
from core.data.seeded_draws import stratified_positions
from core.errors import DataError  # noqa: F401  (re-exported)
from core.fs import filesystem, is_uri, join, list_files
from core.registry import SOURCES


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

    def order(self, epoch: int, seed: int) -> np.ndarray:
        return np.random.default_rng(epoch_seed(seed, epoch)).permutation(len(self.labels))

    def epoch(self, epoch: int, seed: int) -> ray.data.Dataset:
        perm = self.order(epoch, seed)
        return arrays_to_dataset(self.images[perm], self.labels[perm], self.index[perm])

    def share(self, epoch: int, seed: int, rank: int = 0, world: int = 1) -> "ArrayEpoch":
        """Rank ``rank``'s share of the epoch, straight from the arrays (no Ray Data pass): every
        ``world``-th sample of the epoch's permutation, so the ranks' k-th batches together are the
        k-th global batch of a single worker."""
        return ArrayEpoch(self, self.order(epoch, seed)[rank::world])


class ArrayEpoch:
    """One epoch of an in-memory training set as numpy batches gathered from the arrays in the epoch's
    order: the stream of an array source whose augmentation runs on the training device (each batch a
    gather of ``batch_size`` rows; nothing is put in the object store)."""

    def __init__(self, rows: ArrayRows, order: np.ndarray) -> None:
        self.rows, self.order = rows, order

    def count(self) -> int:
        return len(self.order)

    def iter_batches(self, batch_size: int, drop_last: bool = True, **_: object):
        n = len(self.order)
        for i in range(0, n - batch_size + 1 if drop_last else n, batch_size):
            take = self.order[i: i + batch_size]
            yield {"image": self.rows.images[take], "label": self.rows.labels[take], "index": self.rows.index[take]}

    def ordered(self) -> ray.data.Dataset:
        return arrays_to_dataset(self.images, self.labels, self.index)


def rows_permuted_in_blocks(ds: ray.data.Dataset, seed: int, epoch: int) -> ray.data.Dataset:
    """``ds`` with the rows of every block in this epoch's order (:func:`permute_rows`)."""
    return ds.map_batches(permute_rows, fn_kwargs={"seed": epoch_seed(seed, epoch)}, batch_size=None,
                          batch_format="pyarrow")


def _listing_dataset(paths: pa.Array, labels: np.ndarray, index: np.ndarray, rows: np.ndarray) -> ray.data.Dataset:
    """The listing's ``rows`` (positions, in order) as blocks of ``ROWS_PER_BLOCK``: each block's paths a compact
    array of its own (a slice would carry the whole listing's buffer into every block's object)."""
    block = lambda b: pa.table({"path": paths.take(rows[b]), "label": labels[rows[b]],  # noqa: E731
                                "index": index[rows[b]]})
    return in_order(blocks_dataset(len(rows), ROWS_PER_BLOCK, block).map_batches(
        read_files, batch_format="pandas", batch_size=None))


class FolderRows(TrainRows):
    """An ImageFolder listing; each epoch reads it in a fresh seeded permutation. The paths are one Arrow
    string array (about their UTF-8 bytes: 75 MB for ImageNet's 1.28M, where a numpy unicode array
    took 4 bytes a character, 280 MB, and each epoch's permuted copy as much again)."""

    encoded = True

    def __init__(self, paths: "list[str] | pa.Array", labels: np.ndarray, index: np.ndarray) -> None:
        self.paths = paths if isinstance(paths, pa.Array) else pa.array(list(paths), pa.string())
        self.labels, self.index = np.asarray(labels, np.int64), np.asarray(index, np.int64)

    @classmethod
    def of(cls, listing: FolderListing) -> "FolderRows":
        return cls(listing.paths, listing.labels, listing.index)

    def count(self) -> int:
        return len(self.paths)

    def epoch(self, epoch: int, seed: int) -> ray.data.Dataset:
        perm = np.random.default_rng(epoch_seed(seed, epoch)).permutation(len(self.paths))
        return _listing_dataset(self.paths, self.labels, self.index, perm)

    def ordered(self) -> ray.data.Dataset:
        return _listing_dataset(self.paths, self.labels, self.index, np.arange(len(self.paths)))

    def subset(self, n: int) -> "FolderRows":
        """A fixed, class-mixed subset of ``n`` images (a seeded permutation's first ``n``)."""
        return self.take(np.sort(np.random.default_rng(0).permutation(len(self.paths))[:n]))

    def take(self, positions: np.ndarray) -> "FolderRows":
        """The listing's rows at ``positions``, in that order."""
        return FolderRows(self.paths.take(positions), self.labels[positions], self.index[positions])


class ParquetRows(TrainRows):
    """Parquet shards (``image`` bytes, ``label``, ``index``, ``path``) and the rows each holds; file order
    redrawn each epoch."""

    encoded = True

    def __init__(self, fs, files: list[str], rows: list[int]) -> None:
        self.fs, self.files, self.rows = fs, list(files), [int(n) for n in rows]
        if len(self.rows) != len(self.files):
            raise ValueError(f"{len(self.files)} shards but {len(self.rows)} row counts")

    def count(self) -> int:
        return sum(self.rows)

    def epoch(self, epoch: int, seed: int) -> ray.data.Dataset:
        drawn = epoch_seed(seed, epoch)  # the file order and each shard's row order
        return self._read([int(i) for i in np.random.default_rng(drawn).permutation(len(self.files))], drawn)

    def ordered(self) -> ray.data.Dataset:
        return self._read(range(len(self.files)), None)

    def _read(self, order, seed: int | None) -> ray.data.Dataset:
        """The shards in ``order``, one block and one read task each (fused with the decode), their rows
        permuted within each shard by ``seed`` (None: as stored). Each block holds a placeholder row per row
        of its shard, because Ray Data bundles input blocks until they fill the decode's batch: one row per
        shard put 64 shards in a task. Not ``ray.data.read_parquet``: Ray 2.60's reader packs row groups into
        read units of up to 128 MiB, so small shards (CIFAR-size images; 100,000 tiny JPEGs in 100 shards)
        were read and decoded by one task on one core, the first batch after 32 s, after one task had read
        every shard's footer."""
        def block(i: int) -> pa.Table:
            codes = pa.array(np.zeros(self.rows[i], np.int32))
            return pa.table({"file": pa.DictionaryArray.from_arrays(codes, pa.array([self.files[i]]))})

        return in_order(ray.data.from_blocks([block(i) for i in order])).map_batches(
            read_shards, fn_kwargs={"fs": self.fs, "seed": seed}, batch_size=None, batch_format="pyarrow")


class WebDatasetRows(TrainRows):
    """WebDataset tar shards (``jpg``/``png`` + ``cls`` members); file order redrawn each epoch."""

    encoded = True

    def __init__(self, fs, files: list[str], count: int | None = None, num_classes: int | None = None) -> None:
        self.fs, self.files, self.n, self.num_classes = fs, list(files), count, num_classes

    def count(self) -> int:
        if self.n is None:
            self.n = self.ordered().count()
        return self.n

    def epoch(self, epoch: int, seed: int) -> ray.data.Dataset:
        perm = np.random.default_rng(epoch_seed(seed, epoch)).permutation(len(self.files))
        return rows_permuted_in_blocks(self._read([self.files[i] for i in perm]), seed, epoch)

    def ordered(self) -> ray.data.Dataset:
        return in_order(self._read(self.files))

    def _read(self, files: list[str]) -> ray.data.Dataset:
        return in_order(ray.data.read_webdataset(files, decoder=None, filesystem=self.fs)).map_batches(
            webdataset_rows, fn_kwargs={"num_classes": self.num_classes}, batch_size=ROWS_PER_BLOCK)


def check_webdataset(fs, path: str) -> None:
    """The first sample of a WebDataset tar holds an image (``.jpg``/``.jpeg``/``.png``) and a ``.cls`` label."""
    import tarfile

    try:
        with fs.open_input_file(path) as fh, tarfile.open(fileobj=fh, mode="r|*") as tar:
            names = [m.name for _, m in zip(range(16), tar)]
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"webdataset shard {path!r} is not a readable tar ({exc})") from None
    if not names:
        raise DataError(f"webdataset shard {path!r} is empty")
    key = names[0].rsplit(".", 1)[0]
    suffixes = {n.rsplit(".", 1)[-1].lower() for n in names if n.rsplit(".", 1)[0] == key}
    if "cls" not in suffixes or not suffixes & {"jpg", "jpeg", "png"}:
        raise DataError(f"webdataset shard {path!r}: sample {key!r} has members {sorted(suffixes)}; each sample needs "
                        f"an image (jpg/png) and a cls label")


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


@dataclass
class ImageSource:
    """The training rows, the evaluation views of both splits, and what the model needs to know."""

    train_rows: TrainRows
    train_eval: "ray.data.Dataset | ArraySplit"  # training images as evaluation views (probe, kNN bank)
    test: "ray.data.Dataset | ArraySplit"  # evaluation views
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    description: str = ""
    test_size: int | None = None  # images in the evaluation split, when known without reading it
    test_note: str = ""  # how the evaluation split was cut (eval.test_limit), for reports

    @property
    def train_size(self) -> int:
        return self.train_rows.count()


def _eval_views(rows: ray.data.Dataset, cfg: DataConfig) -> ray.data.Dataset:
    """Encoded rows -> uint8 evaluation views (resize-then-centre-crop, decoded as far as needed)."""
    return bounded(rows.map_batches(decode_eval_batch, fn_kwargs={"size": cfg.image_size, "crop": cfg.eval_crop},
                                    batch_size=ROWS_PER_BLOCK), evaluation_budget(cfg))


def image_folder_rows(root: str, classes: list[str] | None = None) -> tuple[FolderRows, list[str]]:
    """An ImageFolder tree (``root/CLASS/*.jpg``) as a listing; labels index ``classes`` (default: the
    sorted class folders)."""
    listing = list_image_folder(root, classes)
    return FolderRows.of(listing), listing.classes


def eval_folder_dataset(root: str, image_size: int, crop: float = 0.875) -> ray.data.Dataset:
    """Evaluation views of an ImageFolder tree (e.g. one ``corruption/severity`` folder of ImageNet-C)."""
    rows, _ = image_folder_rows(root)
    return _eval_views(rows.ordered(), DataConfig(image_size=image_size, eval_crop=crop))  # default budget


def parquet_rows(root: str, num_classes: int | None, split: str = "train") -> tuple[ParquetRows, int, list[str] | None]:
    """Parquet shards with columns ``image`` (encoded bytes), ``label``, ``index`` and ``path``
    (as written by ``python -m core.data.shard``), checked against their manifest when there is one;
    local path or any pyarrow/fsspec URL. Returns (rows, classes, the manifest's class names).
    A training split must hold every class it claims; a test split is labelled by the training classes."""
    import pyarrow.parquet as pq

    fs, files = list_files(root, (".parquet",), "parquet shards")
    manifest = read_manifest(fs, filesystem(root)[1])
    if manifest:
        manifest.check(files, lambda p: pq.ParquetFile(fs.open_input_file(p)).metadata.num_rows,
                       f"parquet shards {root!r}")
    labels, shard_of = _parquet_labels(fs, files, root)
    rows = np.bincount(shard_of, minlength=len(files)).tolist()
    if manifest:  # cheap, from the labels already read: relabelled shards of unchanged size are caught here
        manifest.check_classes(files, labels, shard_of, f"parquet shards {root!r}")
    claimed = len(manifest.classes) if manifest else int(labels.max()) + 1
    if num_classes is not None:
        check_labels(labels, num_classes, f"parquet shards {root!r}")
    if split == "train":
        if num_classes is not None and num_classes != claimed:
            raise DataError(f"data.num_classes={num_classes} but the shards {root!r} hold {claimed} classes"
                            + (" (manifest.json)" if manifest else f" (labels 0..{claimed - 1})"))
        present = np.unique(labels)
        if manifest and present.size != claimed:
            raise DataError(f"parquet shards {root!r}: manifest.json lists {claimed} classes but the shards hold "
                            f"labels of {present.size}; rewrite them with python -m core.data.shard")
    n_cls = num_classes or claimed
    check_labels(labels, n_cls, f"parquet shards {root!r}")
    return ParquetRows(fs, files, rows), n_cls, manifest.classes if manifest else None


def _parquet_labels(fs, files: list[str], root: str) -> tuple[np.ndarray, np.ndarray]:
    """The label column of the shards and each label's shard (its position in ``files``), after checking
    the columns' types (no nulls, integer labels, binary images)."""
    import pyarrow.dataset as pads

    try:
        meta = pads.dataset(files, format="parquet", filesystem=fs)
        missing = {"image", "label", "index"} - set(meta.schema.names)
        if missing:
            raise DataError(f"parquet shards {root!r} lack column(s) {sorted(missing)} "
                            f"(write them with python -m core.data.shard)")
        for column, kinds, what in (("label", ("int", "uint"), "integers"), ("index", ("int", "uint"), "integers"),
                                    ("image", ("binary", "large_binary"), "encoded image bytes")):
            kind = str(meta.schema.field(column).type)
            if not kind.startswith(kinds):
                raise DataError(f"parquet shards {root!r}: column {column!r} must hold {what}, got {kind}")
        table = meta.to_table(columns=["label", "__fragment_index"])
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError: name the shards, no traceback
        if isinstance(exc, DataError):
            raise
        raise DataError(f"parquet shards {root!r} are not readable parquet: {str(exc).splitlines()[0][:300]}") from None
    column = table.column("label")
    if column.null_count:
        raise DataError(f"parquet shards {root!r}: column 'label' has {column.null_count} null value(s)")
    labels = column.to_numpy()
    if labels.size == 0:
        raise DataError(f"parquet shards {root!r} hold no rows")
    return labels, table.column("__fragment_index").to_numpy()


@dataclass(frozen=True)
class SourceKind:
    """A data source ``data.source`` can name: how its rows and evaluation views are made, and what it
    declares about its images (``defaults``: dotted config keys -> values, the layer just above the
    built-in defaults: its natural image size, normalisation statistics, class count, corruption suite)."""

    name: str
    load: Callable[[DataConfig, "int | None"], ImageSource]  # (data config, eval.test_limit)
    needs_root: bool = True  # data.root is required (every source but the embedded one)
    summary: str = ""
    in_memory: bool = False  # its images are arrays held in memory (the object store's size is not the config's)
    defaults: Mapping[str, Any] = field(default_factory=dict)


def register_source(kind: SourceKind) -> SourceKind:
    return SOURCES.register(kind.name, kind)


def load_source(cfg: DataConfig, test_limit: int | None = None) -> ImageSource:
    """The training rows and evaluation views a DataConfig names; fails early with the offending path.
    ``test_limit`` (``eval.test_limit``): the test split is a seeded class-stratified subset of that many
    images (the same images for every run and every seed)."""
    return SOURCES.get(cfg.source).load(cfg, test_limit)


def _limited_test(positions_of: Callable[[], tuple[np.ndarray, np.ndarray]], limit: int | None) -> np.ndarray | None:
    """Positions of the stratified test subset (None: the whole split)."""
    if not limit:
        return None
    labels, index = positions_of()
    return stratified_positions(labels, index, limit, seed=0) if limit < len(labels) else None


def _test_note(kept: int, total: int) -> str:
    return "" if kept == total else f"{kept:,} of {total:,} test images (stratified by class, eval.test_limit)"


def _array_source(cfg: DataConfig, arrays: dict, num_classes: int, names: list[str], desc: str,
                  test_limit: int | None) -> ImageSource:
    if cfg.num_classes is not None and cfg.num_classes != num_classes:
        raise DataError(f"data.num_classes={cfg.num_classes} but {desc} has {num_classes} classes "
                        f"(leave data.num_classes unset)")
    if cfg.train_limit:
        arrays["train"] = _stratified_train(arrays["train"], cfg.train_limit)
    test, total = arrays["test"], len(arrays["test"][1])
    keep = _limited_test(lambda: (test[1], test[2]), test_limit)
    if keep is not None:
        test = tuple(a[keep] for a in test)
    return ImageSource(ArrayRows(*arrays["train"]), ArraySplit(*arrays["train"]), ArraySplit(*test), num_classes,
                       names, desc, test_size=len(test[1]), test_note=_test_note(len(test[1]), total))


def _stratified_train(train: tuple, limit: int) -> tuple:
    """The first ``limit`` training images of the digits (as before), a class-stratified subset of a
    class-sorted array source (CIFAR from an ImageFolder: its first images are all one class)."""
    labels = np.asarray(train[1])
    if limit >= len(labels):
        return train
    if len(np.unique(labels[:limit])) == len(np.unique(labels)):  # the first ones already mix the classes
        return tuple(a[:limit] for a in train)
    keep = stratified_positions(labels, train[2], limit, seed=0)
    return tuple(a[keep] for a in train)


def _digits(cfg: DataConfig, test_limit: int | None = None) -> ImageSource:
    return _array_source(cfg, digits_arrays(cfg.image_size), 10, [str(i) for i in range(10)],
                         "scikit-learn digits (embedded)", test_limit)


def _cifar(cfg: DataConfig, test_limit: int | None = None) -> ImageSource:
    arrays = load_cifar(cfg.root, cfg.source, cfg.image_size)  # type: ignore[arg-type]
    return _array_source(cfg, arrays, 10 if cfg.source == "cifar10" else 100, [], f"{cfg.source} at {cfg.root}",
                         test_limit)


def _split_roots(cfg: DataConfig) -> dict[str, str]:
    """``root/train`` and ``root/val`` (or ``root/test``) of a file source."""
    root = cfg.root or ""
    splits = {}
    for split, candidates in (("train", ("train",)), ("test", ("val", "test"))):
        path = next((join(root, c) if is_uri(root) else os.path.join(root, c) for c in candidates
                     if is_uri(root) or os.path.exists(os.path.join(root, c))), None)
        if path is None:
            raise DataError(f"{cfg.source} source {root!r} has no {' or '.join(candidates)!r} sub-directory")
        splits[split] = path
    return splits


def _file_source(cfg: DataConfig, train: TrainRows, test: TrainRows, num_classes: int,
                 names: list[str] | None = None, test_limit: int | None = None) -> ImageSource:
    """A file source's training rows (``data.train_limit`` applied) and evaluation views of both splits
    (``test_limit``: a stratified subset of a listed test split)."""
    if cfg.train_limit:
        train = train.subset(cfg.train_limit) if isinstance(train, FolderRows) else LimitedRows(train, cfg.train_limit)
    note = ""
    if test_limit:
        if not isinstance(test, FolderRows):
            raise DataError(f"eval.test_limit needs a test split whose labels are listed up front (digits, cifar10, "
                            f"cifar100, imagefolder); {cfg.source} is read shard by shard: leave it unset")
        keep, total = _limited_test(lambda: (test.labels, test.index), test_limit), test.count()
        test = test if keep is None else test.take(keep)
        note = _test_note(test.count(), total)
    return ImageSource(train, _eval_views(train.ordered(), cfg), _eval_views(test.ordered(), cfg),
                       cfg.num_classes or num_classes, names or [], f"{cfg.source} at {cfg.root}",
                       test_size=test.count() if not isinstance(test, WebDatasetRows) else None, test_note=note)


def _image_folder(cfg: DataConfig, test_limit: int | None = None) -> ImageSource:
    splits = _split_roots(cfg)
    train, names = image_folder_rows(splits["train"])
    test, test_names = image_folder_rows(splits["test"])
    if test_names != names:
        raise DataError(f"class folders differ between {splits['train']!r} and {splits['test']!r}")
    if cfg.num_classes is not None and cfg.num_classes != len(names):
        raise DataError(f"data.num_classes={cfg.num_classes} but {splits['train']!r} has {len(names)} class "
                        f"folders {names[:5]}{'...' if len(names) > 5 else ''}")
    return _file_source(cfg, train, test, len(names), names, test_limit)


def _parquet(cfg: DataConfig, test_limit: int | None = None) -> ImageSource:
    splits = _split_roots(cfg)
    train, num_classes, train_classes = parquet_rows(splits["train"], cfg.num_classes)
    test, _, test_classes = parquet_rows(splits["test"], num_classes, split="test")
    if train_classes and test_classes and train_classes != test_classes:
        raise DataError(f"the manifests of {splits['train']!r} and {splits['test']!r} list different classes "
                        f"({len(train_classes)} vs {len(test_classes)}): their labels mean different things; "
                        f"rewrite the shards with python -m core.data.shard")
    return _file_source(cfg, train, test, num_classes, test_limit=test_limit)


def _webdataset(cfg: DataConfig, test_limit: int | None = None) -> ImageSource:
    if cfg.num_classes is None:
        raise DataError("data.num_classes is required for webdataset sources")
    splits = _split_roots(cfg)
    train = WebDatasetRows(*list_files(splits["train"], (".tar",), "webdataset shards"), num_classes=cfg.num_classes)
    test = WebDatasetRows(*list_files(splits["test"], (".tar",), "webdataset shards"), num_classes=cfg.num_classes)
    for rows in (train, test):
        check_webdataset(rows.fs, rows.files[0])
    return _file_source(cfg, train, test, cfg.num_classes, test_limit=test_limit)


_CIFAR_SUMMARY = "{} from local disk: torchvision's layout or an ImageFolder of its 32 px images (held in memory)"
for _kind in (SourceKind("digits", _digits, needs_root=False, summary="scikit-learn's 8x8 digits, embedded",
                         in_memory=True, defaults={"data.image_size": 16, "data.mean": [0.5], "data.std": [0.25],
                                                   "eval.corruption_suite": "imagenet_c"}),
              SourceKind("cifar10", _cifar, summary=_CIFAR_SUMMARY.format("CIFAR-10"), in_memory=True,
                         defaults={"data.image_size": 32, "data.num_classes": 10,
                                   "data.mean": [0.4914, 0.4822, 0.4465], "data.std": [0.2470, 0.2435, 0.2616],
                                   "eval.corruption_suite": "cifar_c"}),
              SourceKind("cifar100", _cifar, summary=_CIFAR_SUMMARY.format("CIFAR-100"), in_memory=True,
                         defaults={"data.image_size": 32, "data.num_classes": 100,
                                   "data.mean": [0.5071, 0.4865, 0.4409], "data.std": [0.2673, 0.2564, 0.2762],
                                   "eval.corruption_suite": "cifar_c"}),
              SourceKind("imagefolder", _image_folder, summary="root/{train,val}/<class>/*.jpg, local or s3://"),
              SourceKind("parquet", _parquet, summary="shards of python -m core.data.shard, local or s3://"),
              SourceKind("webdataset", _webdataset, summary="WebDataset tars (jpg/png + cls)")):
    register_source(_kind)
