"""One run's training: ``fit`` (in-process and worker-group paths), the loop, optimisers and the
divergence guard. ``python -m core.train`` is the command line (``core/train/cli.py``). The run
directory and checkpoint format are one layer below, in :mod:`core.runs`; the evaluation the run ends
with in :mod:`core.eval`.
"""

from core.train.cli import format_summary, main
from core.train.trainer import FitOptions, finished_run, fit

__all__ = ["fit", "finished_run", "FitOptions", "main", "format_summary"]
