"""Shared test fixtures: a tiny exported classifier (fp32 + int8) built once per session.

``build_tiny_export`` runs the real exporter (``clf_export.export_model``), so the runtime
tests exercise exactly the files that ``clf-export`` ships.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

TINY_LABELS = ("negative", "neutral", "positive")
TINY_MAX_LENGTH = 64
TINY_SEED = 0


def make_tiny_torch_model() -> Any:
    """The seeded gpt2-tiny classifier (2 blocks, d_model 128, 3 labels) in eval mode."""
    import torch

    from clf_train.model import PRESETS, GPTClassifier, init_weights

    torch.manual_seed(TINY_SEED)
    model = GPTClassifier(PRESETS["gpt2-tiny"], len(TINY_LABELS))
    init_weights(model, seed=TINY_SEED, n_layer=PRESETS["gpt2-tiny"].n_layer)
    return model.eval()


def build_tiny_export(out_dir: Path) -> Path:
    """Export the tiny model to ``out_dir``: ``model.onnx`` (fp32) and ``model.int8.onnx``.

    Graph contract: inputs ``input_ids`` int64 (batch, sequence) and ``lengths`` int64 (batch);
    output ``logits`` float32 (batch, num_labels). Each file carries ``ModelMetadata``.
    """
    from clf_export import export_model

    out_dir = Path(out_dir)
    export_model(
        make_tiny_torch_model(),
        list(TINY_LABELS),
        out_dir,
        max_length=TINY_MAX_LENGTH,
        quantize=True,
        overwrite=True,
        extra={"preset": "gpt2-tiny", "seed": TINY_SEED},
    )
    return out_dir


@pytest.fixture(scope="session")
def tiny_export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory with ``model.onnx`` and ``model.int8.onnx`` of the tiny seeded classifier."""
    return build_tiny_export(tmp_path_factory.mktemp("tiny_export"))


@pytest.fixture(scope="session")
def tiny_torch_model() -> Any:
    """The torch model that ``tiny_export_dir`` was exported from (same seed, eval mode)."""
    import torch

    torch.set_num_threads(1)
    return make_tiny_torch_model()
