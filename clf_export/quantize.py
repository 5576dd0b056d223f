"""int8 dynamic quantization of an exported fp32 graph, for onnxruntime on CPU.

Before anything, :func:`fold_weight_transforms` turns weight-only Split / Transpose nodes into
plain initializers (applied to the fp32 graph too), since the quantizer only touches MatMuls
whose weight is an initializer. Then two parts:

1. ``onnxruntime.quantization.quantize_dynamic`` on every MatMul with a constant weight:
   weights int8 ahead of time, activations quantized to uint8 per call (dynamic quantization
   always uses uint8 activations). The weight format follows onnxruntime's quantization guide
   (see :func:`resolve_int8_format`). The classification head stays fp32: it is tiny, and it
   is where rounding would flip a decision.
2. The token embedding table (``vocab_size x d_model``, 154 MB of the 498 MB GPT-2 small fp32
   file) becomes weight-only int8 with one scale per row. onnxruntime's own Gather
   quantization uses one uint8 scale for the whole table; a scale per token row keeps each
   row's relative error at about 0.2 % whatever its norm. The rows are dequantized right
   after the lookup, so all arithmetic stays float. This cuts the file and the runtime's cold
   start and resident memory.
"""

from __future__ import annotations

import logging
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
    "quantize_token_embedding",
]

INT8_FORMATS = ("auto", "u8s8", "u8u8", "u8s8-reduce-range")
"""``--int8-format`` choices: activation type, weight type (u8 activations are fixed)."""

_WHY = {
    "u8s8": (
        "uint8 activations x int8 weights (QInt8, full 8-bit range): onnxruntime's recommended "
        "and fastest CPU format; with VNNI (VPDPBUSD) the u8 x s8 products accumulate straight "
        "into int32, so nothing saturates"
    ),
    "u8u8": (
        "uint8 activations x uint8 weights (QUInt8): on x86 without VNNI, onnxruntime runs "
        "U8S8 with VPMADDUBSW, whose int16 intermediate sums can saturate and cost accuracy; "
        "U8U8 takes another kernel path that does not saturate (what onnxruntime's guide and "
        "optimum's AVX2 preset use)"
    ),
    "u8s8-reduce-range": (
        "uint8 activations x 7-bit int8 weights (QInt8, reduce_range): keeps the U8S8 kernels "
        "on x86 without VNNI while leaving headroom against VPMADDUBSW saturation, at the "
        "price of one bit of weight precision"
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
    return "u8u8", _WHY["u8u8"] + " (auto: this x86 CPU has no VNNI)"


def fold_weight_transforms(model: Any) -> int:
    """Replace Split / Transpose nodes whose inputs are all initializers by their results.

    ``forward_last_only`` splits the last block's fused qkv weight into query and key/value
    parts at run time; folded, they become plain weights that the int8 quantizer sees (it
    only quantizes MatMuls whose weight is an initializer). Works in memory at any size.
    """
    from onnx import helper, numpy_helper

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
    _drop_unused_initializers(model)
    return folded


def _drop_unused_initializers(model: Any) -> None:
    graph = model.graph
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    # Delete by index: comparing large tensor messages for `remove` would be slow.
    for index in reversed(range(len(graph.initializer))):
        if graph.initializer[index].name not in used:
            del graph.initializer[index]


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
    out_path: Path,
    *,
    int8_format: str = "auto",
    per_channel: bool = True,
    quantize_embeddings: bool = True,
    external_data: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Quantize the fp32 graph at ``fp32_path``; return the int8 ``ModelProto`` and its settings.

    ``out_path`` is a scratch file for onnxruntime's quantizer (it only writes to disk); the
    caller adds metadata and saves the returned model. ``external_data`` must be True when the
    fp32 model is over 2 GB (protobuf's limit).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fmt, why = resolve_int8_format(int8_format)
    weight_type = QuantType.QUInt8 if fmt == "u8u8" else QuantType.QInt8
    reduce_range = fmt == "u8s8-reduce-range"
    fp32_graph = onnx.load(str(fp32_path), load_external_data=False).graph
    head = _head_nodes(fp32_graph)
    head_weights = [n.input[1] for n in fp32_graph.node if n.name in head and len(n.input) > 1]
    # In dynamic mode the quantizer first rewrites Gemm as MatMul + Add, naming the MatMul
    # "<gemm>_MatMul"; exclude that name too.
    head += [f"{name}_MatMul" for name in head]
    # The quantizer logs a "consider pre-processing" hint on the root logger: not for users.
    quant_logger = logging.getLogger()
    level = quant_logger.level
    quant_logger.setLevel(max(level, logging.ERROR))
    try:
        quantize_dynamic(
            str(fp32_path),
            str(out_path),
            op_types_to_quantize=["MatMul"],
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=weight_type,
            nodes_to_exclude=head,
            use_external_data_format=external_data,
        )
    except Exception as e:  # the quantizer raises bare Exceptions and asserts
        raise ExportError(f"onnxruntime could not quantize {fp32_path.name} to int8: {e}") from e
    finally:
        quant_logger.setLevel(level)
    model = onnx.load(str(out_path))
    float_weights = {
        i for n in model.graph.node if n.op_type in ("MatMul", "Gemm") for i in n.input[1:2]
    }
    if not set(head_weights) <= float_weights:  # a quantizer that renames nodes lands here
        raise ExportError(
            f"onnxruntime's quantizer quantized the classification head ({head_weights}) "
            "although it was excluded; the head must stay fp32"
        )
    n_int8 = sum(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in model.graph.node)
    n_float = sum(n.op_type == "MatMul" for n in model.graph.node)
    info: dict[str, Any] = {
        "format": fmt,
        "why": why,
        "cpu_has_vnni": cpu_has_vnni(),
        "activation_type": "QUInt8 (dynamic, per call)",
        "weight_type": "QUInt8" if weight_type == QuantType.QUInt8 else "QInt8",
        "reduce_range": reduce_range,
        "per_channel": per_channel,
        "quantized_op_types": ["MatMul"],
        "int8_matmuls": n_int8,
        "float_matmuls": n_float,  # activation x activation (attention) products stay float
        "excluded_nodes": head,
        "embedding": None,
    }
    if quantize_embeddings:
        info["embedding"] = quantize_token_embedding(model)
    return model, info


def quantize_token_embedding(model: Any, *, input_name: str = "input_ids") -> dict[str, Any] | None:
    """Rewrite ``Gather(wte, input_ids)`` as int8 rows times a per-row scale, in place.

    ``Gather(q, ids) -> Cast(float) -> Mul(Unsqueeze(Gather(scale, ids), -1))``: q is
    ``round(wte / scale)`` in int8 (V, C) with ``scale = max|row| / 127`` (V,). Returns what
    was done, or None when the graph has no such lookup or the table is shared with another
    node (then it is left as it is).
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    target = next(
        (
            n
            for n in graph.node
            if n.op_type == "Gather"
            and len(n.input) == 2
            and n.input[1] == input_name
            and n.input[0] in inits
            and len(inits[n.input[0]].dims) == 2
        ),
        None,
    )
    if target is None or users[target.input[0]] != 1:
        return None
    table_name = target.input[0]
    table = numpy_helper.to_array(inits[table_name]).astype(np.float32)  # (V, C)
    scale = np.abs(table).max(axis=1) / 127.0  # (V,)
    scale[scale == 0] = 1.0  # an all-zero row stays zero with any scale
    q = np.clip(np.rint(table / scale[:, None]), -127, 127).astype(np.int8)  # (V, C)
    err = float(np.max(np.abs(q * scale[:, None] - table)))
    rel_err = err / max(float(np.abs(table).max()), 1e-12)

    base = table_name.replace("/", "_")
    q_name, s_name, axes_name = f"{base}_int8", f"{base}_row_scale", f"{base}_unsqueeze_axes"
    out = target.output[0]
    new_nodes = [
        helper.make_node("Gather", [q_name, input_name], [f"{out}_int8"], axis=0),  # (B, T, C)
        helper.make_node("Cast", [f"{out}_int8"], [f"{out}_q"], to=TensorProto.FLOAT),
        helper.make_node("Gather", [s_name, input_name], [f"{out}_scale"], axis=0),  # (B, T)
        helper.make_node("Unsqueeze", [f"{out}_scale", axes_name], [f"{out}_scale3"]),  # (B, T, 1)
        helper.make_node("Mul", [f"{out}_q", f"{out}_scale3"], [out]),  # (B, T, C)
    ]
    for node in new_nodes:
        node.name = f"{target.name or 'wte'}/{node.output[0]}"
    position = list(graph.node).index(target)
    graph.node.remove(target)
    for offset, node in enumerate(new_nodes):
        graph.node.insert(position + offset, node)
    graph.initializer.remove(inits[table_name])
    graph.initializer.extend(
        [
            numpy_helper.from_array(q, q_name),
            numpy_helper.from_array(scale.astype(np.float32), s_name),
            numpy_helper.from_array(np.asarray([-1], dtype=np.int64), axes_name),
        ]
    )
    return {
        "table": table_name,
        "shape": list(table.shape),
        "scheme": "weight-only int8, symmetric, one scale per token row",
        "fp32_bytes": int(table.nbytes),
        "int8_bytes": int(q.nbytes + scale.nbytes),
        "max_abs_error_relative_to_table_max": rel_err,
    }
