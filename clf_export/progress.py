"""Stage progress of an export, reported through the ``clf_export`` logger.

An export of GPT-2 small takes minutes (a few seconds for the small presets), in stages of
very different lengths. :func:`stage` logs a line at INFO when a stage starts and one with
its elapsed seconds when it ends, on the logger ``clf_export.progress``; library code never
prints. ``clf-export`` shows these lines on stderr; a Python caller sees them with
``logging.basicConfig(level=logging.INFO)`` or by attaching a handler to that logger.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

__all__ = ["PROGRESS_LOGGER", "stage"]

PROGRESS_LOGGER = "clf_export.progress"
"""Name of the logger that reports the stages."""

logger = logging.getLogger(PROGRESS_LOGGER)


@contextlib.contextmanager
def stage(name: str, what: str) -> Iterator[None]:
    """Log ``"<name>: <what> ..."`` now and ``"<name>: done in S.S s"`` when the block ends.

    A stage that raises logs nothing more: the error itself is the report.
    """
    logger.info("%s: %s ...", name, what)
    start = time.perf_counter()
    yield
    logger.info("%s: done in %.1f s", name, time.perf_counter() - start)
