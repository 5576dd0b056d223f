"""Exception types of the runtime. Every error says what was received and how to fix it."""

from __future__ import annotations

__all__ = ["ClassifierError", "InvalidInputError", "MetadataError", "ModelLoadError"]


class ClassifierError(Exception):
    """Base class of every error this package raises on purpose."""


class ModelLoadError(ClassifierError):
    """The model file is missing, unreadable, corrupt or unsafe."""


class MetadataError(ModelLoadError):
    """The ONNX file lacks this project's metadata, or the metadata is invalid."""


class InvalidInputError(ClassifierError, TypeError):
    """The texts passed to ``predict`` are not what the API accepts."""
