"""Finetune GPT-2-style models into text classifiers (torch). CLI: ``clf-train``.

Names load on first use, so ``clf-train`` can explain a missing torch instead of crashing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import TrainResult, train
    from .config import ConfigError, TrainConfig
    from .model import PRESETS, GPTClassifier, GPTConfig
    from .run_dir import RunConfig, RunDirError, load_run
    from .trainer import TrainingError

__all__ = [
    "PRESETS",
    "ConfigError",
    "GPTClassifier",
    "GPTConfig",
    "RunConfig",
    "RunDirError",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "load_run",
    "train",
]

_LAZY = {
    "TrainResult": "api",
    "train": "api",
    "ConfigError": "config",
    "TrainConfig": "config",
    "PRESETS": "model",
    "GPTClassifier": "model",
    "GPTConfig": "model",
    "RunConfig": "run_dir",
    "RunDirError": "run_dir",
    "load_run": "run_dir",
    "TrainingError": "trainer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
