"""Alias of ``core.study.ablate`` (declarative ablations), kept because the README and scripts name it."""

import sys

from core.study.ablate import load_spec, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
