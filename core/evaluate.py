"""Alias of ``python -m core.eval`` (re-score a saved run), kept because scripts name it."""

import sys

from core.eval.rescore import evaluate_run, main, run_config  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
