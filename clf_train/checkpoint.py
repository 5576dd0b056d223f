"""Resumable training state in ``RUN/checkpoint/``, safe against a kill at any instant.

Layout::

    checkpoint/setup.json                   written once at the start: training config, labels,
                                            init source, model config, data report
    checkpoint/trainable-<gen>.safetensors  current trainable parameters
    checkpoint/optimizer-<gen>.pt           AdamW state (torch.save; loaded with weights_only)
    checkpoint/best-<gen>.safetensors       trainable parameters of the best epoch so far
    checkpoint/state.json                   counters + names of the files above; written LAST

Every file is written atomically under a new generation number, then ``state.json`` is
replaced to name the new set, and only then are older generations deleted. A kill before
``state.json`` is replaced leaves the previous generation complete and named; a kill after
leaves the new one. ``best-*`` is rewritten only when the best epoch changes.

A run killed before ``setup.json`` exists has nothing to resume from: :func:`read_setup`
says so, and that the run must be started again with ``--overwrite``.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from clf_runtime.atomic import atomic_path, atomic_write_json
from clf_runtime.contract import (
    CHECKPOINT_DIR,
    DATA_REPORT_FILE,
    RUN_CONFIG_FILE,
    RUN_WEIGHTS_FILE,
    SPLIT_DIR,
)

from .errors import CheckpointError

__all__ = [
    "CheckpointError",
    "TrainState",
    "has_setup",
    "load_checkpoint",
    "read_setup",
    "remove_checkpoint",
    "save_checkpoint",
    "write_setup",
]

STATE_FILE = "state.json"
SETUP_FILE = "setup.json"
_GEN_FILE = re.compile(r"(trainable|optimizer|best)-(\d+)\.(safetensors|pt)")


@dataclass
class TrainState:
    """A loaded checkpoint: counters (``state``), tensors and optimizer state."""

    state: dict[str, Any]
    """epoch, step, running sums, history, best val loss, patience counter, file names."""
    trainable: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any]


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def write_setup(run_dir: Path, setup: dict[str, Any]) -> None:
    """Write ``setup.json`` (everything needed to rebuild the run before any step)."""
    atomic_write_json(checkpoint_dir(run_dir) / SETUP_FILE, setup)


def has_setup(run_dir: Path) -> bool:
    """Whether ``run_dir`` got as far as ``setup.json``, i.e. ``--resume`` can continue it."""
    return (checkpoint_dir(run_dir) / SETUP_FILE).is_file()


def read_setup(run_dir: Path) -> dict[str, Any]:
    """``setup.json`` of an interrupted run; :class:`CheckpointError` says why there is none."""
    if not has_setup(run_dir):
        raise CheckpointError(_why_no_setup(Path(run_dir)))
    path = checkpoint_dir(run_dir) / SETUP_FILE
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is unreadable: {e}") from e


def _why_no_setup(run_dir: Path) -> str:
    """What ``run_dir`` is, given that it has no ``setup.json``, and what to do about it."""
    setup = f"{CHECKPOINT_DIR}/{SETUP_FILE}"
    if (run_dir / RUN_CONFIG_FILE).is_file() and (run_dir / RUN_WEIGHTS_FILE).is_file():
        return (
            f"{run_dir} holds a finished clf-train run ({RUN_CONFIG_FILE} and "
            f"{RUN_WEIGHTS_FILE} are there, and a finished run has no {CHECKPOINT_DIR}/): there "
            f"is nothing to resume. To train it again, run clf-train with its original flags "
            f"and --out {run_dir} --overwrite"
        )
    # The files a run writes before setup.json, in that order (clf_train.api.train).
    started = [n for n in (SPLIT_DIR, DATA_REPORT_FILE, CHECKPOINT_DIR) if (run_dir / n).exists()]
    if started:
        return (
            f"{run_dir} is a clf-train run directory ({', '.join(started)} exist) but has no "
            f"{setup}: setup was interrupted, so training never reached its first checkpoint "
            "and there is nothing to resume. Start the run again with its original flags: "
            f"clf-train ... --out {run_dir} --overwrite"
        )
    return (
        f"{run_dir} has no {setup}: it is not an interrupted clf-train run (a finished run has "
        "no checkpoint; start a new run with --out)"
    )


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))


def _save_optimizer(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _read_state(ckpt: Path) -> dict[str, Any] | None:
    path = ckpt / STATE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is unreadable: {e}") from e


def save_checkpoint(
    run_dir: Path,
    state: dict[str, Any],
    *,
    trainable: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    best: dict[str, torch.Tensor] | None,
) -> None:
    """Write a new generation. ``best=None`` keeps the previous generation's best weights.

    ``state`` must be JSON-serializable; the file names are added to it.
    """
    ckpt = checkpoint_dir(run_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    prev = _read_state(ckpt)
    gen = int(prev["generation"]) + 1 if prev else 1
    files = {
        "trainable": f"trainable-{gen}.safetensors",
        "optimizer": f"optimizer-{gen}.pt",
        "best": prev["files"]["best"] if prev and best is None else None,
    }
    _save_tensors(ckpt / files["trainable"], trainable)
    _save_optimizer(ckpt / files["optimizer"], optimizer)
    if best is not None:
        files["best"] = f"best-{gen}.safetensors"
        _save_tensors(ckpt / files["best"], best)
    atomic_write_json(ckpt / STATE_FILE, {**state, "generation": gen, "files": files})
    # Only now may the older generations (and temp files of killed writes) go.
    keep = {v for v in files.values() if v}
    for path in ckpt.iterdir():
        stale_gen = _GEN_FILE.fullmatch(path.name) and path.name not in keep
        if stale_gen or (path.name.startswith(".") and path.name.endswith(".tmp")):
            path.unlink(missing_ok=True)


def load_checkpoint(run_dir: Path, *, device: torch.device | str = "cpu") -> TrainState | None:
    """The checkpoint named by ``state.json``, or None when no step was checkpointed yet."""
    ckpt = checkpoint_dir(run_dir)
    state = _read_state(ckpt)
    if state is None:
        return None
    try:
        files = state["files"]
        trainable = load_file(str(ckpt / files["trainable"]), device=str(device))
        best = load_file(str(ckpt / files["best"]), device=str(device)) if files["best"] else None
        optim = torch.load(ckpt / files["optimizer"], map_location=device, weights_only=True)
    except (KeyError, TypeError, OSError, SafetensorError, RuntimeError) as e:
        raise CheckpointError(
            f"the checkpoint in {ckpt} is incomplete or corrupt ({e}); it cannot be resumed"
        ) from e
    return TrainState(state=state, trainable=trainable, best=best, optimizer=optim)


def remove_checkpoint(run_dir: Path) -> None:
    """Delete ``checkpoint/`` once the final run files are written."""
    shutil.rmtree(checkpoint_dir(run_dir), ignore_errors=True)
