"""The export report: what was written, how it was checked, with which tools.

``report.json`` is the last file an export writes (atomically, see
:func:`clf_export.staging.commit_export`): its presence says every model beside it passed its
checks. :class:`ExportReport` is also what the Python API returns.
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clf_runtime.atomic import atomic_write_json

__all__ = ["ExportReport", "ModelFile", "describe_file", "tool_versions"]

REPORT_FORMAT = "gpt-clf-export-report"


@dataclass(frozen=True)
class ModelFile:
    """One exported model file (and its external-data file, when it has one)."""

    file: str
    """File name inside the export directory, e.g. ``model.int8.onnx``."""
    precision: str
    """``fp32``, ``int8`` or ``fp16``."""
    bytes: int
    """Size of the ``.onnx`` file."""
    sha256: str
    external_data: str | None = None
    """Name of the tensor-data file beside it (models over 2 GB), else None."""
    external_data_bytes: int = 0
    external_data_sha256: str | None = None

    @property
    def total_bytes(self) -> int:
        """Bytes on disk, the external-data file included."""
        return self.bytes + self.external_data_bytes


@dataclass
class ExportReport:
    """Everything ``clf-export`` records in ``report.json``."""

    out_dir: str
    source: dict[str, Any]
    """Where the model came from: ``{"kind": "run_dir" | "state_dict" | "model", ...}``."""
    labels: list[str]
    max_length: int
    pooling: str
    pad_token_id: int
    exporter: dict[str, Any]
    """Exporter name, opset and why it was chosen."""
    models: list[ModelFile]
    parity: dict[str, Any]
    """fp32 graph vs torch: tolerance and max |logit diff| per probe shape."""
    lora: dict[str, Any] | None = None
    """A LoRA model's merge: merged vs unmerged torch logits per probe shape, the adapted
    layers (:func:`clf_export.merge.merge_for_export`); None for a model without adapters."""
    int8: dict[str, Any] | None = None
    """int8 format and why, quantized ops, embedding scheme, comparison with fp32."""
    fp16: dict[str, Any] | None = None
    """What was checked (provider, diff and agreement vs fp32), or why not."""
    evaluation: dict[str, Any] | None = None
    """Held-out accuracy per precision and agreement with fp32, or None without data."""
    versions: dict[str, str] = field(default_factory=lambda: tool_versions())
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the content of ``report.json``)."""
        data = asdict(self)
        for entry, model in zip(data["models"], self.models, strict=True):
            entry["total_bytes"] = model.total_bytes
        return {"format": REPORT_FORMAT, **data}

    def write(self, path: Path) -> None:
        """Write ``report.json`` atomically (NaN is refused: it is not JSON)."""
        atomic_write_json(path, self.to_dict())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_file(path: Path, precision: str, *, external_data: Path | None = None) -> ModelFile:
    """Size and sha256 of an exported file (and of its external-data file)."""
    return ModelFile(
        file=path.name,
        precision=precision,
        bytes=path.stat().st_size,
        sha256=_sha256(path),
        external_data=None if external_data is None else external_data.name,
        external_data_bytes=0 if external_data is None else external_data.stat().st_size,
        external_data_sha256=None if external_data is None else _sha256(external_data),
    )


def tool_versions() -> dict[str, str]:
    """Versions of everything that shaped the exported bytes."""
    import onnx
    import onnxruntime
    import torch

    from clf_runtime._version import __version__

    return {
        "gpt_clf": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }
