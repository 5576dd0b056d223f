"""``python -m clf_train`` and ``torchrun -m clf_train``: the ``clf-train`` command."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
