"""Finding pretrained GPT-2 weights: a model name through the Hugging Face hub cache (and a
download when online), or a ``--weights`` path (directory or file).

Offline rule: :func:`clf_train.offline.offline_reason` (any of ``CLF_OFFLINE``,
``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` true), the same rule as the ``sms-spam`` data
source; offline, a name resolves from the hub cache only. ``huggingface_hub`` is imported only
when a name must be resolved.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import PretrainedError
from ..offline import offline_reason
from ..presets import PRESETS, PRETRAINED_NAMES

__all__ = ["HUB_FILES", "check_name", "locate", "resolve_hub"]

# Hugging Face's file names; that a clf-train run directory uses the same two names for its
# own (different) files is a coincidence: those come from clf_runtime.contract.
HF_CONFIG_FILE = "config.json"
HF_WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
"""Weights file names of a Hugging Face checkpoint directory, in order of preference."""
HUB_FILES = (HF_CONFIG_FILE, HF_WEIGHTS_FILES[0])
"""What a snapshot must hold for a name to resolve (and all a download fetches)."""


def check_name(model: str, *, shape_only: bool = False) -> None:
    """Refuse a ``--model`` name without published weights, saying what to do instead.

    ``shape_only``: the weights come from a file and the name only gives their shape, so
    every preset (``gpt2-tiny`` and ``gpt2-mini`` included) is accepted.
    """
    if model in PRETRAINED_NAMES or (shape_only and model in PRESETS):
        return
    if model in PRESETS:
        raise PretrainedError(
            f"{model} has no pretrained weights; add --init random (or pick one of "
            f"{', '.join(PRETRAINED_NAMES)})"
        )
    raise PretrainedError(
        f"unknown model {model!r}; pretrained GPT-2 sizes are {', '.join(PRETRAINED_NAMES)}"
    )


def _hub_cache_dir(constants: Any) -> Path:
    # Read the environment at call time: huggingface_hub freezes it at import, which may have
    # happened before the caller (or a test) set HF_HOME.
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def _has_hub_files(folder: Path) -> bool:
    return all((folder / f).is_file() for f in HUB_FILES)


def resolve_hub(name: str) -> Path:
    """The snapshot directory holding ``config.json`` + ``model.safetensors`` for ``name``."""
    repo = f"openai-community/{name}"
    how = (
        f"Supply it with --weights DIR (a directory holding config.json + model.safetensors, "
        f"e.g. from `huggingface-cli download {repo} config.json model.safetensors "
        f"--local-dir DIR` on a machine with network) or --weights FILE.pth (a chapter-6 "
        f"state dict); or, without pretrained weights, train a small model from scratch: "
        f"--init random --model gpt2-mini --trainable all (offline, minutes on a CPU)"
    )
    try:
        import huggingface_hub
        from huggingface_hub import constants
    except ImportError as e:
        raise PretrainedError(
            f"finding {name} by name needs huggingface_hub: `pip install huggingface_hub`. " + how
        ) from e
    cache = _hub_cache_dir(constants)
    for repo_id in (repo, name):  # `name` alone: the legacy repo id, cached as models--gpt2
        found = [
            huggingface_hub.try_to_load_from_cache(repo_id, f, cache_dir=cache) for f in HUB_FILES
        ]
        # Both files must come from the same snapshot (the one refs/main points to).
        if all(isinstance(p, str) for p in found) and _has_hub_files(Path(found[0]).parent):
            return Path(found[0]).parent
    offline = offline_reason()
    if offline is not None:
        why = f"offline: {offline}"
    else:
        try:
            snap = Path(
                huggingface_hub.snapshot_download(
                    repo, allow_patterns=list(HUB_FILES), cache_dir=cache
                )
            )
        except Exception as e:  # network, auth and disk errors come in many types
            raise PretrainedError(
                f"{name} is not in the Hugging Face cache ({cache}) and could not be "
                f"downloaded ({type(e).__name__}: {e}). " + how
            ) from e
        if _has_hub_files(snap):
            return snap
        why = f"the download of {repo} lacks {' or '.join(HUB_FILES)}"
    raise PretrainedError(
        f"{name} is not in the Hugging Face cache ({cache}) and could not be downloaded "
        f"({why}). " + how
    )


def locate(path: Path, *, flag: str = "--weights") -> tuple[Path, Path | None]:
    """(weights file, config.json or None) for a --weights directory or file.

    ``flag`` is how the path was given, for the messages (clf-export: ``--state-dict``).
    """
    if path.is_dir():
        for name in HF_WEIGHTS_FILES:
            if (path / name).is_file():
                config = path / HF_CONFIG_FILE
                return path / name, config if config.is_file() else None
        listing = sorted(p.name for p in path.iterdir())[:10]
        raise PretrainedError(
            f"{flag} {path} is a directory without model.safetensors (it holds {listing}); "
            "expected a Hugging Face GPT-2 directory (config.json + model.safetensors) or "
            "pass the weights file itself"
        )
    if path.is_file():
        config = path.with_name(HF_CONFIG_FILE)
        # Only safetensors files take a config from beside them: a .pth has no such convention.
        use = path.suffix.lower() == ".safetensors" and config.is_file()
        return path, config if use else None
    raise PretrainedError(
        f"{flag} {path} does not exist; pass a directory with config.json + "
        "model.safetensors, a .safetensors file, or a chapter-6 .pth state dict"
    )
