"""The artifact metadata schema, stored in every ONNX file's ``metadata_props``.

The runtime owns this format so that a model exported by ``clf_export`` and a model served
by ``clf_runtime`` can never disagree on labels, tokenizer or pooling. Every value in
``metadata_props`` is a string; lists and dicts are JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import MetadataError

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "POOLINGS", "PRECISIONS", "ModelMetadata"]

FORMAT_NAME = "gpt-clf"
FORMAT_VERSION = 1
POOLINGS = ("last", "mean")
PRECISIONS = ("fp32", "int8", "fp16")
_REQUIRED = (
    "format",
    "format_version",
    "labels",
    "max_length",
    "tokenizer",
    "pooling",
    "precision",
    "package_version",
)


@dataclass(frozen=True)
class ModelMetadata:
    """What a deployable ONNX file says about itself."""

    labels: tuple[str, ...]
    """Label names in logit order."""
    max_length: int
    """Longest token sequence the model accepts; longer texts are truncated (head kept)."""
    tokenizer: str = "gpt2"
    """Tokenizer name understood by :func:`clf_runtime.tokenizer.get_encoding`."""
    pooling: str = "last"
    """``last``: hidden state of the last real token; ``mean``: mean over real tokens."""
    precision: str = "fp32"
    """``fp32``, ``int8`` (dynamic quantization, CPU) or ``fp16`` (CUDA)."""
    package_version: str = ""
    """Version of ``gpt-clf`` that wrote the file."""
    pad_token_id: int = 50256
    """Token id used for right padding (its value never changes the logits)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Free-form provenance: model and training config, export options."""

    def __post_init__(self) -> None:
        problems = []
        if not self.labels or len(set(self.labels)) != len(self.labels):
            problems.append(
                f"labels must be a non-empty list of distinct names, got {self.labels!r}"
            )
        if not isinstance(self.max_length, int) or self.max_length < 1:
            problems.append(f"max_length must be a positive integer, got {self.max_length!r}")
        if self.pooling not in POOLINGS:
            problems.append(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if problems:
            raise MetadataError("invalid model metadata: " + "; ".join(problems))

    def to_props(self) -> dict[str, str]:
        """Serialize to ONNX ``metadata_props`` (string -> string)."""
        return {
            "format": FORMAT_NAME,
            "format_version": str(FORMAT_VERSION),
            "labels": json.dumps(list(self.labels)),
            "max_length": str(self.max_length),
            "tokenizer": self.tokenizer,
            "pooling": self.pooling,
            "precision": self.precision,
            "package_version": self.package_version,
            "pad_token_id": str(self.pad_token_id),
            "extra": json.dumps(dict(self.extra), sort_keys=True),
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str], *, source: str = "the model") -> ModelMetadata:
        """Parse ``metadata_props``; raise :class:`MetadataError` naming what is missing."""
        missing = [k for k in _REQUIRED if k not in props]
        if missing:
            raise MetadataError(
                f"{source} is not a gpt-clf model: its ONNX metadata lacks {', '.join(missing)}. "
                "Export it with `clf-export RUN_DIR --out DIR`, which writes this metadata."
            )
        if props["format"] != FORMAT_NAME:
            raise MetadataError(
                f"{source} has metadata format {props['format']!r}, expected {FORMAT_NAME!r}"
            )
        try:
            version = int(props["format_version"])
            labels = json.loads(props["labels"])
            max_length = int(props["max_length"])
            pad = int(props.get("pad_token_id", "50256"))
            extra = json.loads(props.get("extra", "{}"))
        except (ValueError, TypeError) as e:
            raise MetadataError(f"{source} has unreadable metadata: {e}") from e
        if version > FORMAT_VERSION:
            raise MetadataError(
                f"{source} uses metadata format version {version}; this runtime reads up to "
                f"{FORMAT_VERSION}. Upgrade gpt-clf."
            )
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise MetadataError(f"{source} has labels {labels!r}; expected a JSON list of strings")
        return cls(
            labels=tuple(labels),
            max_length=max_length,
            tokenizer=props["tokenizer"],
            pooling=props["pooling"],
            precision=props["precision"],
            package_version=props["package_version"],
            pad_token_id=pad,
            extra=extra if isinstance(extra, dict) else {},
        )
