import sys

from core.train.cli import main

sys.exit(main())
