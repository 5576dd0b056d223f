"""Export a trained GPT classifier to ONNX (fp32, int8, fp16) and check it. CLI: ``clf-export``.

``export_run(run_dir, out_dir, ExportOptions(quantize=True))`` (or the shorthand
``export_run(run_dir, out_dir, quantize=True)``) writes ``model.onnx``, ``model.int8.onnx``
and ``report.json``; every ``.onnx`` file carries :class:`clf_runtime.metadata.ModelMetadata`.
Every error the exporter raises on purpose is an :class:`ExportError`. Importing this package
is cheap: torch, onnx and onnxruntime load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ExportError, ParityError

if TYPE_CHECKING:
    from .onnx_export import export_model, export_run, export_state_dict
    from .options import ExportOptions
    from .report import ExportReport

__all__ = [
    "ExportError",
    "ExportOptions",
    "ExportReport",
    "ParityError",
    "export_model",
    "export_run",
    "export_state_dict",
]

_LAZY = {
    "export_model": "onnx_export",
    "export_run": "onnx_export",
    "export_state_dict": "onnx_export",
    "ExportOptions": "options",
    "ExportReport": "report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
