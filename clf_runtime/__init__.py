"""Torch-free runtime of gpt-clf classifiers: onnxruntime + numpy + tiktoken.

>>> from clf_runtime import Classifier
>>> clf = Classifier.load("export_dir")          # doctest: +SKIP
>>> clf.predict(["WINNER!! Claim your prize"])    # doctest: +SKIP
[Prediction(label='spam', score=0.99..., probs={'ham': 0.00..., 'spam': 0.99...})]
"""

from __future__ import annotations

from ._version import __version__
from .classifier import Classifier, Prediction
from .errors import ClassifierError, InvalidInputError, MetadataError, ModelLoadError
from .metadata import ModelMetadata

__all__ = [
    "Classifier",
    "ClassifierError",
    "InvalidInputError",
    "MetadataError",
    "ModelLoadError",
    "ModelMetadata",
    "Prediction",
    "__version__",
]
