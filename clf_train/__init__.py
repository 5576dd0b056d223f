"""Finetune GPT-2-style models into text classifiers (torch). CLI: ``clf-train``."""

from __future__ import annotations

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
