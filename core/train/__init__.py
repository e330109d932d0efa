"""One run's training: ``fit`` (in-process and worker-group paths), the loop, checkpoints, optimisers
and the distributed helpers. ``python -m core.train`` is the command line (``core/train/cli.py``).

Light on import (the losses use ``core.train.distributed``): ``fit`` and friends load on first use.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"fit": "core.train.trainer", "finished_run": "core.train.trainer", "FitOptions": "core.train.trainer",
         "main": "core.train.cli", "format_summary": "core.train.cli"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'core.train' has no attribute {name!r}")
