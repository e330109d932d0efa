"""ImageFolder trees (``root/<class>/**/<image>``), listed the same way by every reader and writer.

Class folders are the sorted visible sub-directories; hidden and private entries (``.ipynb_checkpoints``,
``.DS_Store``, ``_tmp``) are skipped everywhere, as torchvision's ``find_classes`` does; only regular
files with an image extension are listed (a FIFO or a socket named ``x.jpg`` would block a reader).
A sample's stable id is a hash of its path relative to the split root. A root may be a URI
(``s3://bucket/imagenet/train``): it is listed through ``pyarrow.fs`` and its paths stay URIs.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from core.errors import DataError
from core.fs import as_uri, exists, filesystem, find_files, hidden, is_uri, list_dir

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def stable_index(key: str) -> int:
    """63-bit stable sample id from a string (relative path)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1


@dataclass(frozen=True)
class FolderListing:
    """The images of one split: sorted paths, labels by ``classes`` (the class-to-index map), stable ids."""

    root: str
    paths: list[str]
    labels: np.ndarray
    index: np.ndarray
    classes: list[str]


def _subdirectories(root: str) -> list[str]:
    if not exists(root):
        raise DataError(f"image folder {root!r} does not exist")
    return [i.base_name for i in list_dir(root, "image folder") if i.type == pafs.FileType.Directory]


def class_folders(root: str) -> list[str]:
    """The class names of an ImageFolder split: its visible sub-directories, sorted."""
    if is_uri(root):
        classes = sorted(d for d in _subdirectories(root) if not hidden(d))
    elif not os.path.isdir(root):
        raise DataError(f"image folder {root!r} does not exist")
    else:
        classes = sorted(d for d in os.listdir(root) if not hidden(d) and os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise DataError(f"image folder {root!r} has no class sub-directories")
    return classes


def _uri_images_by_class(root: str) -> dict[str, list[str]]:
    """The images of an object-store split by class folder, from one recursive listing of the split
    (paginated, 1,000 keys a request): a listing per class folder cost a round trip or more each, a
    minute for ImageNet's 1,000 folders against a local S3 API before a single image was read."""
    _, files = find_files(root, IMAGE_EXTENSIONS, "image folder")  # the platform's listing rule (core.fs)
    prefix = filesystem(root)[1].rstrip("/") + "/"
    by_class: dict[str, list[str]] = {}
    for path in files:
        name, sep, _ = path[len(prefix):].partition("/")
        if sep:  # a file beside the class folders is not an image of a class
            by_class.setdefault(name, []).append(as_uri(root, path))
    return by_class


def _images_under(folder: str) -> list[str]:
    found = []
    for dirpath, dirnames, files in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not hidden(d))
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            if hidden(name) or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            try:
                mode = os.stat(path).st_mode
            except OSError as exc:  # a dangling link, a symlink loop, no permission
                raise DataError(f"cannot read {path!r}: {exc.strerror}") from None
            if not stat.S_ISREG(mode):
                raise DataError(f"{path!r} is not a regular file (a FIFO, socket or device); remove it")
            found.append(path)
    return found


def list_image_folder(root: str, classes: list[str] | None = None) -> FolderListing:
    """An ImageFolder split as a listing. ``classes``: the class-to-index map to label by (a
    validation split takes the training split's, so a class missing from it shifts no label); a
    class folder outside that map is refused."""
    present = class_folders(root)
    classes = list(classes) if classes is not None else present
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise DataError(f"image folder {root!r}: class folder(s) {unknown[:5]} are not classes of the training "
                        f"split ({len(classes)} classes)")
    paths, labels, empty = [], [], []
    by_class = _uri_images_by_class(root) if is_uri(root) else None
    for label, name in enumerate(classes):
        if name not in present:
            continue
        found = by_class.get(name, []) if by_class is not None else _images_under(os.path.join(root, name))
        paths += found
        labels.append(np.full(len(found), label, np.int64))
        if not found:
            empty.append(name)
    if not paths:
        raise DataError(f"image folder {root!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    if empty:  # it would silently become a class with no images (an extra output, a wrong chance level)
        raise DataError(f"image folder {root!r}: class folder(s) {empty[:5]} hold no images; remove them")
    # sorted by their bytes as Arrow strings (UTF-8 order is code-point order, as numpy's sort was, without
    # numpy's 4 bytes a character: 280 MB for ImageNet's paths)
    order = pc.sort_indices(pa.array(paths, pa.string())).to_numpy()
    paths = [paths[i] for i in order]
    # every path is the split root joined with what lies below it (os.walk of root/CLASS): the prefix is cut,
    # the same relative path os.path.relpath gave at a tenth of the cost
    prefix = len(root.rstrip("/")) + 1 if is_uri(root) else len(os.path.join(root, ""))
    return FolderListing(root, paths, np.concatenate(labels)[order],
                         np.fromiter((stable_index(p[prefix:]) for p in paths), np.int64, len(paths)), classes)
