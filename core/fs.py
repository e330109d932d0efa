"""Local paths and object-store URIs, one rule for the whole platform.

A string with ``://`` (``s3://bucket/prefix``, ``gs://...``, ``file:///...``) is a URI opened through
``pyarrow.fs``; anything else is a local path, made absolute. Object-store endpoints and credentials
come only from the standard environment (``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), never from the code.
Listings skip hidden entries (``.name``) and private ones (``_name``), as torchvision's ImageFolder does.
A path inside an object store (what ``pyarrow.fs`` lists: ``bucket/key``) becomes a URI again with
:func:`as_uri` and back with :func:`inner_path`, so a listing of ``s3://...`` gives ``s3://...`` paths that
every reader opens with :func:`open_input`. A root that does not exist is a :class:`DataError`; a store
that cannot be reached, read or written is a :class:`StorageError`.
"""

from __future__ import annotations

import os
from typing import Iterable

import pyarrow.fs as pafs

from core.errors import DataError, StorageError


def is_uri(path: str) -> bool:
    return "://" in str(path)


def absolute(path: str) -> str:
    """A URI as it is; a local path with ``~`` expanded and made absolute (where this process runs: a path
    handed to Ray's processes, whose working directory is another, must not be relative)."""
    return str(path) if is_uri(path) else os.path.abspath(os.path.expanduser(str(path)))


def scheme(path: str) -> str | None:
    """``s3`` of ``s3://bucket/key``; None for a local path."""
    return str(path).split("://", 1)[0] if is_uri(path) else None


def inner_path(path: str) -> str:
    """The path inside its file system: ``bucket/key`` of ``s3://bucket/key``; a local path as it is."""
    return str(path).split("://", 1)[1] if is_uri(path) else str(path)


def as_uri(root: str, inner: str) -> str:
    """A listed path (inside the file system of ``root``) as the kind of path ``root`` is: a URI of the
    same scheme, or a local path."""
    return f"{scheme(root)}://{inner}" if is_uri(root) else inner


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow file system, the path inside it) for a local path or a URI."""
    path = str(path)
    if not is_uri(path):
        return pafs.LocalFileSystem(), absolute(path)
    try:
        return pafs.FileSystem.from_uri(path)
    except (ValueError, OSError) as exc:
        raise StorageError(f"{path!r}: {exc}") from None


def open_input(path: str, store: pafs.FileSystem | None = None):
    """A local path or a URI opened for reading (``store``: its file system, when the caller has it)."""
    if not is_uri(path):
        return open(path, "rb")
    return (store or filesystem(path)[0]).open_input_stream(inner_path(path))


def exists(path: str) -> bool:
    """Whether a file or directory (an object or a prefix of objects) is there."""
    fs, base = filesystem(path)
    try:
        return fs.get_file_info(base).type != pafs.FileType.NotFound
    except OSError as exc:
        raise StorageError(f"cannot read {path!r}: {exc}") from None


def list_dir(path: str, what: str = "directory", recursive: bool = False) -> list[pafs.FileInfo]:
    """The entries of a directory (local path or URI; all levels with ``recursive``), hidden ones
    included; a directory that does not exist has none. A store that cannot be listed is a StorageError."""
    fs, base = filesystem(path)
    try:
        return fs.get_file_info(pafs.FileSelector(base, recursive=recursive, allow_not_found=True))
    except OSError as exc:
        raise StorageError(f"cannot list {what} {path!r}: {exc}") from None


def join(base: str, *names: str) -> str:
    """``base/name/...`` for paths inside one file system (and for URIs)."""
    out = str(base).rstrip("/")
    for name in names:
        out = f"{out}/{name.strip('/')}" if name else out
    return out


def hidden(name: str) -> bool:
    """A hidden (``.ipynb_checkpoints``, ``.DS_Store``) or private (``_SUCCESS``) entry."""
    return name.startswith((".", "_"))


def list_files(root: str, suffixes: Iterable[str], what: str) -> tuple[pafs.FileSystem, list[str]]:
    """(file system, sorted paths) of the regular files under ``root`` whose names end with one of
    ``suffixes``, recursively, skipping hidden and private files and directories; a missing root or
    no match is a :class:`DataError` naming ``what``."""
    fs, files = find_files(root, suffixes, what)
    if not files:
        raise DataError(f"{what} {root!r}: no {'/'.join('*' + s for s in suffixes)} files")
    return fs, files


def find_files(root: str, suffixes: Iterable[str], what: str) -> tuple[pafs.FileSystem, list[str]]:
    """:func:`list_files` that returns an empty list when nothing matches (paths inside the file system)."""
    fs, base = filesystem(root)
    suffixes = tuple(s.lower() for s in suffixes)
    if not exists(root):
        raise DataError(f"{what} {root!r} does not exist")
    prefix = base.rstrip("/") + "/"
    files = sorted(i.path for i in list_dir(root, what, recursive=True)
                   if i.type == pafs.FileType.File and i.path.lower().endswith(suffixes)
                   and not any(hidden(part) for part in i.path[len(prefix):].split("/")))
    return fs, files


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes | None:
    """A file's bytes, or None when it does not exist."""
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
            return None
        raise


def write_bytes_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write a temporary sibling, then move it over ``path`` (atomic on local disks; object stores
    publish an object only when its upload completes)."""
    tmp = join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, path)
