"""Where an export is written: a staging directory beside ``out_dir``, moved into place at the end.

Every model file is saved into the staging directory (with its metadata, and its tensors in
``<file>.data`` when the model is too large for one protobuf), checked there, and only then
moved into ``out_dir``, the report last (:func:`commit_export`). So nothing that looks like a
successful export is ever left behind by a failure: ``report.json`` present means every model
beside it passed its checks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clf_runtime.contract import EXPORT_REPORT_FILE, MODEL_FILES
from clf_runtime.metadata import ModelMetadata

from .errors import ExportError
from .options import EXTERNAL_DATA_THRESHOLD
from .report import ModelFile, describe_file

if TYPE_CHECKING:
    from .report import ExportReport

__all__ = [
    "StagedModels",
    "commit_export",
    "data_file",
    "is_export_file",
    "save_onnx",
    "staging_dir",
]

_DATA_SUFFIX = ".data"


def data_file(path: Path) -> Path:
    """The external-data file of the model at ``path``: ``<file>.data`` beside it."""
    return path.with_name(path.name + _DATA_SUFFIX)


_EXPORT_FILES = frozenset(
    [EXPORT_REPORT_FILE]
    + [name for file in MODEL_FILES.values() for name in (file, data_file(Path(file)).name)]
)


def is_export_file(name: str) -> bool:
    """Whether ``name`` is a file an export writes (models, their data, the report)."""
    return name in _EXPORT_FILES


def _tensor_bytes(model: Any) -> int:
    return sum(len(t.raw_data) if t.raw_data else t.ByteSize() for t in model.graph.initializer)


def save_onnx(model: Any, path: Path, *, threshold: int = EXTERNAL_DATA_THRESHOLD) -> Path | None:
    """Save ``model`` to ``path``; tensors go to ``<name>.data`` beside it above ``threshold``.

    The external-data location is stored as a bare file name, so the pair can be moved
    together. Returns the data file, or None. Note: ``onnx`` moves the tensors out of the
    in-memory ``model`` when it writes external data; reload the file to use it again.
    """
    import onnx

    data = data_file(path)
    data.unlink(missing_ok=True)
    try:
        if _tensor_bytes(model) > threshold:
            onnx.save_model(
                model,
                str(path),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data.name,
                size_threshold=1024,
            )
            return data
        onnx.save_model(model, str(path))
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot write {path}: {e}") from e
    return None


class StagedModels:
    """The model files of one export inside its staging directory, in the order written.

    ``metadata`` is what every file says about itself; :meth:`write` sets its precision.
    :attr:`scratch` is a directory for intermediate graphs, removed by :meth:`drop_scratch`.
    """

    def __init__(self, directory: Path, metadata: ModelMetadata, *, threshold: int) -> None:
        self.directory = directory
        self.scratch = directory / "scratch"
        self.scratch.mkdir()
        self._metadata = metadata
        self._threshold = threshold
        self._data: dict[str, Path | None] = {}  # precision -> its external-data file

    def path(self, precision: str) -> Path:
        """Where the model of ``precision`` is (or will be) staged."""
        return self.directory / MODEL_FILES[precision]

    def save(self, proto: Any, path: Path) -> Path | None:
        """Save an intermediate graph (external data above the threshold); see :func:`save_onnx`."""
        return save_onnx(proto, path, threshold=self._threshold)

    def write(self, proto: Any, precision: str) -> Path:
        """Stamp ``proto`` with the metadata of ``precision``, save it, return its path."""
        del proto.metadata_props[:]
        for key, value in replace(self._metadata, precision=precision).to_props().items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        path = self.path(precision)
        self._data[precision] = self.save(proto, path)
        return path

    @property
    def names(self) -> list[str]:
        """File names to move into ``out_dir``: every model and its external-data file."""
        return [
            name
            for precision, data in self._data.items()
            for name in [MODEL_FILES[precision]] + ([data.name] if data is not None else [])
        ]

    def describe(self) -> list[ModelFile]:
        """Size and sha256 of every staged model, for the report."""
        return [describe_file(self.path(p), p, external_data=d) for p, d in self._data.items()]

    def drop_scratch(self) -> None:
        """Remove the intermediate graphs (before the evaluation, to free the disk early)."""
        shutil.rmtree(self.scratch)


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
        (out_dir / EXPORT_REPORT_FILE).unlink(missing_ok=True)
        for old in out_dir.iterdir():
            if is_export_file(old.name) and old.name not in names:
                old.unlink()
        # data before graphs: a graph never lands in out_dir before the tensors it reads
        for name in sorted(names, key=lambda n: not n.endswith(_DATA_SUFFIX)):
            os.replace(tmp / name, out_dir / name)
        report.write(out_dir / EXPORT_REPORT_FILE)
    except OSError as e:
        raise ExportError(f"cannot move the export into {out_dir}: {e}") from e
