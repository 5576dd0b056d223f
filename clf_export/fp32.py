"""The fp32 graph: trace the torch model to ONNX, fold and fuse it, save it, check parity.

Graph contract (:mod:`clf_runtime.contract`): inputs ``input_ids`` int64 (batch, sequence) and
``lengths`` int64 (batch), right-padded; output ``logits`` float32 (batch, num_labels);
``batch`` and ``sequence`` are dynamic. With ``pooling="last"`` the traced function is
``GPTClassifier.forward_last_only``: the last block's query, MLP, final norm and head run on
one position per row. Attention is traced as onnxruntime's ``MultiHeadAttention``
(:mod:`clf_export.attention`): one fused fp32 op between the integer GEMMs of the int8 graph.

Exporter (pinned): ``torch.onnx.export(..., dynamo=True)``. The TorchScript exporter
(``dynamo=False``) also gives correct dynamic shapes at untraced sizes and the same
onnxruntime CPU speed, but its tracer records ``d_model`` as a runtime ``Shape`` value, so the
last block's split query / key-value weights stay computed tensors that the int8 quantizer
cannot touch; torch.export sees ``d_model`` as a constant and the split folds into plain
weights. It is also the exporter torch keeps (the TorchScript one is deprecated), and it
writes one external-data file for models over 2 GB. The price is a slower export.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clf_runtime.contract import INPUT_IDS, INPUT_NAMES, LENGTHS, LOGITS
from clf_runtime.tokenizer import END_OF_TEXT_ID

from .errors import ExportError
from .fusions import fold_weight_transforms, fuse_tanh_gelu
from .options import FP32, ExportOptions
from .parity import ProbeLogits, check_parity, make_session, parity_inputs
from .progress import stage
from .staging import StagedModels

__all__ = ["EXPORTER", "EXPORTER_WHY", "Fp32Export", "export_fp32"]

EXPORTER = "torch.onnx.export(dynamo=True)"
EXPORTER_WHY = (
    "dynamo exporter pinned: correct dynamic batch/sequence and the same onnxruntime CPU speed "
    "as the TorchScript exporter in torch 2.13, but d_model stays a constant so every weight "
    "MatMul is quantizable; the TorchScript exporter is deprecated"
)
_TRACE_BATCH, _TRACE_SEQUENCE = 2, 8  # mid-sized, so no probe shape equals the traced one


@dataclass(frozen=True)
class Fp32Export:
    """The checked fp32 graph, and what the int8 and fp16 variants are built from."""

    path: Path
    """The staged ``model.onnx``."""
    parity: dict[str, Any]
    """The parity table vs torch (see :func:`~clf_export.parity.check_parity`)."""
    probes: ProbeLogits
    """Its logits on the probe batches: the reference of the other precisions."""
    unfused: Path | None
    """The graph before the onnxruntime-only fusions (kept for the fp16 conversion), or None."""


def _traceable(model: Any) -> Any:
    """A module whose ``forward(input_ids, lengths)`` is what the graph computes."""
    import torch

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            # (B, T), (B,) -> (B, num_labels); forward_last_only falls back to forward for mean
            # pooling.
            return self.model.forward_last_only(input_ids, lengths)

    return Graph().eval()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress logs and deprecation warnings for one call."""
    names = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _trace(model: Any, path: Path, *, opset: int, fused_attention: bool = True) -> None:
    """Trace ``model`` to ``path`` (tensors in ``path.data``) with dynamic batch and sequence.

    ``fused_attention``: attention becomes onnxruntime's ``MultiHeadAttention`` (see
    :mod:`clf_export.attention`); without it, the exporter's standard-op decomposition.
    """
    import torch

    from . import attention

    cfg = model.cfg
    seq = min(_TRACE_SEQUENCE, cfg.context_length)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (_TRACE_BATCH, seq), generator=gen)  # (B, T)
    lengths = torch.tensor([seq, max(1, seq // 2)], dtype=torch.int64)  # (B,)
    batch = torch.export.Dim("batch", min=1)
    sequence = torch.export.Dim("sequence", min=1, max=cfg.context_length)
    patch = attention.fused_attention() if fused_attention else contextlib.nullcontext()
    try:
        with _quiet_exporter(), torch.no_grad(), patch:
            torch.onnx.export(
                _traceable(model),
                (ids, lengths),
                str(path),
                input_names=list(INPUT_NAMES),
                output_names=[LOGITS],
                dynamic_shapes={INPUT_IDS: {0: batch, 1: sequence}, LENGTHS: {0: batch}},
                opset_version=opset,
                custom_translation_table=attention.TRANSLATIONS if fused_attention else None,
                dynamo=True,  # pinned: see the module docstring
                external_data=True,  # one model.onnx.data, whatever the size; re-saved below
                optimize=True,
                verbose=False,
            )
    except Exception as e:  # torch.export raises many unrelated types
        raise ExportError(f"torch.onnx.export failed at opset {opset}: {e}") from e


def _traced_graph(model: Any, scratch: Path, *, opset: int, fused_attention: bool) -> Any:
    """Trace ``model`` (see :func:`_trace`) in ``scratch/trace`` and return the loaded graph,
    weight transforms folded; the files are removed."""
    import onnx

    folder = scratch / "trace"
    folder.mkdir()
    try:
        _trace(model, folder / "traced.onnx", opset=opset, fused_attention=fused_attention)
        proto = onnx.load(str(folder / "traced.onnx"))  # external data read into memory
    finally:
        shutil.rmtree(folder)  # with the external data the exporter wrote beside it
    fold_weight_transforms(proto)
    # The exporter's value_info shape hints are optional, and onnx's file-based shape
    # inference (run before the fp16 conversion) rejects some of them as inconsistent.
    del proto.graph.value_info[:]
    return proto


def export_fp32(
    model: Any, staged: StagedModels, options: ExportOptions, *, max_length: int
) -> tuple[Fp32Export, Any]:
    """Trace ``model`` (in eval mode, attention fused), fold its weight transforms, fuse GELU,
    stage ``model.onnx`` and check it against the model on the probes (:class:`ParityError`).

    Returns the checked graph and an onnxruntime CPU session on it. With ``options.fp16`` a
    second trace without the onnxruntime-only fusions is kept in ``staged.scratch``.
    """
    with stage("trace", f"tracing to ONNX opset {options.opset}, folding, fusing, saving fp32"):
        proto = _traced_graph(model, staged.scratch, opset=options.opset, fused_attention=True)
        unfused = None
        if options.fp16:
            # fp16 is converted from a graph of standard ops (no MultiHeadAttention, no
            # FastGelu): the onnxruntime-only rewrites are for its CPU kernels.
            unfused = staged.scratch / "unfused.onnx"
            staged.save(
                _traced_graph(model, staged.scratch, opset=options.opset, fused_attention=False),
                unfused,
            )
        fuse_tanh_gelu(proto)
        path = staged.write(proto, FP32)
        del proto
    with stage("parity", "comparing fp32 onnxruntime logits with torch at probe shapes"):
        session = make_session(path, threads=options.threads)
        inputs = parity_inputs(
            max_length, vocab_size=model.cfg.vocab_size, pad_token_id=END_OF_TEXT_ID
        )
        probes = ProbeLogits.run(session, inputs)
        parity = check_parity(probes, model, tolerance=options.parity_tolerance)
    return Fp32Export(path, parity, probes, unfused), session
