"""The artifact contract: every name that training, export and serving must agree on.

One module, owned by the runtime (the package every other one may import), so that a model
trained by ``clf_train``, written by ``clf_export`` and served by ``clf_runtime`` can never
disagree on a file name, a graph input or a vocabulary word. Nothing here imports anything:
it is pure data, safe to import from any layer.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACCURACY_PNG",
    "CHECKPOINT_DIR",
    "DATA_REPORT_FILE",
    "EXPORT_REPORT_FILE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FP16",
    "FP32",
    "HISTORY_FILE",
    "INPUT_IDS",
    "INPUT_NAMES",
    "INPUT_TYPES",
    "INT8",
    "LENGTHS",
    "LOGITS",
    "LOGITS_TYPE",
    "LOSS_PNG",
    "META_EXTRA",
    "META_FORMAT",
    "META_FORMAT_VERSION",
    "META_LABELS",
    "META_MAX_LENGTH",
    "META_PACKAGE_VERSION",
    "META_PAD_TOKEN_ID",
    "META_POOLING",
    "META_PRECISION",
    "META_REQUIRED",
    "META_TOKENIZER",
    "METRICS_FILE",
    "MODEL_FILES",
    "POOLINGS",
    "POOL_LAST",
    "POOL_MEAN",
    "PRECISIONS",
    "RUN_ADAPTER_FILE",
    "RUN_CONFIG_FILE",
    "RUN_WEIGHTS_FILE",
    "SPLITS",
    "SPLIT_DIR",
    "TEST",
    "TRAIN",
    "VAL",
    "split_file",
]

# ----------------------------------------------------------------------------- the ONNX graph
INPUT_IDS: Final = "input_ids"
"""Right-padded token ids, int64 ``(batch, sequence)``."""
LENGTHS: Final = "lengths"
"""Number of real tokens per row, int64 ``(batch,)``; the model pools at ``lengths - 1``."""
LOGITS: Final = "logits"
"""One logit per label, float32 ``(batch, num_labels)``."""
INPUT_NAMES: Final = (INPUT_IDS, LENGTHS)
INPUT_TYPES: Final = {INPUT_IDS: "tensor(int64)", LENGTHS: "tensor(int64)"}
"""onnxruntime's type strings of the inputs (``NodeArg.type``)."""
LOGITS_TYPE: Final = "tensor(float)"

# ----------------------------------------------------------------------------- vocabularies
POOL_LAST: Final = "last"
"""Pool the hidden state of the last real token (the default)."""
POOL_MEAN: Final = "mean"
"""Pool the mean of the real tokens' hidden states."""
POOLINGS: Final = (POOL_LAST, POOL_MEAN)
FP32: Final = "fp32"
INT8: Final = "int8"
FP16: Final = "fp16"
PRECISIONS: Final = (FP32, INT8, FP16)
"""Model precisions an export directory can hold."""
TRAIN: Final = "train"
VAL: Final = "val"
TEST: Final = "test"
SPLITS: Final = (TRAIN, VAL, TEST)
"""Data splits of a training run, in this order everywhere (files, metrics, reports)."""

# ----------------------------------------------------------------------------- export directory
MODEL_FILES: Final = {FP32: "model.onnx", INT8: "model.int8.onnx", FP16: "model.fp16.onnx"}
"""File name of each precision inside an export directory."""
EXPORT_REPORT_FILE: Final = "report.json"
"""Written last by ``clf-export``: its presence says every model beside it passed its checks."""

# ----------------------------------------------------------------------------- run directory
RUN_CONFIG_FILE: Final = "config.json"
RUN_WEIGHTS_FILE: Final = "model.safetensors"
"""The classifier's weights; of a ``--trainable lora`` run, the base the adapter belongs to."""
RUN_ADAPTER_FILE: Final = "adapter.safetensors"
"""A ``--trainable lora`` run's adapters (clf-export merges them into the base)."""
METRICS_FILE: Final = "metrics.json"
HISTORY_FILE: Final = "history.json"
DATA_REPORT_FILE: Final = "data_report.json"
LOSS_PNG: Final = "loss.png"
ACCURACY_PNG: Final = "accuracy.png"
SPLIT_DIR: Final = "split"
CHECKPOINT_DIR: Final = "checkpoint"


def split_file(name: str) -> str:
    """Path of split ``name`` inside a run directory, e.g. ``split/test.jsonl``."""
    return f"{SPLIT_DIR}/{name}.jsonl"


# ----------------------------------------------------------------------------- ONNX metadata
FORMAT_NAME: Final = "gpt-clf"
FORMAT_VERSION: Final = 1
META_FORMAT: Final = "format"
META_FORMAT_VERSION: Final = "format_version"
META_LABELS: Final = "labels"
META_MAX_LENGTH: Final = "max_length"
META_TOKENIZER: Final = "tokenizer"
META_POOLING: Final = "pooling"
META_PRECISION: Final = "precision"
META_PACKAGE_VERSION: Final = "package_version"
META_PAD_TOKEN_ID: Final = "pad_token_id"
META_EXTRA: Final = "extra"
META_REQUIRED: Final = (
    META_FORMAT,
    META_FORMAT_VERSION,
    META_LABELS,
    META_MAX_LENGTH,
    META_TOKENIZER,
    META_POOLING,
    META_PRECISION,
    META_PACKAGE_VERSION,
)
"""Keys every gpt-clf ONNX file's ``metadata_props`` must hold."""
