"""One rule for "may clf-train use the network?", shared by every lookup that could download.

Two things can download: the ``sms-spam`` data source (:mod:`clf_train.sms_spam`) and
pretrained weights by name (:mod:`clf_train.pretrained.hub`). Both ask :func:`offline_reason`,
so one switch turns both off. The process is offline when any of :data:`OFFLINE_VARS` holds a
true value (``1``, ``true``, ``yes`` or ``on``, any case): ``CLF_OFFLINE`` is this package's
own switch; ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` are the Hugging Face ones that
people with an offline machine have usually set already.

The environment is read at call time, not at import, so a caller (or a test) may set it late.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ["OFFLINE_VARS", "offline_reason"]

OFFLINE_VARS: Final = ("CLF_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})


def offline_reason() -> str | None:
    """``"VAR=value"`` of the first of :data:`OFFLINE_VARS` that is true, or None when online."""
    for var in OFFLINE_VARS:
        value = os.environ.get(var, "")
        if value.strip().lower() in _TRUE:
            return f"{var}={value}"
    return None
