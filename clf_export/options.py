"""``ExportOptions``: every knob of ``clf-export``, one field per flag, validated at once.

Like :class:`clf_train.config.TrainConfig`: :meth:`ExportOptions.problems` lists *every* bad
value, one line each naming its flag (``--threads must be ... got 0``), and
:meth:`ExportOptions.validate` raises them together as one :class:`ExportError`, so a command
line is fixed in one go. The Python API takes the same object::

    export_run("runs/a", "exports/a", ExportOptions(quantize=True, fp16=True))

This module also names the words of the artifact contract that the exporter branches on
(precisions, the held-out split, the pooling of a chapter-6 state dict). Importing it loads
neither torch nor onnx.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Final

from clf_runtime.contract import FP16, FP32, INT8, POOL_LAST, SPLITS, TEST

from .errors import ExportError

__all__ = [
    "CALIBRATION_TEXTS",
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_OPSET",
    "EXTERNAL_DATA_THRESHOLD",
    "FP16",
    "FP32",
    "INT8",
    "INT8_FORMATS",
    "INT8_SCHEMES",
    "LAST_POOLING",
    "LORA_MERGE_TOLERANCE",
    "PARITY_TOLERANCE",
    "TEST_SPLIT",
    "ExportOptions",
    "resolve_options",
]

LAST_POOLING: Final = POOL_LAST
"""The pooling of a chapter-6 state dict: the hidden state of the last real token."""
TEST_SPLIT: Final = TEST
"""The held-out split of a run: the default evaluation data."""

DEFAULT_OPSET: Final = 18
"""ONNX opset of the exported graphs (the dynamo exporter's native opset in torch 2.13)."""
DEFAULT_MAX_LENGTH: Final = 256
"""``max_length`` without a run's own value: min(this, the model's context length)."""
PARITY_TOLERANCE: Final = 1e-4
"""Largest |logit difference| allowed between the fp32 graph and the torch model."""
LORA_MERGE_TOLERANCE: Final = 1e-5
"""Largest |logit difference| allowed between a LoRA model with its adapters merged into the
weights and the same model computing them apart (torch, fp32): the merge must not be visible."""
EXTERNAL_DATA_THRESHOLD: Final = 2 * 1024**3 - 128 * 1024**2
"""Models whose tensors exceed this many bytes keep them in ``<file>.data`` (protobuf caps a
file at 2 GiB; the margin covers the graph itself)."""
INT8_FORMATS: Final = ("auto", "u8s8", "u8s8-reduce-range")
"""``--int8-format`` choices: uint8 activations (zero point 128) x int8 weights, 8 or 7 bits."""
INT8_SCHEMES: Final = ("static", "static-ln", "rowwise")
"""int8 activation schemes (:mod:`clf_export.static_int8`), fastest first (fewest nodes per
call); ``--int8-scheme`` takes these or ``auto``."""
CALIBRATION_TEXTS: Final = 256
"""Training texts read to calibrate static int8 scales (the first N of the run's train split)."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ExportOptions:
    """How to export; mirrors the ``clf-export`` flags one to one (two API-only knobs last)."""

    quantize: bool = False
    """--quantize: also write model.int8.onnx (per-row int8, for CPUs)."""
    fp16: bool = False
    """--fp16: also write model.fp16.onnx (for CUDA; checked on CUDA when it really works)."""
    opset: int = DEFAULT_OPSET
    """--opset: ONNX opset of the exported graphs."""
    max_length: int | None = None
    """--max-length: longest token sequence (default: the run's, else min(256, context))."""
    eval_split: str | None = None
    """--eval-split: run split for the precision comparison (default: test, if the run has it)."""
    eval_data: str | os.PathLike[str] | None = None
    """--eval-data: labelled .jsonl / .csv file (text, label) for the comparison instead."""
    int8_format: str = "auto"
    """--int8-format: auto, u8s8 (8-bit weights) or u8s8-reduce-range (7-bit weights)."""
    int8_scheme: str = "auto"
    """--int8-scheme: auto (the fastest scheme whose held-out quality is no worse than
    rowwise's), static, static-ln or rowwise."""
    quantize_embeddings: bool = True
    """--no-quantize-embeddings turns this off: int8 embedding tables in model.int8.onnx."""
    threads: int | None = None
    """--threads: onnxruntime intra-op threads for the checks (default: every CPU)."""
    overwrite: bool = False
    """--overwrite: replace an existing export in --out."""
    parity_tolerance: float = PARITY_TOLERANCE
    """No flag (API only): largest |logit diff| allowed between the fp32 graph and torch."""
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD
    """No flag (API only): tensor bytes above which a model keeps its tensors in <file>.data."""

    def problems(self) -> list[str]:
        """Every problem of these options, one line each naming the flag; empty when valid."""
        p: list[str] = []
        if not _is_int(self.opset) or self.opset < 1:
            p.append(f"--opset must be a positive integer, got {self.opset!r}")
        if self.max_length is not None and (not _is_int(self.max_length) or self.max_length < 1):
            p.append(f"--max-length must be a positive integer, got {self.max_length!r}")
        if self.eval_split is not None and self.eval_split not in SPLITS:
            p.append(f"--eval-split must be one of {', '.join(SPLITS)}, got {self.eval_split!r}")
        if self.eval_data is not None and not isinstance(self.eval_data, (str, os.PathLike)):
            p.append(f"--eval-data must be a file path, got {type(self.eval_data).__name__}")
        if self.eval_split is not None and self.eval_data is not None:
            p.append("--eval-split and --eval-data both name the evaluation data; pass one")
        if self.int8_format not in INT8_FORMATS:
            p.append(
                f"--int8-format must be one of {', '.join(INT8_FORMATS)}, got {self.int8_format!r}"
            )
        if self.int8_scheme not in ("auto", *INT8_SCHEMES):
            p.append(
                f"--int8-scheme must be one of auto, {', '.join(INT8_SCHEMES)}, "
                f"got {self.int8_scheme!r}"
            )
        if self.threads is not None and (not _is_int(self.threads) or self.threads < 1):
            p.append(f"--threads must be a positive integer, got {self.threads!r}")
        tolerance = self.parity_tolerance
        if not isinstance(tolerance, (int, float)) or not (0 <= tolerance < math.inf):
            p.append(f"parity_tolerance must be a finite number >= 0, got {tolerance!r}")
        threshold = self.external_data_threshold
        if not _is_int(threshold) or threshold < 0:
            p.append(f"external_data_threshold must be an integer >= 0 (bytes), got {threshold!r}")
        return p

    def validate(self) -> ExportOptions:
        """Return ``self`` if valid, else raise one :class:`ExportError` listing every problem."""
        p = self.problems()
        if p:
            raise ExportError(
                f"invalid export options ({len(p)} problem{'s' * (len(p) > 1)}):\n"
                + "\n".join(f"  {line}" for line in p)
            )
        return self


def resolve_options(options: ExportOptions | None, changes: Mapping[str, Any]) -> ExportOptions:
    """``options`` (default ``ExportOptions()``) with ``changes`` applied, validated.

    ``changes`` is the keyword shorthand of the Python API: ``export_run(run, out,
    quantize=True)`` means ``export_run(run, out, ExportOptions(quantize=True))``. A name that
    is not a field raises ``TypeError``, as any unknown keyword argument does; bad values
    raise :class:`ExportError` (see :meth:`ExportOptions.validate`).
    """
    known = {f.name for f in fields(ExportOptions)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise TypeError(f"unknown export options {unknown}; ExportOptions has {sorted(known)}")
    return replace(options or ExportOptions(), **changes).validate()
