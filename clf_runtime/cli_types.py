"""Argument types shared by the runtime's command lines (``clf-predict``, ``clf-serve``,
``clf-bench``): each parses one flag value or raises ``argparse.ArgumentTypeError`` with the
value it got, so argparse reports ``--flag: expected ...`` and exits 2."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["int_at_least", "non_negative_float", "positive_int"]


def positive_int(value: str) -> int:
    """An integer >= 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def non_negative_float(value: str) -> float:
    """A number >= 0."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}") from None
    if not number >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}")
    return number


def int_at_least(low: int) -> Callable[[str], int]:
    """The type of a flag taking an integer >= ``low``."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if number < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value!r}")
        return number

    return parse
