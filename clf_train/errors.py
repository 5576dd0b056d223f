"""Every error ``clf_train`` raises on purpose, under one root: :class:`TrainError`.

A caller that wants "training could not be done, and the message says why" catches
``TrainError`` once; one that cares about the kind catches the subclass. Each subclass keeps
the built-in base it had before the root existed (``ConfigError`` and ``DataError`` are
``ValueError``\\ s, ``TrainingError`` a ``RuntimeError``), so older ``except`` clauses still work.

Pure definitions, no imports: every module (torch-free ones included) can raise these, and
the old import paths (``clf_train.config.ConfigError``, ``clf_train.data.DataError``, ...)
re-export them.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DistributedError",
    "PretrainedError",
    "RunDirError",
    "TrainError",
    "TrainingError",
]


class TrainError(Exception):
    """Root of every deliberate ``clf_train`` failure; the message says what, where and the fix."""


class ConfigError(TrainError, ValueError):
    """The training configuration is invalid; each line names the flag to fix."""


class DataError(TrainError, ValueError):
    """Bad training data. The message is one paragraph: what was wrong, where (file, line), how
    to fix."""


class PretrainedError(TrainError):
    """Weights cannot be found or do not fit. The message says what, where and how to fix."""


class TrainingError(TrainError, RuntimeError):
    """Training could not continue (non-finite loss or weights, inconsistent checkpoint)."""


class DistributedError(TrainingError):
    """A collective (gradient all-reduce, barrier) failed or timed out in a multi-process run:
    another rank stopped (its own message says why) or did not answer within --dist-timeout."""


class CheckpointError(TrainError):
    """The checkpoint directory is missing, incomplete or unreadable."""


class RunDirError(TrainError):
    """A run directory is missing files or holds files that do not fit together."""
