"""The platform's errors: each names what is wrong and where (a field, a file, a directory).

Every command-line entry point prints a :class:`PlatformError` as one line, ``error: <message>``,
and exits with status 2 (:func:`cli_main`); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import sys
from typing import Callable


class PlatformError(Exception):
    """A problem the user can fix (bad input, a busy directory, a missing file)."""


class ConfigError(PlatformError, ValueError):
    """A configuration value is invalid; the message names the field."""


class DataError(PlatformError, ValueError):
    """Bad or missing input data; the message names the file or directory."""


class EvaluationError(PlatformError, RuntimeError):
    """The evaluation cannot give a meaningful number (e.g. a class lost every image)."""


class CheckpointError(PlatformError, RuntimeError):
    """No usable checkpoint: unreadable, or written by another config."""


class LockedError(PlatformError, RuntimeError):
    """Another process is writing the directory."""


class ResourceError(PlatformError, RuntimeError):
    """The Ray cluster can never offer what a run or a study asks for."""


class StorageError(PlatformError, OSError):
    """A file could not be written or read for a reason outside the platform (read-only, full, too long)."""


_CAUSES = {errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on the device",
           errno.ENAMETOOLONG: "file name too long", errno.EACCES: "permission denied",
           errno.EPERM: "operation not permitted", errno.EDQUOT: "disk quota exceeded"}


def storage_error(exc: OSError, path: object = None) -> StorageError | None:
    """The :class:`StorageError` for an ``OSError`` whose cause the user must fix (read-only, full disk,
    name too long, no permission), naming the path; None for any other error."""
    cause = _CAUSES.get(exc.errno or -1)
    if cause is None:
        return None
    where = path if path is not None else (exc.filename or "?")
    return StorageError(f"cannot write {str(where)!r}: {cause}")


def cli_main(main: Callable[[], int]) -> int:
    """Run a command-line ``main``: a :class:`PlatformError` (or an ``OSError`` that :func:`storage_error`
    explains) becomes one line on stderr and exit status 2."""
    try:
        return main()
    except PlatformError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        named = storage_error(exc)
        if named is None:
            raise
        print(f"error: {named}", file=sys.stderr)
        return 2
