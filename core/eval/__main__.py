import sys

from core.eval.rescore import main

sys.exit(main())
