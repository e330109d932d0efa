"""Local paths and object-store URIs, one rule for the whole platform.

A string with ``://`` (``s3://bucket/prefix``, ``gs://...``, ``file:///...``) is a URI opened through
``pyarrow.fs``; anything else is a local path, made absolute. Object-store endpoints and credentials
come only from the standard environment (``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), never from the code.
Listings skip hidden entries (``.name``) and private ones (``_name``), as torchvision's ImageFolder does.
"""

from __future__ import annotations

import os
from typing import Iterable

import pyarrow.fs as pafs

from core.errors import DataError


def is_uri(path: str) -> bool:
    return "://" in str(path)


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow file system, the path inside it) for a local path or a URI."""
    path = str(path)
    if not is_uri(path):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    try:
        return pafs.FileSystem.from_uri(path)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path!r}: {exc}") from None


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
    """:func:`list_files` that returns an empty list when nothing matches."""
    fs, base = filesystem(root)
    suffixes = tuple(s.lower() for s in suffixes)
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"{what} {root!r}: {exc}") from None
    prefix = base.rstrip("/") + "/"
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.lower().endswith(suffixes)
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
