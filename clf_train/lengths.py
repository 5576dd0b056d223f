"""Token lengths per split: how much of each text the model will actually read.

Texts longer than ``max_length`` tokens keep only their head (the pooling contract reads the
last *kept* token), which is silent unless reported. :func:`token_length_report` counts, per
split, the token lengths (mean, p50, p95, max) and how many texts are cut at ``max_length``,
and returns a warning naming ``--max-length`` when more than :data:`CUT_WARN_FRACTION` of any
split is cut. It goes into ``data_report.json`` under ``"tokens"``.

Lengths are counted up to the model's context length (the largest ``--max-length`` possible):
a text longer than that counts as ``context_length`` in the statistics and is counted in
``longer_than_context``. Percentiles are nearest-rank (an actual text's length), so they are
exact integers. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from clf_runtime.tokenizer import encode_batch

__all__ = ["CUT_WARN_FRACTION", "token_length_report", "token_length_stats"]

CUT_WARN_FRACTION: Final = 0.05
"""Warn when more than this fraction of a split is longer than ``max_length`` tokens."""


def _nearest_rank(ordered: Sequence[int], q: float) -> int:
    """The ``q``-quantile of sorted ``ordered`` by the nearest-rank method."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def token_length_stats(lengths: Sequence[int], *, max_length: int, context_length: int) -> dict:
    """Statistics of token ``lengths`` (each counted up to ``context_length + 1``).

    Returns ``n``, ``mean``, ``p50``, ``p95``, ``max`` (lengths capped at ``context_length``),
    ``cut`` (texts longer than ``max_length``), ``cut_fraction`` and ``longer_than_context``.
    """
    ordered = sorted(min(n, context_length) for n in lengths)
    cut = sum(n > max_length for n in lengths)
    count = len(ordered)
    return {
        "n": count,
        "mean": round(sum(ordered) / count, 1) if count else None,
        "p50": _nearest_rank(ordered, 0.50) if count else None,
        "p95": _nearest_rank(ordered, 0.95) if count else None,
        "max": ordered[-1] if count else None,
        "cut": cut,
        "cut_fraction": round(cut / count, 4) if count else 0.0,
        "longer_than_context": sum(n > context_length for n in lengths),
    }


def token_length_report(
    texts: Mapping[str, Sequence[str]], *, max_length: int, context_length: int
) -> tuple[dict[str, Any], list[str]]:
    """(report, warnings) of the token lengths of each split's ``texts``.

    The report holds ``max_length``, ``context_length`` and per split the
    :func:`token_length_stats`. One warning names every split of which more than
    :data:`CUT_WARN_FRACTION` is cut at ``max_length``, and the flag that changes it.
    """
    splits = {}
    for name, part in texts.items():
        # One token past the context is enough to tell "longer than the context" apart.
        lengths = [len(ids) for ids in encode_batch(list(part), max_length=context_length + 1)]
        splits[name] = token_length_stats(
            lengths, max_length=max_length, context_length=context_length
        )
    report = {"max_length": max_length, "context_length": context_length, "splits": splits}
    over = {n: s for n, s in splits.items() if s["cut_fraction"] > CUT_WARN_FRACTION}
    if not over:
        return report, []
    shares = ", ".join(
        f"{n} {s['cut_fraction']:.0%} ({s['cut']:,} of {s['n']:,}, p95 {s['p95']:,} tokens)"
        for n, s in over.items()
    )
    if max_length < context_length:
        fix = (
            f"pass --max-length up to {context_length} (the model's context length) to read "
            "more of each text (memory and time grow with it)"
        )
    else:
        fix = (
            f"{max_length} tokens is the model's context length, so this is all it can read; "
            "put the most telling part of each text first"
        )
    warning = (
        f"texts longer than --max-length {max_length} tokens are cut to their first "
        f"{max_length} tokens: {shares}. {fix}. Token lengths per split are in data_report.json "
        '("tokens").'
    )
    return report, [warning]
