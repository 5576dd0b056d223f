"""The run directory written by ``clf-train`` and read by ``clf-export``.

Layout (every file written atomically; the names are defined once, in
:mod:`clf_runtime.contract`)::

    RUN/config.json        model config + training config + labels + pooling + max_length
    RUN/model.safetensors  best weights (GPTClassifier state dict), never pickle; of a
                           --trainable lora run: the base (frozen weights, and the head when
                           it trains in full) that the adapter below belongs to
    RUN/adapter.safetensors  --trainable lora only: the adapters, their settings and the
                           sha256 of model.safetensors in the header (clf_train.lora)
    RUN/metrics.json       per split: n, accuracy, loss, per-class P/R/F1, confusion matrix
    RUN/history.json       per-epoch train/val loss and accuracy
    RUN/loss.png, RUN/accuracy.png
    RUN/data_report.json   what was read, skipped, normalized and split, with warnings
    RUN/split/{train,val,test}.jsonl   the exact split used: {"text": ..., "label": ...}
    RUN/checkpoint/        resumable state while training (removed when the run completes)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from clf_runtime._version import __version__
from clf_runtime.atomic import atomic_path, atomic_write_json, atomic_write_text
from clf_runtime.contract import (
    RUN_ADAPTER_FILE,
    RUN_CONFIG_FILE,
    RUN_WEIGHTS_FILE,
    SPLIT_DIR,
    split_file,
)

from .errors import RunDirError
from .lora import LoraSettings, add_adapters, base_state_dict, merge_adapters, read_adapter
from .model import GPTClassifier, GPTConfig

__all__ = [
    "SPLIT_DIR",
    "WEIGHTS_FILE",
    "RunConfig",
    "RunDirError",
    "load_run",
    "read_split",
    "save_weights",
    "write_split",
]

# Older names of contract constants, kept because code outside clf_train imports them from
# here (clf_export reads SPLIT_DIR, the benchmarks WEIGHTS_FILE).
WEIGHTS_FILE = RUN_WEIGHTS_FILE


@dataclass
class RunConfig:
    """Everything needed to rebuild a trained classifier, stored as ``config.json``."""

    model: GPTConfig
    labels: list[str]
    pooling: str = "last"
    max_length: int = 256
    train: dict[str, Any] = field(default_factory=dict)
    """The training config (hyperparameters, seed, data source, init) as given."""
    package_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "gpt-clf-run",
            "package_version": self.package_version,
            "labels": list(self.labels),
            "pooling": self.pooling,
            "max_length": self.max_length,
            "model": self.model.to_dict(),
            "train": self.train,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        try:
            return cls(
                model=GPTConfig.from_dict(data["model"]),
                labels=list(data["labels"]),
                pooling=data.get("pooling", "last"),
                max_length=int(data["max_length"]),
                train=dict(data.get("train", {})),
                package_version=str(data.get("package_version", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise RunDirError(f"{RUN_CONFIG_FILE} is invalid: {e!r}") from e

    def write(self, run_dir: Path) -> None:
        atomic_write_json(Path(run_dir) / RUN_CONFIG_FILE, self.to_dict())


def save_weights(path: Path, model: GPTClassifier, *, run_config: RunConfig | None = None) -> None:
    """Save ``model``'s state dict as safetensors, atomically, with the config in its header.

    A model with LoRA adapters saves its base only (the adapters go to their own file:
    :func:`clf_train.lora.save_adapter`).
    """
    tensors = {k: v.contiguous().cpu() for k, v in base_state_dict(model).items()}
    meta = {"format": "pt"}
    if run_config is not None:
        meta["gpt_clf_config"] = json.dumps(run_config.to_dict())
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_run(
    run_dir: str | Path, *, device: str = "cpu", merge: bool = True
) -> tuple[GPTClassifier, RunConfig]:
    """Rebuild the trained classifier of ``run_dir`` in eval mode.

    A ``--trainable lora`` run is its base plus ``adapter.safetensors``: merged into plain
    weights by default, or with ``merge=False`` the base carrying the adapters (what
    ``clf-export`` checks the merge against). Raises :class:`RunDirError` naming the missing
    file or the mismatching tensor.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(
            f"run directory {run_dir} does not exist; pass the --out DIR of clf-train"
        )
    missing = [f for f in (RUN_CONFIG_FILE, RUN_WEIGHTS_FILE) if not (run_dir / f).is_file()]
    if missing:
        raise RunDirError(
            f"run directory {run_dir} lacks {', '.join(missing)}; it is not a finished clf-train "
            "run (an interrupted run can be completed with `clf-train --resume DIR`)"
        )
    try:
        cfg = RunConfig.from_dict(json.loads((run_dir / RUN_CONFIG_FILE).read_text("utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{run_dir / RUN_CONFIG_FILE} is not valid JSON: {e}") from e
    try:
        state = load_file(str(run_dir / RUN_WEIGHTS_FILE), device=device)
    except (SafetensorError, OSError, ValueError) as e:
        raise RunDirError(f"{run_dir / RUN_WEIGHTS_FILE} is corrupt or unreadable: {e}") from e
    model = GPTClassifier(cfg.model, len(cfg.labels), pooling=cfg.pooling)
    check_state_dict(model, state, source=str(run_dir / RUN_WEIGHTS_FILE))
    model.load_state_dict(state)
    lora = cfg.train.get("lora")
    if lora is not None:
        try:
            settings = LoraSettings.from_dict(lora)
        except (KeyError, TypeError, ValueError) as e:
            raise RunDirError(f"{run_dir / RUN_CONFIG_FILE}: train.lora is invalid: {e!r}") from e
        adapters = read_adapter(
            run_dir / RUN_ADAPTER_FILE, settings, base_file=run_dir / RUN_WEIGHTS_FILE
        )
        try:
            add_adapters(model, settings, seed=0, initial=adapters)  # values from the file
        except ValueError as e:  # ConfigError: names or shapes do not fit
            raise RunDirError(f"{run_dir / RUN_ADAPTER_FILE} does not fit its run: {e}") from e
        if merge:
            model = merge_adapters(model)
    return model.to(device).eval(), cfg


def check_state_dict(
    model: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str
) -> None:
    """Raise :class:`RunDirError` listing every missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(
            f"unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    for name in sorted(set(expected) & set(state)):
        if tuple(expected[name].shape) != tuple(state[name].shape):
            problems.append(
                f"{name} has shape {tuple(state[name].shape)}, config expects "
                f"{tuple(expected[name].shape)}"
            )
    if problems:
        raise RunDirError(
            f"{source} does not match its config: "
            + "; ".join(problems[:8])
            + ". Was config.json edited, or the weights copied from another run?"
        )


def write_split(run_dir: Path, name: str, texts: Sequence[str], labels: Sequence[str]) -> None:
    """Write one split as JSONL ``{"text": ..., "label": ...}`` (atomically)."""
    lines = (
        json.dumps({"text": t, "label": y}, ensure_ascii=False)
        for t, y in zip(texts, labels, strict=True)
    )
    atomic_write_text(Path(run_dir) / split_file(name), "".join(x + "\n" for x in lines))


def read_split(run_dir: str | Path, name: str) -> tuple[list[str], list[str]]:
    """Read one split back: (texts, label names)."""
    path = Path(run_dir) / split_file(name)
    if not path.is_file():
        raise RunDirError(f"{path} is missing; the run directory has no {name!r} split")
    texts, labels = [], []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                row = json.loads(line)
                texts.append(str(row["text"]))
                labels.append(str(row["label"]))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise RunDirError(f"{path}:{lineno} is not a valid split row: {e}") from e
    return texts, labels
