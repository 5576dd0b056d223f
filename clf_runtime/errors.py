"""Exception types of the runtime. Every error says what was received and how to fix it."""

from __future__ import annotations

__all__ = [
    "BatcherClosedError",
    "ClassifierError",
    "InvalidInputError",
    "MetadataError",
    "ModelLoadError",
    "QueueFullError",
]


class ClassifierError(Exception):
    """Base class of every error this package raises on purpose."""


class ModelLoadError(ClassifierError):
    """The model file is missing, unreadable, corrupt or unsafe."""


class MetadataError(ModelLoadError):
    """The ONNX file lacks this project's metadata, or the metadata is invalid."""


class InvalidInputError(ClassifierError, TypeError):
    """The texts passed to ``predict`` are not what the API accepts."""


class QueueFullError(ClassifierError):
    """A :class:`~clf_runtime.batcher.Batcher`'s queue has no room for the texts submitted."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds after which the queue is expected to have drained enough to retry."""


class BatcherClosedError(ClassifierError):
    """Texts were submitted to a :class:`~clf_runtime.batcher.Batcher` that is closed."""
