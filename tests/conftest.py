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


CALIBRATION_TEXTS = [
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005",
    "Ok lar... Joking wif u oni...",
    "U dun say so early hor... U c already then say...",
    "WINNER!! As a valued network customer you have been selected to receive a prize",
    "Nah I don't think he goes to usf, he lives around here though",
    "Had your mobile 11 months or more? U R entitled to Update to the latest colour mobiles",
    "I'm gonna be home soon and i don't want to talk about this stuff anymore tonight",
    "SIX chances to win CASH! From 100 to 20,000 pounds txt> CSH11 and send to 87575",
] * 4
"""Training-like texts that calibrate the static int8 scales of the tiny exports."""


def build_tiny_export(out_dir: Path, *, int8_scheme: str = "auto") -> Path:
    """Export the tiny model to ``out_dir``: ``model.onnx`` (fp32) and ``model.int8.onnx``.

    Graph contract: inputs ``input_ids`` int64 (batch, sequence) and ``lengths`` int64 (batch);
    output ``logits`` float32 (batch, num_labels). Each file carries ``ModelMetadata``.
    ``int8_scheme`` other than ``auto`` is calibrated on :data:`CALIBRATION_TEXTS` (``auto``
    without calibration texts is the per-row scheme).
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
        int8_scheme=int8_scheme,
        calibration_texts=None if int8_scheme == "auto" else CALIBRATION_TEXTS,
        extra={"preset": "gpt2-tiny", "seed": TINY_SEED},
    )
    return out_dir


@pytest.fixture(scope="session")
def tiny_export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory with ``model.onnx`` and ``model.int8.onnx`` of the tiny seeded classifier."""
    return build_tiny_export(tmp_path_factory.mktemp("tiny_export"))


@pytest.fixture(scope="session")
def tiny_static_export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny classifier with every int8 activation scale fixed by calibration."""
    return build_tiny_export(tmp_path_factory.mktemp("tiny_static"), int8_scheme="static")


@pytest.fixture(scope="session")
def tiny_export_builder() -> Any:
    """:func:`build_tiny_export` itself, for tests that need another int8 scheme."""
    return build_tiny_export


@pytest.fixture(scope="session")
def calibration_texts() -> list[str]:
    return list(CALIBRATION_TEXTS)


@pytest.fixture(scope="session")
def tiny_torch_model() -> Any:
    """The torch model that ``tiny_export_dir`` was exported from (same seed, eval mode)."""
    import torch

    torch.set_num_threads(1)
    return make_tiny_torch_model()
