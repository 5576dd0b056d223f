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

    :meth:`overhead_tokens` is ``a / b`` but never less than ``prior_overhead_tokens``, which it
    also returns until enough calls of different sizes are seen or when the fit is implausible
    (a noisy machine can make it so).
    """

    def __init__(
        self, prior_overhead_tokens: float = 64.0, window: int = 64, refit_every: int = 8
    ) -> None:
        self.prior = float(prior_overhead_tokens)
        self._calls: collections.deque[tuple[int, float]] = collections.deque(maxlen=window)
        self._refit_every = refit_every
        self._since_fit = 0
        self._overhead = self.prior

    def observe(self, padded_tokens: int, seconds: float) -> None:
        """Record one successful model call (the estimate is refitted every few calls: a fit
        costs ~0.1 ms, as much as a tiny model's call)."""
        self._calls.append((padded_tokens, seconds))
        self._since_fit += 1
        if self._since_fit >= self._refit_every:
            self._since_fit = 0
            fitted = self.fit()
            # Never below the prior: on a busy machine the fit can come out small, and many
            # small calls cost more than a little padding (a CPU also runs a call of few rows
            # less efficiently than a straight line through larger calls predicts).
            self._overhead = (
                self.prior if fitted is None else max(self.prior, fitted[0] / fitted[1])
            )

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
        return self._overhead


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
    sorted_len = np.asarray(lengths, dtype=np.int64)[order].tolist()  # ascending
    n = len(sorted_len)
    # Plain Python: a round is tens to thousands of rows and the inner loop is at most
    # max_rows long; per-row numpy calls would cost more than the arithmetic.
    best = [0.0] * (n + 1)  # best[j]: lowest cost of rows [0, j)
    start = [0] * (n + 1)  # start[j]: first row of the last call in that plan
    for j in range(1, n + 1):
        longest = max(sorted_len[j - 1], 1)  # an empty row still takes a slot
        fit_rows = max(1, min(max_rows, max_tokens // longest, j))
        # Candidate calls [i, j), largest first: on equal cost the larger call wins.
        best_cost, best_start = float("inf"), j - 1
        for i in range(j - fit_rows, j):
            cost = best[i] + overhead_tokens + (j - i) * longest
            if cost < best_cost:
                best_cost, best_start = cost, i
        best[j], start[j] = best_cost, best_start
    calls: list[np.ndarray] = []
    j = n
    while j > 0:
        i = start[j]
        calls.append(order[i:j])
        j = i
    calls.reverse()
    return calls
