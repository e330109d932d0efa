"""The platform's errors: each names what is wrong and where (a field, a file, a directory).

Every command-line entry point prints a :class:`PlatformError` as one line, ``error: <message>``,
and exits with status 2 (:func:`cli_main`); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import re
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


class ResourceError(PlatformError, ValueError):
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
    quoted = re.search(r"'(/[^']+|\w+://[^']+)'", str(exc))  # pyarrow names the file in its message only
    where = path if path is not None else (exc.filename or (quoted.group(1) if quoted else "?"))
    return StorageError(f"cannot write {str(where)!r}: {cause}")


def platform_cause(exc: BaseException, depth: int = 6) -> PlatformError | None:
    """The :class:`PlatformError` behind ``exc``: itself, or one that Ray wrapped (a task's ``cause``, a
    Train worker group's ``worker_failures``, chained ``__cause__``); an ``OSError`` that
    :func:`storage_error` explains counts too. None when there is none (a bug)."""
    if isinstance(exc, PlatformError):
        return exc
    if isinstance(exc, OSError) and (named := storage_error(exc)) is not None:
        return named
    if depth == 0:
        return None
    inner = [getattr(exc, "cause", None), exc.__cause__, exc.__context__,
             *(getattr(exc, "worker_failures", None) or {}).values()]
    for candidate in inner:
        if isinstance(candidate, BaseException) and (found := platform_cause(candidate, depth - 1)) is not None:
            return found
    return None


def cli_main(main: Callable[[], int]) -> int:
    """Run a command-line ``main``: a :class:`PlatformError` (also one Ray wrapped, or an ``OSError`` that
    :func:`storage_error` explains) becomes one line on stderr and exit status 2."""
    try:
        return main()
    except Exception as exc:
        cause = platform_cause(exc)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 2
