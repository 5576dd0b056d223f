"""The export report (what was written, how it was checked, with which tools) and the
output directory it lands in (staged beside it, moved into place, report last).

``report.json`` is the last file an export writes (atomically): its presence says every model
beside it passed the parity check. :class:`ExportReport` is also what the Python API returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clf_runtime.atomic import atomic_write_json

from .errors import ExportError

__all__ = [
    "REPORT_FILE",
    "ExportReport",
    "ModelFile",
    "commit_export",
    "describe_file",
    "is_export_file",
    "staging_dir",
    "tool_versions",
]

REPORT_FILE = "report.json"
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

    def model(self, precision: str) -> ModelFile | None:
        """The model file of ``precision``, if it was exported."""
        return next((m for m in self.models if m.precision == precision), None)

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


# ---------------------------------------------------------------------------------------------
# Output directory: stage next to it, move into place at the end


def is_export_file(name: str) -> bool:
    """Whether ``name`` is a file an export writes (models, their data, the report)."""
    return name == REPORT_FILE or (name.startswith("model") and ".onnx" in name)


@contextlib.contextmanager
def staging_dir(out_dir: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary directory beside ``out_dir`` (same filesystem: moves are renames).

    Refuses up front an ``out_dir`` that is a file, is not writable, or already holds an
    export (unless ``overwrite``). The temporary directory is always removed at exit.
    """
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ExportError(f"--out {out_dir} exists and is not a directory; pick another --out")
        existing = sorted(p.name for p in out_dir.iterdir() if is_export_file(p.name))
        if existing and not overwrite:
            raise ExportError(
                f"--out {out_dir} already holds an export ({', '.join(existing)}); pass "
                "--overwrite (overwrite=True) to replace it, or choose another --out"
            )
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise ExportError(f"--out {out_dir} is not writable; choose a writable directory")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.export-", dir=out_dir.parent))
    except OSError as e:
        raise ExportError(
            f"cannot write the export to {out_dir}: {e}. Choose a writable --out directory."
        ) from e
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def commit_export(tmp: Path, out_dir: Path, names: Sequence[str], report: ExportReport) -> None:
    """Move the checked files ``names`` from ``tmp`` into ``out_dir``; write the report last.

    Export files of an older export that this one does not replace are removed.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # The old report goes first: a directory without report.json is visibly incomplete.
        (out_dir / REPORT_FILE).unlink(missing_ok=True)
        for old in out_dir.iterdir():
            if is_export_file(old.name) and old.name not in names:
                old.unlink()
        for name in sorted(names, key=lambda n: not n.endswith(".data")):  # data before graphs
            os.replace(tmp / name, out_dir / name)
        report.write(out_dir / REPORT_FILE)
    except OSError as e:
        raise ExportError(f"cannot move the export into {out_dir}: {e}") from e
