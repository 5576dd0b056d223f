"""Torch-free runtime of gpt-clf classifiers: onnxruntime + numpy + tiktoken.

>>> from clf_runtime import Classifier
>>> clf = Classifier.load("export_dir")          # doctest: +SKIP
>>> clf.predict(["WINNER!! Claim your prize"])    # doctest: +SKIP
[Prediction(label='spam', score=0.99..., probs={'ham': 0.00..., 'spam': 0.99...})]
"""

from __future__ import annotations

from ._version import __version__
from .batcher import BatchedResult, Batcher
from .classifier import Classifier, Prediction
from .errors import (
    BatcherClosedError,
    ClassifierError,
    InvalidInputError,
    MetadataError,
    ModelLoadError,
    QueueFullError,
)
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
