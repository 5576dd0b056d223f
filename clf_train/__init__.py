"""Finetune GPT-2-style models into text classifiers (torch). CLI: ``clf-train``."""

from __future__ import annotations

from .model import PRESETS, GPTClassifier, GPTConfig
from .run_dir import RunConfig, RunDirError, load_run

__all__ = ["PRESETS", "GPTClassifier", "GPTConfig", "RunConfig", "RunDirError", "load_run"]
