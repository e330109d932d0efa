"""In-memory image arrays: the embedded digits, CIFAR's on-disk python format, and the ordered Ray
Datasets and evaluation splits made from arrays (``{image: uint8 [H, W, 3], label, index}`` rows)."""

from __future__ import annotations

import io
import os
import pickle
from typing import Callable

import numpy as np
import pyarrow as pa
import ray.data
import torch
import torch.nn.functional as F

from core.errors import DataError

DIGITS_TEST_SIZE = 397  # fixed held-out split of scikit-learn's 1797 digits (stratified, seed 0)
ARRAY_BLOCK_ROWS = 2048

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # images uint8 [N, H, W, 3], labels [N], index [N]


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of uint8 ``[N, H, W, C]`` to ``[N, size, size, C]`` (no-op if already so)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    t = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def digits_arrays(image_size: int = 16) -> dict[str, Arrays]:
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


class _PlainUnpickler(pickle.Unpickler):
    """CIFAR's batches are pickles of dicts of lists, bytes and numpy arrays: allow only what rebuilds
    those, so a crafted file cannot run code (``os.system``, ``eval``...) while it is read."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("builtins", "bytearray"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not plain data)")
        return super().find_class(module, name)


def load_plain_pickle(path: str) -> object:
    """A pickle holding only plain data (dicts, lists, bytes, numbers, numpy arrays); anything that
    would construct another object is refused with a DataError naming the file."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return _PlainUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path!r} is not a plain CIFAR batch ({exc}); the CIFAR format is a pickle: "
                        f"read only files you trust, or share data as shards (python -m core.data.shard)") from None


CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}


def load_cifar(root: str, name: str, image_size: int) -> dict[str, Arrays]:
    """CIFAR-10/100 under ``root``, in either layout, as arrays (no download): torchvision's on-disk
    python format (``cifar-10-batches-py/``), or an ImageFolder of the 32 px images (``train/<class>/``
    and ``val/`` or ``test/``; labels are the sorted class folders, which is CIFAR's own label order),
    decoded once and cached (``core.data.decoded``)."""
    if os.path.isdir(os.path.join(root, CIFAR_FOLDERS[name])):
        out = _cifar_batches(root, name)
    elif os.path.isdir(os.path.join(root, "train")):
        out = _cifar_folder(root, name)
    else:
        raise DataError(f"{name}: data.root={root!r} holds neither {CIFAR_FOLDERS[name]}/ (torchvision's on-disk "
                        f"layout) nor train/ and val/ class folders (an ImageFolder of the 32 px images); this "
                        f"platform never downloads at run time")
    return {split: (resize_uint8(images, image_size), labels, index) for split, (images, labels, index) in out.items()}


def _cifar_folder(root: str, name: str) -> dict[str, Arrays]:
    from core.data.decoded import cached_folder
    from core.data.folders import list_image_folder

    splits = {"train": os.path.join(root, "train")}
    test = next((os.path.join(root, d) for d in ("val", "test") if os.path.isdir(os.path.join(root, d))), None)
    if test is None:
        raise DataError(f"{name}: {root!r} has train/ but no val/ or test/ class folders")
    splits["test"] = test
    train = list_image_folder(splits["train"])
    if len(train.classes) != CIFAR_CLASSES[name]:
        raise DataError(f"{name}: {splits['train']!r} has {len(train.classes)} class folders, not "
                        f"{CIFAR_CLASSES[name]}")
    listings = {"train": train, "test": list_image_folder(splits["test"], train.classes)}
    return {split: cached_folder(listing, (32, 32), f"{name} {split} ({splits[split]})")
            for split, listing in listings.items()}


def _cifar_batches(root: str, name: str) -> dict[str, Arrays]:
    """torchvision's on-disk python format (pickled batches, read with a plain-data unpickler)."""
    folder = os.path.join(root, CIFAR_FOLDERS[name])
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
            entry = load_plain_pickle(path)
            if not isinstance(entry, dict) or "data" not in entry or key not in entry:
                raise DataError(f"{path!r}: expected a dict with 'data' and {key!r} (a CIFAR batch)")
            xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(entry[key], dtype=np.int64))
        images, labels = np.concatenate(xs), np.concatenate(ys)
        check_labels(labels, CIFAR_CLASSES[name], f"{name} {split}")
        out[split] = (images, labels, np.arange(len(labels), dtype=np.int64))
    return out


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise DataError(f"{where}: label {int(labels[bad[0]])} at row {int(bad[0])} is outside [0, {num_classes})")


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
    depend on its seed only, not on timing); a task's own error (a ``DataError`` naming a sample) reaches the
    caller as raised, not wrapped in Ray Data's ``UserCodeException``, so the command prints it in one line."""
    ds.context.execution_options.preserve_order = True
    ds.context.raise_original_map_exception = True
    return ds
