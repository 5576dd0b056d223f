"""Progress bars of the runtime's CLIs: tqdm when it is installed, a plain counter otherwise.

The runtime itself never needs tqdm: it is imported here, lazily, only when a CLI shows
progress on a terminal. Without tqdm the bar is a one-line counter redrawn with ``\\r`` at
most a few times a second (count, total and percentage when known, rate, ETA).
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import IO, Any

__all__ = ["PlainProgress", "progress_bar"]


class PlainProgress:
    """A minimal stand-in for ``tqdm``: ``update(n)``, ``close()``, context manager."""

    def __init__(
        self, *, total: int | None, unit: str, file: IO[str], disable: bool, interval: float = 0.5
    ) -> None:
        self.total, self.unit, self.file, self.disable = total, unit, file, disable
        self.n = 0
        self._start = self._last = time.monotonic()
        self._interval = interval

    def _line(self, now: float) -> str:
        rate = self.n / max(now - self._start, 1e-9)
        if self.total:
            left = (self.total - self.n) / rate if rate > 0 else float("inf")
            eta = f", ETA {left:.0f} s" if 0 < left < float("inf") else ""
            pct = 100.0 * self.n / self.total
            return f"{self.n:,}/{self.total:,} {self.unit}s ({pct:.0f} %), {rate:.1f}/s{eta}"
        return f"{self.n:,} {self.unit}s, {rate:.1f}/s"

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items; redraw when the last draw is old enough."""
        self.n += n
        now = time.monotonic()
        if not self.disable and now - self._last >= self._interval:
            self._last = now
            self.file.write("\r" + self._line(now))
            self.file.flush()

    def close(self) -> None:
        """Draw the final count and end the line."""
        if not self.disable and self.n:
            self.file.write("\r" + self._line(time.monotonic()) + "\n")
            self.file.flush()
        self.disable = True

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def progress_bar(*, total: int | None, unit: str, file: IO[str], disable: bool) -> Any:
    """A tqdm bar (or :class:`PlainProgress` without tqdm) writing to ``file``.

    Use it as a context manager and call ``update(n)``; ``disable`` shows nothing.
    """
    if disable:
        return PlainProgress(total=total, unit=unit, file=file, disable=True)
    try:
        from tqdm import tqdm
    except ImportError:
        return PlainProgress(total=total, unit=unit, file=file, disable=False)
    return tqdm(total=total, unit=unit, file=file, unit_scale=True, dynamic_ncols=True)
