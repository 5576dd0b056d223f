"""Shared test fixtures: a tiny exported classifier (fp32 + int8) built once per session.

``build_tiny_export`` stands in for the real exporter (``clf_export``) so the runtime tests do
not depend on it; it writes the same directory layout and the same metadata.
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


def _write_metadata(path: Path, props: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def build_tiny_export(out_dir: Path) -> Path:
    """Export the tiny model to ``out_dir``: ``model.onnx`` (fp32) and ``model.int8.onnx``.

    Graph contract: inputs ``input_ids`` int64 (batch, sequence) and ``lengths`` int64 (batch);
    output ``logits`` float32 (batch, num_labels). Each file carries ``ModelMetadata``.
    """
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from clf_runtime._version import __version__
    from clf_runtime.metadata import ModelMetadata

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = make_tiny_torch_model()
    ids = torch.tensor([[464, 3290, 318], [40, 588, 50256]], dtype=torch.int64)  # (B=2, T=3)
    lengths = torch.tensor([3, 2], dtype=torch.int64)  # (B,)
    fp32 = out_dir / "model.onnx"
    # TorchScript exporter (dynamo=False) still works in torch 2.13 and gives a plain graph.
    torch.onnx.export(
        model,
        (ids, lengths),
        str(fp32),
        input_names=["input_ids", "lengths"],
        output_names=["logits"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "lengths": {0: "batch"},
            "logits": {0: "batch"},
        },
        opset_version=17,
        dynamo=False,
    )
    meta = ModelMetadata(
        labels=TINY_LABELS,
        max_length=TINY_MAX_LENGTH,
        precision="fp32",
        package_version=__version__,
        extra={"preset": "gpt2-tiny", "seed": TINY_SEED},
    )
    _write_metadata(fp32, meta.to_props())

    int8 = out_dir / "model.int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    int8_meta = ModelMetadata(
        labels=meta.labels,
        max_length=meta.max_length,
        precision="int8",
        package_version=meta.package_version,
        extra=meta.extra,
    )
    _write_metadata(int8, int8_meta.to_props())
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
