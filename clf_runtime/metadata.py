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

from .contract import (
    FORMAT_NAME,
    FORMAT_VERSION,
    META_EXTRA,
    META_FORMAT,
    META_FORMAT_VERSION,
    META_LABELS,
    META_MAX_LENGTH,
    META_PACKAGE_VERSION,
    META_PAD_TOKEN_ID,
    META_POOLING,
    META_PRECISION,
    META_REQUIRED,
    META_TOKENIZER,
    POOLINGS,
    PRECISIONS,
)
from .errors import MetadataError
from .tokenizer import END_OF_TEXT_ID, TOKENIZER_NAME

__all__ = ["ModelMetadata"]


@dataclass(frozen=True)
class ModelMetadata:
    """What a deployable ONNX file says about itself."""

    labels: tuple[str, ...]
    """Label names in logit order."""
    max_length: int
    """Longest token sequence the model accepts; longer texts are truncated (head kept)."""
    tokenizer: str = TOKENIZER_NAME
    """Tokenizer name understood by :func:`clf_runtime.tokenizer.get_encoding`."""
    pooling: str = "last"
    """``last``: hidden state of the last real token; ``mean``: mean over real tokens."""
    precision: str = "fp32"
    """``fp32``, ``int8`` (dynamic quantization, CPU) or ``fp16`` (CUDA)."""
    package_version: str = ""
    """Version of ``gpt-clf`` that wrote the file."""
    pad_token_id: int = END_OF_TEXT_ID
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
            META_FORMAT: FORMAT_NAME,
            META_FORMAT_VERSION: str(FORMAT_VERSION),
            META_LABELS: json.dumps(list(self.labels)),
            META_MAX_LENGTH: str(self.max_length),
            META_TOKENIZER: self.tokenizer,
            META_POOLING: self.pooling,
            META_PRECISION: self.precision,
            META_PACKAGE_VERSION: self.package_version,
            META_PAD_TOKEN_ID: str(self.pad_token_id),
            META_EXTRA: json.dumps(dict(self.extra), sort_keys=True),
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str], *, source: str = "the model") -> ModelMetadata:
        """Parse ``metadata_props``; raise :class:`MetadataError` naming what is missing."""
        missing = [k for k in META_REQUIRED if k not in props]
        if missing:
            raise MetadataError(
                f"{source} is not a gpt-clf model: its ONNX metadata lacks {', '.join(missing)}. "
                "Export it with `clf-export RUN_DIR --out DIR`, which writes this metadata."
            )
        if props[META_FORMAT] != FORMAT_NAME:
            raise MetadataError(
                f"{source} has metadata format {props[META_FORMAT]!r}, expected {FORMAT_NAME!r}"
            )
        try:
            version = int(props[META_FORMAT_VERSION])
            labels = json.loads(props[META_LABELS])
            max_length = int(props[META_MAX_LENGTH])
            pad = int(props.get(META_PAD_TOKEN_ID, str(END_OF_TEXT_ID)))
            extra = json.loads(props.get(META_EXTRA, "{}"))
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
            tokenizer=props[META_TOKENIZER],
            pooling=props[META_POOLING],
            precision=props[META_PRECISION],
            package_version=props[META_PACKAGE_VERSION],
            pad_token_id=pad,
            extra=extra if isinstance(extra, dict) else {},
        )
