"""Cut the texts of one batcher round into model calls at the lowest estimated cost.

Why not fill every call up to the row limit (what ``plan_batches`` does for one offline
call)? A round of a server holds whatever the clients sent: 64 SMS of 5 to 90 tokens, say.
Sorted and cut into two calls of 32, the second call pads every text to ~90 tokens and the
padding costs more than the batching saves (on a CPU, GPT-2 small runs ~0.2 ms per padded
token and ~6 ms per call). So the cut points are chosen to minimise the estimated time of the
round::

    cost(call) = overhead + rows x longest          (in padded tokens)
    minimise   sum over calls, with rows <= max_rows and rows x longest <= max_tokens

by dynamic programming over the texts sorted by length (a call is always a run of consecutive
lengths in that order). ``overhead`` -- what one extra call costs, in padded tokens -- is not a
constant of nature: it is large on a GPU or for a tiny model, small for GPT-2 on a CPU. The
:class:`CallCostModel` fits ``seconds = a + b x padded_tokens`` to the recent calls and uses
``a / b``.
"""

from __future__ import annotations

import collections

import numpy as np

__all__ = ["CallCostModel", "plan_min_cost"]


class CallCostModel:
    """Seconds of one model call as ``a + b x padded tokens``, fitted on recent calls.

    Until enough calls of different sizes are seen (or when the fit is implausible: a noisy
    machine can make it so) :meth:`overhead_tokens` returns ``prior_overhead_tokens``.
    """

    def __init__(self, prior_overhead_tokens: float = 64.0, window: int = 64) -> None:
        self.prior = float(prior_overhead_tokens)
        self._calls: collections.deque[tuple[int, float]] = collections.deque(maxlen=window)

    def observe(self, padded_tokens: int, seconds: float) -> None:
        """Record one successful model call."""
        self._calls.append((padded_tokens, seconds))

    def fit(self) -> tuple[float, float] | None:
        """``(a, b)`` in seconds and seconds per padded token, or None when not trustworthy."""
        if len(self._calls) < 8:
            return None
        x = np.fromiter((c[0] for c in self._calls), dtype=np.float64, count=len(self._calls))
        y = np.fromiter((c[1] for c in self._calls), dtype=np.float64, count=len(self._calls))
        if x.max() < 2 * x.min():  # all calls of about one size: the intercept is a guess
            return None
        b, a = np.polyfit(x, y, 1)
        if not (b > 0 and a > 0 and np.isfinite(a) and np.isfinite(b)):
            return None
        return float(a), float(b)

    def overhead_tokens(self) -> float:
        """What one more model call costs, in padded tokens (``a / b``, or the prior)."""
        fitted = self.fit()
        return self.prior if fitted is None else fitted[0] / fitted[1]


def plan_min_cost(
    lengths: np.ndarray, *, max_rows: int, max_tokens: int, overhead_tokens: float
) -> list[np.ndarray]:
    """Row indices of each model call, cut at the lowest ``sum(overhead + rows x longest)``.

    ``lengths`` (n,) are the texts' token counts. Every call holds at most ``max_rows`` rows
    and ``max_tokens`` padded tokens, except that a text longer than ``max_tokens`` gets a call
    of its own. Calls come shortest texts first; within one, rows are in ascending length
    (stable: equal lengths keep their order). Ties prefer fewer, larger calls.
    """
    order = np.argsort(lengths, kind="stable")
    sorted_len = np.asarray(lengths, dtype=np.int64)[order]  # (n,) ascending
    n = len(order)
    best = np.zeros(n + 1)  # best[j]: lowest cost of rows [0, j)
    start = np.zeros(n + 1, dtype=np.int64)  # start[j]: first row of the call ending at j
    for j in range(1, n + 1):
        longest = int(sorted_len[j - 1])
        # Candidate calls [i, j), largest first; a call may hold rows x longest <= max_tokens.
        fit_rows = max(1, min(max_rows, max_tokens // longest, j))
        first = np.arange(j - fit_rows, j)  # (k,) candidate first rows
        cost = best[first] + overhead_tokens + (j - first) * longest
        k = int(np.argmin(cost))  # the first minimum: the largest call among equals
        best[j], start[j] = cost[k], first[k]
    calls: list[np.ndarray] = []
    j = n
    while j > 0:
        i = int(start[j])
        calls.append(order[i:j])
        j = i
    calls.reverse()
    return calls
