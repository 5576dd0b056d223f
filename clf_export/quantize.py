"""int8 quantization of an exported fp32 graph, for onnxruntime on CPU.

Before anything, :func:`fold_weight_transforms` turns weight-only Split / Transpose nodes into
plain initializers (applied to the fp32 graph too), since the quantizer only touches MatMuls
whose weight is an initializer. Then :func:`clf_export.rowwise_int8.quantize_rowwise_int8`
rewrites every MatMul with a constant weight as a u8 x s8 integer GEMM with one activation
scale per row (token) and one weight scale per output channel, and stores the embedding
tables as int8 with one scale per row. Per-row activation scales keep the pooling contract:
a text's int8 logits do not depend on its batch mates or its padding, which onnxruntime's
``quantize_dynamic`` (one scale per tensor) breaks. The classification head stays fp32: it
is tiny, and it is where rounding would flip a decision.
"""

from __future__ import annotations

import math
import platform
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExportError

__all__ = [
    "INT8_FORMATS",
    "cpu_has_vnni",
    "fold_weight_transforms",
    "quantize_int8",
    "resolve_int8_format",
]

INT8_FORMATS = ("auto", "u8s8", "u8s8-reduce-range")
"""``--int8-format`` choices: uint8 activations (zero point 128) x int8 weights, 8 or 7 bits."""

_WHY = {
    "u8s8": (
        "uint8 activations x int8 weights (QInt8, full 8-bit range): onnxruntime's recommended "
        "and fastest CPU format; with VNNI (VPDPBUSD) the u8 x s8 products accumulate straight "
        "into int32, so nothing saturates"
    ),
    "u8s8-reduce-range": (
        "uint8 activations x 7-bit int8 weights (reduce_range): onnxruntime's guide warns that "
        "on x86 without VNNI the U8S8 kernels (VPMADDUBSW) sum pairs of products into int16, "
        "which can saturate; 7-bit weights leave the headroom, at the price of one bit of "
        "weight precision"
    ),
}


def cpu_has_vnni(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU has AVX-512 VNNI or AVX-VNNI (Linux ``/proc/cpuinfo`` flags)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return bool(flags & {"avx512_vnni", "avx_vnni"})
    return False


def resolve_int8_format(int8_format: str, *, vnni: bool | None = None) -> tuple[str, str]:
    """Turn ``auto`` into a concrete format for the exporting machine; return (format, why)."""
    if int8_format not in INT8_FORMATS:
        raise ExportError(
            f"unknown int8 format {int8_format!r}; choose one of {', '.join(INT8_FORMATS)} "
            "(--int8-format)"
        )
    if int8_format != "auto":
        return int8_format, _WHY[int8_format] + " (chosen with --int8-format)"
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i386", "i686"):
        # ARM and others have no VPMADDUBSW: U8S8 carries no saturation risk there.
        return "u8s8", _WHY["u8s8"] + f" (auto: {machine} CPU, no x86 saturation issue)"
    if cpu_has_vnni() if vnni is None else vnni:
        return "u8s8", _WHY["u8s8"] + " (auto: this CPU has AVX-512 VNNI or AVX-VNNI)"
    return "u8s8-reduce-range", _WHY["u8s8-reduce-range"] + " (auto: this x86 CPU has no VNNI)"


def fold_weight_transforms(model: Any) -> int:
    """Replace Split / Transpose nodes whose inputs are all initializers by their results.

    The exporter can leave weight-only transforms (a transposed or split weight) as nodes that
    run on every call; folded, they become plain weights that the int8 quantizer sees (it only
    quantizes MatMuls whose weight is an initializer). Works in memory at any size.
    """
    from onnx import helper, numpy_helper

    from .fusions import drop_unused_initializers

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    folded = 0
    for node in list(graph.node):
        if node.op_type not in ("Split", "Transpose"):
            continue
        names = [i for i in node.input if i]
        if not names or not all(i in inits for i in names):
            continue
        x = numpy_helper.to_array(inits[node.input[0]])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Transpose":
            outs = [np.transpose(x, attrs.get("perm"))]
        else:
            axis = int(attrs.get("axis", 0))
            if len(node.input) > 1 and node.input[1]:
                sizes = [int(s) for s in numpy_helper.to_array(inits[node.input[1]])]
            else:  # opset 18 equal split: ceil-sized chunks, the last one smaller
                n = int(attrs.get("num_outputs", len(node.output)))
                chunk = math.ceil(x.shape[axis] / n)
                sizes = [chunk] * (n - 1) + [x.shape[axis] - chunk * (n - 1)]
            outs = np.split(x, np.cumsum(sizes)[:-1], axis=axis)
        graph.node.remove(node)
        for name, arr in zip(node.output, outs, strict=True):
            if name:
                tensor = numpy_helper.from_array(np.ascontiguousarray(arr), name)
                graph.initializer.append(tensor)
                inits[name] = tensor
        folded += 1
    drop_unused_initializers(model)
    return folded


def _head_nodes(graph: Any) -> list[str]:
    """Names of the nodes that compute ``logits`` from the pooled (B, C) state (the head)."""
    producers = {o: n for n in graph.node for o in n.output}
    node = producers.get("logits")
    names = []
    # Walk back over Add/Gemm/MatMul/Identity: the head is Gemm, or MatMul + Add.
    while node is not None and node.op_type in ("Gemm", "MatMul", "Add", "Identity"):
        names.append(node.name)
        if node.op_type in ("Gemm", "MatMul"):
            break
        inputs = [producers.get(i) for i in node.input]
        node = next((n for n in inputs if n is not None), None)
    return names


def quantize_int8(
    fp32_path: Path,
    *,
    int8_format: str = "auto",
    quantize_embeddings: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Quantize the fp32 graph at ``fp32_path``; return the int8 ``ModelProto`` and its settings.

    The caller adds metadata and saves the returned model (with external data when large).
    """
    import onnx

    from .rowwise_int8 import quantize_rowwise_int8

    fmt, why = resolve_int8_format(int8_format)
    fp32 = onnx.load(str(fp32_path))  # external data, if any, is read from beside the file
    head = _head_nodes(fp32.graph)
    try:
        model, stats = quantize_rowwise_int8(
            fp32,
            exclude_nodes=head,
            quantize_embedding=quantize_embeddings,
            reduce_range=fmt == "u8s8-reduce-range",
        )
    except (ValueError, KeyError) as e:
        raise ExportError(f"could not quantize {fp32_path.name} to int8: {e}") from e
    n_float = sum(n.op_type in ("MatMul", "Gemm") for n in model.graph.node)
    info: dict[str, Any] = {
        "format": fmt,
        "why": why,
        "cpu_has_vnni": cpu_has_vnni(),
        "scheme": (
            "activations: uint8 per row (token), symmetric (zero point 128), scale computed per "
            "call from that row alone; weights: int8 per output channel, symmetric"
        ),
        "weight_bits": stats.weight_bits,
        "int8_matmuls": stats.matmuls_quantized,
        # activation x activation (attention) products and the head stay float
        "float_matmuls": n_float,
        "excluded_nodes": head,
        "embedding_tables_int8": stats.gathers_quantized,
    }
    return model, info
