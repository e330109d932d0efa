"""``python -m core.export RUN_DIR OUT_DIR``: a finished run's encoder for use elsewhere (``core.train.export``)."""

import sys

from core.train.export import export_run, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
