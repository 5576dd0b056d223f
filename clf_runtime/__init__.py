"""Torch-free runtime of gpt-clf classifiers: onnxruntime + numpy + tiktoken.

>>> from clf_runtime import Classifier
>>> clf = Classifier.load("export_dir")          # doctest: +SKIP
>>> clf.predict(["WINNER!! Claim your prize"])    # doctest: +SKIP
[Prediction(label='spam', score=0.99..., probs={'ham': 0.00..., 'spam': 0.99...})]

Names load on first use: ``import clf_runtime.contract`` (what training and export import for
the artifact names) stays free of onnxruntime and tiktoken.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    BatcherClosedError,
    ClassifierError,
    InvalidInputError,
    MetadataError,
    ModelLoadError,
    QueueFullError,
)

if TYPE_CHECKING:
    from .batcher import BatchedResult, Batcher
    from .classifier import Classifier, Prediction
    from .metadata import ModelMetadata

__all__ = [
    "BatchedResult",
    "Batcher",
    "BatcherClosedError",
    "Classifier",
    "ClassifierError",
    "InvalidInputError",
    "MetadataError",
    "ModelLoadError",
    "ModelMetadata",
    "Prediction",
    "QueueFullError",
    "__version__",
]

_LAZY = {
    "BatchedResult": "batcher",
    "Batcher": "batcher",
    "Classifier": "classifier",
    "Prediction": "classifier",
    "ModelMetadata": "metadata",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
