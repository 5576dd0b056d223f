"""Check paths from the command line before any work starts: outputs and models.

Every CLI calls these up front, so a bad path fails in a second with one message naming the
problem and the fix, instead of an ``[Errno 17] File exists`` after an hour of work:

- :func:`check_output_path`: a file or directory that is about to be written (``clf-predict
  --output``, ``clf-bench --json/--plot``, and ``clf-train``/``clf-export --out``);
- :func:`check_model_path`: the MODEL argument of ``clf-predict``/``clf-bench``, which must be
  an export directory or an ``.onnx`` file, not a training run or a data file.

Nothing is created or changed here; the writers create parent directories themselves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from .contract import CHECKPOINT_DIR, MODEL_FILES, RUN_CONFIG_FILE, RUN_WEIGHTS_FILE
from .errors import ClassifierError, ModelLoadError

__all__ = [
    "DATA_SUFFIXES",
    "OutputPathError",
    "check_model_path",
    "check_output_path",
    "is_run_dir",
]

DATA_SUFFIXES = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".json", ".txt", ".parquet")
"""Suffixes of data files: a MODEL argument with one of them is a mix-up."""


class OutputPathError(ClassifierError, ValueError):
    """An output path cannot be written: it is a directory, its parent is a file, it is
    read-only, or it exists and may not be replaced."""


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (lstat: a dangling link counts)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or ".")


def check_output_path(
    path: str | os.PathLike[str],
    *,
    flag: str,
    kind: Literal["file", "dir"] = "file",
    overwrite: bool = True,
    overwrite_flag: str = "--overwrite",
) -> Path:
    """Check that ``path`` can be written as a ``kind`` (file or directory); return it.

    ``flag`` names the option that gave the path (``--output``), for the message.
    ``overwrite``: whether an existing output may be replaced; when it may not, the message
    tells the user to pass ``overwrite_flag``. A directory that exists but is empty counts as
    new. Missing parent directories are fine (writers create them) as long as the nearest one
    that exists is a writable directory. Raises :class:`OutputPathError`.
    """
    raw = os.fspath(path)
    if not raw.strip():
        raise OutputPathError(f"{flag} is empty: pass a path to write.")
    target = Path(raw)
    what = f"{flag} {raw!r}"
    if target.is_dir():
        if kind == "file":
            raise OutputPathError(
                f"{what} is a directory, but {flag} needs a file name. Pass a file inside it, "
                f"e.g. {str(target / 'out')!r} with the right suffix."
            )
        if any(target.iterdir()) and not overwrite:
            raise OutputPathError(
                f"{what} already exists and is not empty. Pass {overwrite_flag} to replace it "
                "(the old one is removed only after the new one is complete), or choose a new "
                "directory."
            )
    elif os.path.lexists(target):
        if kind == "dir":
            raise OutputPathError(
                f"{what} is a file, but {flag} needs a directory. Choose another path (a new "
                "directory is created)."
            )
        if not overwrite:
            raise OutputPathError(
                f"{what} already exists. Pass {overwrite_flag} to replace it, or choose another "
                "file name."
            )
    # The writers create missing parents and rename a temporary file or directory into place,
    # so the nearest existing ancestor of the parent must be a directory we may write into.
    parent = target.absolute().parent
    existing = _nearest_existing(parent)
    if not existing.is_dir():
        raise OutputPathError(
            f"{what} cannot be created: {str(existing)!r} is a file, not a directory. Choose a "
            f"path outside it, or rename that file."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"{what} cannot be created: directory {str(existing)!r} is not writable (permission "
            "denied). Choose a location you can write to, or fix its permissions."
        )
    return target


def _looks_like_text(path: Path) -> bool:
    """True when the file's first bytes are UTF-8 text (an ONNX file starts with byte 0x08)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    if not head:
        return True
    if any(b < 0x20 and b not in (0x09, 0x0A, 0x0D) for b in head):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start > len(head) - 4  # a character cut by the 4096-byte window
    return True


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a ``clf-train`` run directory (its config and weights or checkpoint)."""
    return (path / RUN_CONFIG_FILE).is_file() and (
        (path / RUN_WEIGHTS_FILE).is_file() or (path / CHECKPOINT_DIR).is_dir()
    )


def check_model_path(path: str | os.PathLike[str], *, data_flag: str = "--input") -> Path:
    """Check that ``path`` can be an exported model; return it.

    Catches the usual mix-ups with one message each: a path that does not exist, a
    ``clf-train`` run directory (export it first), a directory without model files, and a
    data file given where the model belongs (``data_flag`` is the option that takes data).
    Whether an ``.onnx`` file really is a gpt-clf model is checked when it is loaded. Raises
    :class:`~clf_runtime.errors.ModelLoadError`.
    """
    target = Path(path)
    names = ", ".join(sorted(MODEL_FILES.values()))
    if not target.exists():
        raise ModelLoadError(
            f"model {str(target)!r} does not exist. The first argument is the model: an export "
            f"directory written by `clf-export RUN_DIR --out DIR`, or one of its .onnx files."
        )
    if target.is_dir():
        if any((target / name).is_file() for name in MODEL_FILES.values()):
            return target
        if is_run_dir(target):
            raise ModelLoadError(
                f"{str(target)!r} is a clf-train run directory, not an exported model: export "
                f"it with `clf-export {target} --out DIR`, then pass DIR as the model."
            )
        raise ModelLoadError(
            f"directory {str(target)!r} holds no model file (expected one of {names}). Pass an "
            "export directory written by `clf-export RUN_DIR --out DIR`, or an .onnx file."
        )
    if target.suffix.lower() != ".onnx" and (
        target.suffix.lower() in DATA_SUFFIXES or _looks_like_text(target)
    ):
        raise ModelLoadError(
            f"{str(target)!r} looks like a data file, not a model. The first argument is the "
            f"model (an export directory or .onnx file); pass data files with {data_flag}, e.g. "
            f"`MODEL {data_flag} {target}`."
        )
    return target
