"""Static int8: activation scales calibrated once on training texts, fixed in the graph.

A fixed scale cannot depend on batch mates, so the graph is batch-invariant by construction,
and it needs no per-call reductions: each quantized activation costs one ``QuantizeLinear``
and its MatMuls take the bias into the integer GEMM's epilogue (see
:mod:`clf_export.rowwise_int8` for both forms). The price is range: a fixed scale fits the
calibration texts, not each row, and GPT-2's LayerNorm outputs have a few channels far wider
than the rest, which would take most of the 256 levels of a per-tensor scale.

SmoothQuant (Xiao et al., 2023) moves those outlier channels into the weights. For a
LayerNorm whose output only feeds weight MatMuls (directly, or through row gathers such as
the last block's query position), every channel ``j`` gets a factor
``s_j = max|x_j|^a / max|W_j,:|^(1-a)`` that is divided out of the LayerNorm and multiplied
into the weight rows, which leaves the product unchanged::

    LayerNorm(x; g, b) ---------------------> MatMul(W)
            \\--> GatherElements (rows) --> MatMul(W')
    becomes
    LayerNorm(x; g / s, b / s) ---------------------> MatMul(diag(s) W)
                    \\--> GatherElements (rows) --> MatMul(diag(s) W')

The activation's channels become comparable, so one per-tensor scale resolves them all; the
weights keep one scale per output column, so the wider rows cost them little.

Schemes (fastest first): ``static`` fixes every activation; ``static-ln`` fixes the
LayerNorm outputs (the query/key/value and MLP-input projections, smoothed) and keeps
per-row scales for the attention output and the GELU output (whose ranges no LayerNorm
bounds); ``rowwise`` computes every scale per row at run time. Calibration reads each text
alone (batch 1), so padding never enters the ranges.
"""

from __future__ import annotations

import tempfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .fusions import drop_unused_initializers
from .options import CALIBRATION_TEXTS, INT8_SCHEMES
from .rowwise_int8 import weight_matmuls

__all__ = [
    "CALIBRATION_TEXTS",
    "INT8_SCHEMES",
    "SMOOTH_ALPHA",
    "ActivationRange",
    "calibrate",
    "cpu_session",
    "layer_norm_inputs",
    "smooth_layer_norms",
    "static_params",
]

SMOOTH_ALPHA = 0.5
"""SmoothQuant migration strength: 0 leaves the activations alone, 1 moves all range into W."""
_PASS_THROUGH = ("Gather", "GatherElements", "Slice", "Reshape", "Squeeze", "Unsqueeze", "Identity")
"""Ops that only select or reshape rows: a per-channel scale commutes with them."""


@dataclass
class ActivationRange:
    """Calibrated range of one activation (last axis = channels)."""

    low: np.ndarray
    """(C,) per-channel minimum."""
    high: np.ndarray
    """(C,) per-channel maximum."""

    def update(self, x: np.ndarray) -> None:
        x2 = x.reshape(-1, x.shape[-1])
        np.minimum(self.low, x2.min(axis=0), out=self.low)
        np.maximum(self.high, x2.max(axis=0), out=self.high)

    @property
    def abs_max(self) -> np.ndarray:
        """(C,) per-channel max |x|."""
        return np.maximum(np.abs(self.low), np.abs(self.high))

    def scaled(self, factor: np.ndarray) -> ActivationRange:
        """The range of ``x / factor`` (``factor`` > 0, one per channel)."""
        return ActivationRange(self.low / factor, self.high / factor)


def static_params(r: ActivationRange) -> tuple[float, int]:
    """(scale, uint8 zero point) covering ``r`` (0 included, so zero is exact)."""
    low = min(float(r.low.min()), 0.0)
    high = max(float(r.high.max()), 0.0)
    scale = max(high - low, 1e-8) / 255.0
    zero = int(np.clip(round(-low / scale), 0, 255))
    return scale, zero


def calibrate(
    model: onnx.ModelProto,
    token_ids: Iterable[Sequence[int]],
    activations: Collection[str],
    *,
    threads: int | None = None,
) -> dict[str, ActivationRange]:
    """Run the fp32 graph on each text alone and record the range of every named activation.

    ``model`` follows the graph contract (inputs ``input_ids``, ``lengths``).
    """
    from clf_runtime.contract import INPUT_IDS, LENGTHS

    names = sorted(activations)
    outputs = model.graph.output
    n_outputs = len(outputs)
    # The activations become graph outputs for the session only (no copy of the weights).
    outputs.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    try:
        session = cpu_session(model, threads=threads)
    finally:
        del outputs[n_outputs:]
    ranges: dict[str, ActivationRange] = {}
    wanted = [o.name for o in session.get_outputs() if o.name in set(names)]
    for ids in token_ids:
        feeds = {
            INPUT_IDS: np.asarray([ids], dtype=np.int64),  # (1, T): every position real
            LENGTHS: np.asarray([len(ids)], dtype=np.int64),
        }
        for name, value in zip(wanted, session.run(wanted, feeds), strict=True):
            r = ranges.get(name)
            if r is None:
                width = value.shape[-1]
                r = ranges[name] = ActivationRange(
                    np.full(width, np.inf, np.float32), np.full(width, -np.inf, np.float32)
                )
            r.update(value)
    missing = sorted(set(names) - set(ranges))
    if missing:
        raise ValueError(f"calibration produced no values for {missing[:3]}")
    return ranges


def cpu_session(model: onnx.ModelProto | str | Path, *, threads: int | None = None) -> Any:
    """A quiet onnxruntime CPU session on an in-memory graph or a file: a file or a graph too
    large to serialize in one piece (saved to a temporary file with external data) goes
    through :func:`clf_runtime.session.create_session`."""
    import onnxruntime as ort

    from clf_runtime.session import CPU, QUIET, create_session, session_options

    def from_file(path: str | Path) -> Any:
        # QUIET for this session only: the extra outputs of a calibration graph are intended.
        return create_session(path, providers=[CPU], threads=threads, log_severity_level=QUIET)

    if isinstance(model, (str, Path)):
        return from_file(model)
    if model.ByteSize() < 2**31 - 2**26:
        options = session_options(threads)
        options.log_severity_level = QUIET
        return ort.InferenceSession(model.SerializeToString(), options, providers=[CPU])
    with tempfile.TemporaryDirectory(prefix="clf_int8_") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save_model(model, str(path), save_as_external_data=True, location="model.data")
        return from_file(path)


def layer_norm_inputs(graph: onnx.GraphProto, activations: Iterable[str]) -> set[str]:
    """The ``activations`` that a LayerNormalization produces, directly or via row gathers."""
    producer = {o: n for n in graph.node for o in n.output}
    found = set()
    for name in activations:
        node = producer.get(name)
        while node is not None and node.op_type in _PASS_THROUGH:
            node = producer.get(node.input[0])
        if node is not None and node.op_type == "LayerNormalization":
            found.add(name)
    return found


def smooth_layer_norms(
    model: onnx.ModelProto,
    ranges: dict[str, ActivationRange],
    *,
    exclude_nodes: Collection[str] = (),
    alpha: float = SMOOTH_ALPHA,
) -> int:
    """Apply SmoothQuant to every LayerNorm whose output only feeds quantized MatMuls, in place.

    ``ranges`` (activation -> calibrated range) is updated to the smoothed activations.
    Returns the number of LayerNorms smoothed. LayerNorm parameters shared with another
    LayerNorm (the exporter deduplicates equal initializers) are copied first.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes = list(graph.node)  # one list, so node identities (id) stay stable
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    quantized = {id(n) for n in weight_matmuls(nodes, inits, exclude_nodes)}
    outputs = {o.name for o in graph.output}
    count = 0
    for ln in nodes:
        if ln.op_type != "LayerNormalization" or len(ln.input) < 3:
            continue
        if not (_vector(inits.get(ln.input[1])) and _vector(inits.get(ln.input[2]))):
            continue
        ends = _matmul_readers(ln.output[0], consumers, quantized, outputs)
        if not ends or any(e.input[0] not in ranges for e in ends):
            continue
        weights = sorted({e.input[1] for e in ends})
        end_ids = {id(e) for e in ends}
        if any(id(c) not in end_ids for w in weights for c in consumers[w]):
            continue  # a weight also read elsewhere: scaling it would change that reader
        x_max = np.max([ranges[e.input[0]].abs_max for e in ends], axis=0)  # (C,)
        w_arrays = {w: numpy_helper.to_array(inits[w]) for w in weights}
        w_max = np.max([np.abs(w).max(axis=1) for w in w_arrays.values()], axis=0)  # (C,)
        s = np.power(np.maximum(x_max, 1e-5), alpha) / np.power(np.maximum(w_max, 1e-5), 1 - alpha)
        s = np.clip(s, 1e-2, 1e2).astype(np.float32)
        for slot in (1, 2):  # gamma, beta
            name = f"{ln.input[slot]}.smooth{count}"
            value = numpy_helper.to_array(inits[ln.input[slot]]) / s
            graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
            ln.input[slot] = name
        for w, array in w_arrays.items():
            inits[w].CopyFrom(numpy_helper.from_array((array * s[:, None]).astype(np.float32), w))
        for name in {e.input[0] for e in ends}:
            ranges[name] = ranges[name].scaled(s)
        count += 1
    drop_unused_initializers(model)  # the LayerNorm parameters that were copied
    return count


def _vector(t: onnx.TensorProto | None) -> bool:
    return t is not None and len(t.dims) == 1 and t.data_type == TensorProto.FLOAT


def _matmul_readers(
    name: str,
    consumers: Mapping[str, list[onnx.NodeProto]],
    quantized: Collection[int],
    outputs: Collection[str],
) -> list[onnx.NodeProto]:
    """The quantized MatMuls reading ``name`` as their activation, through row-selecting ops
    only; empty when anything else reads it."""
    ends: list[onnx.NodeProto] = []
    stack = [name]
    while stack:
        t = stack.pop()
        if t in outputs:
            return []
        for c in consumers.get(t, []):
            if id(c) in quantized and c.input[0] == t and t not in c.input[1:]:
                ends.append(c)
            elif c.op_type in _PASS_THROUGH and c.input[0] == t and t not in c.input[1:]:
                stack.append(c.output[0])
            else:
                return []
    return ends
