"""``python -m clf_runtime.serve EXPORT``: the same as ``clf-serve EXPORT``."""

import sys

from .cli import main

sys.exit(main())
