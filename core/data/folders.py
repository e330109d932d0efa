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
import pyarrow.fs as pafs

from core.errors import DataError
from core.fs import as_uri, exists, find_files, hidden, is_uri, list_dir

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


def _images_under(folder: str) -> list[str]:
    if is_uri(folder):  # the platform's listing rule (core.fs); the paths stay URIs
        return [as_uri(folder, p) for p in find_files(folder, IMAGE_EXTENSIONS, "image folder")[1]]
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
    for label, name in enumerate(classes):
        if name not in present:
            continue
        found = _images_under(os.path.join(root, name))
        paths += found
        labels += [label] * len(found)
        if not found:
            empty.append(name)
    if not paths:
        raise DataError(f"image folder {root!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    if empty:  # it would silently become a class with no images (an extra output, a wrong chance level)
        raise DataError(f"image folder {root!r}: class folder(s) {empty[:5]} hold no images; remove them")
    order = np.argsort(np.asarray(paths), kind="stable")
    paths = [paths[i] for i in order]
    rel = [p[len(root.rstrip("/")) + 1:] for p in paths] if is_uri(root) else [os.path.relpath(p, root) for p in paths]
    return FolderListing(root, paths, np.asarray(labels, np.int64)[order],
                         np.asarray([stable_index(r) for r in rel], np.int64), classes)
