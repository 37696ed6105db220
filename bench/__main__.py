"""python -m bench: see bench/__init__.py (scripts/bench runs this)."""

import sys

from bench.run import main

sys.exit(main())
