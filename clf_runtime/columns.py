"""Which column of a table holds the text: one rule for training and for prediction.

``clf-train`` and ``clf-predict`` (both engines) find the text column the same way:

- a column named with ``--text-col`` is matched exactly (surrounding spaces of header names
  ignored), else case-insensitively when exactly one column matches (``message`` finds
  ``Message``; ``text`` is ambiguous between ``Text`` and ``TEXT`` and finds neither);
- without ``--text-col``, the first of :data:`TEXT_COLUMNS` (``text``, ``sentence``,
  ``message``, ``content``, ``sms``) present in the header, compared case-insensitively and
  ignoring surrounding spaces, is the text column.

Pure Python (the standard library and this package's errors): :mod:`clf_train.data` imports it too.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import ClassifierError

__all__ = ["TEXT_COLUMNS", "find_column", "find_common_column", "resolve_text_column"]

TEXT_COLUMNS = ("text", "sentence", "message", "content", "sms")
"""Header names taken as the text column when no column is named, in order of preference."""


def find_column(names: Sequence[str], wanted: str) -> int | None:
    """Index of ``wanted`` in ``names``: exact match, else the unique case-insensitive one."""
    if wanted in names:
        return list(names).index(wanted)
    folded = [i for i, n in enumerate(names) if n.casefold() == wanted.casefold()]
    return folded[0] if len(folded) == 1 else None


def find_common_column(names: Sequence[str], candidates: Sequence[str]) -> int | None:
    """Index of the first of ``candidates`` present in ``names`` (case-insensitive, stripped)."""
    folded = [n.strip().casefold() for n in names]
    for cand in candidates:
        if cand in folded:
            return folded.index(cand)
    return None


def resolve_text_column(names: Sequence[str], text_col: str | None, *, source: str) -> int:
    """Index of the text column of a table with header ``names`` (see the module rule).

    ``source`` names the file in the error. Raises :class:`~clf_runtime.errors.ClassifierError`
    listing the columns found and the flag that fixes it.
    """
    found = f"Columns found: {list(names)}."
    if text_col is not None:
        index = find_column([n.strip() for n in names], text_col)  # as clf-train: spaces ignored
        if index is None:
            raise ClassifierError(
                f"{source} has no column named {text_col!r} (--text-col). {found} Pass "
                "--text-col with one of these names."
            )
        return index
    index = find_common_column(names, TEXT_COLUMNS)
    if index is None:
        raise ClassifierError(
            f"{source}: cannot tell which column holds the text. {found} Expected a header "
            f"naming one of {', '.join(TEXT_COLUMNS)} (any case). Pass --text-col NAME, or "
            "--no-header --text-col NUMBER if the file has no header row."
        )
    return index
