"""Exception types of the exporter. Every error says what was received and how to fix it.

Run-directory problems keep their own type, :class:`clf_train.run_dir.RunDirError`, and
pretrained-weight problems :class:`clf_train.pretrained.PretrainedError`; the exporter adds:
"""

from __future__ import annotations

__all__ = ["ExportError", "ParityError"]


class ExportError(Exception):
    """The export cannot be done or its output cannot be written; nothing was left behind."""


class ParityError(ExportError):
    """The ONNX graph's logits differ from the torch model's by more than the tolerance."""
