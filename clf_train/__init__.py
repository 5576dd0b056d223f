"""Finetune GPT-2-style models into text classifiers (torch). CLI: ``clf-train``.

The errors and the model shapes are torch-free and load with the package; every other name
loads on first use, so ``clf-train`` can explain a missing torch instead of crashing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, RunDirError, TrainError, TrainingError
from .presets import PRESETS, GPTConfig

if TYPE_CHECKING:
    from .api import TrainResult, train
    from .config import TrainConfig
    from .model import GPTClassifier
    from .run_dir import RunConfig, load_run

__all__ = [
    "PRESETS",
    "ConfigError",
    "GPTClassifier",
    "GPTConfig",
    "RunConfig",
    "RunDirError",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "TrainingError",
    "load_run",
    "train",
]

# Module -> the names it provides; imported on first access (PEP 562).
_ON_FIRST_USE = {
    "api": ("TrainResult", "train"),
    "config": ("TrainConfig",),
    "model": ("GPTClassifier",),
    "run_dir": ("RunConfig", "load_run"),
}


def __getattr__(name: str) -> Any:
    module = next((m for m, names in _ON_FIRST_USE.items() if name in names), None)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
