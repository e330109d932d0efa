"""Image sources as Ray Datasets with rows ``{image: uint8 [H, W, 3], label: int, index: int}``.

Every image is decoded and resized to ``data.image_size`` once, at the source; file-based
sources also carry ``ok`` (False for an undecodable image, which training skips and counts)
and ``path`` (to name it in warnings). ``index`` is a stable sample id used to seed
augmentation (position in the embedded/CIFAR arrays, a hash of the relative path for files).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from dataclasses import dataclass, field

import numpy as np
import ray.data
import torch
import torch.nn.functional as F

from core.config import DataConfig

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
DIGITS_TEST_SIZE = 397  # fixed held-out split of scikit-learn's 1797 digits (stratified, seed 0)


class DataError(ValueError):
    """Bad or missing input data; the message names the file or directory."""


@dataclass
class ImageSource:
    """Train and test datasets plus what the model needs to know about them."""

    train: ray.data.Dataset
    test: ray.data.Dataset
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    description: str = ""
    eval_train: ray.data.Dataset | None = None  # training images as evaluation views (default: ``train``)

    @property
    def train_eval(self) -> ray.data.Dataset:
        """The training split as the evaluation stage reads it (probe and kNN bank)."""
        return self.eval_train if self.eval_train is not None else self.train


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


def arrays_to_dataset(images: np.ndarray, labels: np.ndarray, index: np.ndarray) -> ray.data.Dataset:
    return ray.data.from_items([{"image": im, "label": int(lb), "index": int(ix)}
                                for im, lb, ix in zip(images, labels, index)])


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


def decode_image(data: bytes, image_size: int) -> np.ndarray:
    """Image bytes -> RGB uint8 ``[size, size, 3]``; raises on undecodable bytes."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(im.convert("RGB").resize((image_size, image_size), Image.BILINEAR), dtype=np.uint8)


def decode_batch(batch: dict, image_size: int, image_col: str = "bytes", path_col: str = "path") -> dict:
    """Decode a batch of encoded images; undecodable ones get ``ok=False`` and a zero image."""
    images, ok = [], []
    for data in batch[image_col]:
        try:
            images.append(decode_image(data, image_size))
            ok.append(True)
        except Exception:  # any decoder failure: corrupt, truncated, not an image
            images.append(np.zeros((image_size, image_size, 3), np.uint8))
            ok.append(False)
    out = {"image": np.stack(images), "label": np.asarray(batch["label"], dtype=np.int64),
           "index": np.asarray(batch["index"], dtype=np.int64), "ok": np.asarray(ok)}
    out["path"] = np.asarray(batch[path_col]) if path_col in batch else np.asarray([""] * len(ok))
    return out


def _list_image_folder(root: str) -> tuple[list[str], list[str]]:
    if not os.path.isdir(root):
        raise DataError(f"image folder {root!r} does not exist")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise DataError(f"image folder {root!r} has no class sub-directories")
    paths = []
    for c in classes:
        for dirpath, _, files in os.walk(os.path.join(root, c)):
            paths += [os.path.join(dirpath, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not paths:
        raise DataError(f"image folder {root!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return sorted(paths), classes


def image_folder_dataset(root: str, image_size: int) -> tuple[ray.data.Dataset, list[str]]:
    """An ImageFolder tree (``root/CLASS/*.jpg``); labels are sorted folder names."""
    paths, classes = _list_image_folder(root)
    class_idx = {c: i for i, c in enumerate(classes)}
    rows = [{"path": p, "label": class_idx[os.path.relpath(p, root).split(os.sep)[0]],
             "index": stable_index(os.path.relpath(p, root))} for p in paths]

    def read(batch: dict) -> dict:
        data = []
        for p in batch["path"]:
            try:
                with open(p, "rb") as fh:
                    data.append(fh.read())
            except OSError:
                data.append(b"")
        return decode_batch({**batch, "bytes": data}, image_size)

    return ray.data.from_items(rows).map_batches(read, batch_size=256), classes


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


def parquet_dataset(root: str, image_size: int, num_classes: int | None) -> tuple[ray.data.Dataset, int]:
    """Parquet shards with columns ``image`` (encoded bytes), ``label`` and optionally ``index``/``path``
    (as written by ``python -m core.data.shard``); local path or any pyarrow/fsspec URL."""
    import pyarrow.dataset as pads

    fs, files = _parquet_files(root)
    labels = pads.dataset(files, format="parquet", filesystem=fs).to_table(columns=["label"]).column("label").to_numpy()
    if labels.size == 0:
        raise DataError(f"parquet shards {root!r} hold no rows")
    n_cls = num_classes or int(labels.max()) + 1
    _check_labels(labels, n_cls, f"parquet shards {root!r}")
    ds = ray.data.read_parquet(files, filesystem=fs)
    if "index" not in ds.columns():
        raise DataError(f"parquet shards {root!r} have no 'index' column (write them with python -m core.data.shard)")
    return ds.map_batches(decode_batch, fn_kwargs={"image_size": image_size, "image_col": "image"},
                          batch_size=256), n_cls


def webdataset_dataset(root: str, image_size: int) -> ray.data.Dataset:
    """WebDataset tar shards with ``jpg``/``png`` and ``cls`` members (local or object storage)."""
    ds = ray.data.read_webdataset(root, decoder=None)

    def convert(batch: dict) -> dict:
        key = "jpg" if "jpg" in batch else "png"
        keys = batch["__key__"]
        return decode_batch({"bytes": batch[key], "label": [int(bytes(c).decode() if isinstance(c, (bytes, bytearray)) else c)
                                                           for c in batch["cls"]],
                             "index": [stable_index(str(k)) for k in keys], "path": keys}, image_size)

    return ds.map_batches(convert, batch_size=256)


def load_source(cfg: DataConfig) -> ImageSource:
    """The train/test datasets a DataConfig names; fails early with the offending path."""
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
    return ImageSource(arrays_to_dataset(*arrays["train"]), arrays_to_dataset(*arrays["test"]),
                       num_classes, names, desc)


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
        train, names = image_folder_dataset(splits["train"], cfg.image_size)
        test, test_names = image_folder_dataset(splits["test"], cfg.image_size)
        if test_names != names:
            raise DataError(f"class folders differ between {splits['train']!r} and {splits['test']!r}")
        num_classes = len(names)
    elif cfg.source == "parquet":
        train, num_classes = parquet_dataset(splits["train"], cfg.image_size, cfg.num_classes)
        test, _ = parquet_dataset(splits["test"], cfg.image_size, num_classes)
    else:
        if cfg.num_classes is None:
            raise DataError("data.num_classes is required for webdataset sources")
        train, test, num_classes = (webdataset_dataset(splits["train"], cfg.image_size),
                                    webdataset_dataset(splits["test"], cfg.image_size), cfg.num_classes)
    if cfg.train_limit:
        train = train.limit(cfg.train_limit)
    return ImageSource(train, test, cfg.num_classes or num_classes, names, f"{cfg.source} at {root}")
