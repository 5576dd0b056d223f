"""JSON round trips of the config dataclasses (``GPTConfig``, ``TrainConfig``): one rule.

A saved config is read back field by field; a key the class does not know is refused rather
than dropped, so a file written by a newer version (or edited by hand) never loads silently
as something else. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

__all__ = ["from_known_keys"]

T = TypeVar("T")


def from_known_keys(
    cls: type[T], data: Mapping[str, Any], *, what: str, error: type[Exception]
) -> T:
    """``cls(**data)`` after checking that every key of ``data`` is a field of ``cls``.

    Raises ``error`` naming the unknown keys and the known ones (``what``: e.g. "model config").
    """
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise error(f"unknown {what} keys {unknown}; known: {sorted(known)}")
    return cls(**data)
