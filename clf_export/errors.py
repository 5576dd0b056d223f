"""Exception types of the exporter. Every error says what was received and how to fix it.

:class:`ExportError` is the root of everything ``clf_export`` raises on purpose. Problems of
the inputs that ``clf_train`` reads keep their own types: run directories
:class:`clf_train.run_dir.RunDirError`, pretrained weights
:class:`clf_train.pretrained.PretrainedError`.
"""

from __future__ import annotations

__all__ = ["ExportError", "ParityError"]


class ExportError(Exception):
    """The export cannot be done or its output cannot be written; nothing was left behind."""


class ParityError(ExportError):
    """The ONNX graph's logits differ from the torch model's by more than the tolerance."""
