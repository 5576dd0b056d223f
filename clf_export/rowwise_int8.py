"""Batch-invariant int8 quantization: per-row activations, per-channel weights.

Why not ``onnxruntime.quantization.quantize_dynamic``? Its ``DynamicQuantizeLinear`` picks ONE
activation scale for the whole ``[batch, sequence, features]`` tensor, padding included, so a
text's probabilities move with its batch mates. That breaks the pooling contract. Here every
activation row (one token) gets its own scale, computed from that row alone, so a text's logits
do not depend on its batch mates or its padding -- and the matrix product still runs on
onnxruntime's u8 x s8 integer GEMM (``com.microsoft.MatMulIntegerToFloat``, the kernel behind
its own dynamic quantization), the format its docs recommend for VNNI and AVX2 CPUs alike, so
it keeps most of int8's speed-up over fp32 (what the per-row scales cost: README, Benchmarks).

Per weight MatMul (``y = x @ W``, W constant ``(K, N)``)::

    x2   = Reshape(x, [-1, K])                       # (M, K), M = rows (tokens)
    s_x  = max(|x2|, axis=1) / 127                   # (M, 1) per-row scale
    q_x  = QuantizeLinear(x2, s_x, 128, axis=0)      # uint8, zero point 128 (symmetric)
    y2   = MatMulIntegerToFloat(q_x, W_q, 1, s_w, 128)  # int GEMM, * s_w (N,) per channel
    y    = Reshape(y2 * s_x, [..., N])

The token-embedding table can be stored as int8 with one scale per vocabulary row (a Gather of
rows is trivially batch-invariant): it shrinks the file by ~4x for a 50,257 x d table.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .fusions import MS_DOMAIN

__all__ = ["Int8Stats", "quantize_rowwise_int8"]


@dataclass
class Int8Stats:
    """What the quantizer changed."""

    matmuls_quantized: int
    gathers_quantized: int
    weight_bits: int


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def quantize_rowwise_int8(
    model: onnx.ModelProto,
    *,
    exclude_nodes: Collection[str] = (),
    quantize_embedding: bool = True,
    reduce_range: bool = False,
) -> tuple[onnx.ModelProto, Int8Stats]:
    """Return a quantized copy of ``model`` (an fp32 graph with constant weight MatMuls/Gemms).

    ``exclude_nodes``: node names left in fp32 (e.g. the classification head).
    ``reduce_range``: 7-bit weights, for CPUs without VNNI where the u8 x s8 AVX2 kernel can
    saturate its 16-bit intermediate sums (onnxruntime's documented remedy).
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())  # never mutate the caller's
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    qmax = 63 if reduce_range else 127
    opset = _opset(model)
    new_inits: list[onnx.TensorProto] = []
    replaced: set[str] = set()
    nodes: list[onnx.NodeProto] = []
    n_mm = n_gather = 0

    def const(name: str, value: np.ndarray) -> str:
        new_inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    zp = const("rq8.zp128", np.array(128, np.uint8))
    one = const("rq8.one", np.array(1.0, np.float32))
    inv127 = const("rq8.inv127", np.array(1.0 / 127.0, np.float32))
    eps = const("rq8.eps", np.array(1e-12, np.float32))
    flat = const("rq8.flat", np.array([-1], np.int64))

    for node in graph.node:
        weight = _constant_weight(node, inits)
        if weight is not None and node.name not in exclude_nodes:
            w, bias = weight
            nodes += _rowwise_matmul(node, w, bias, qmax, opset, const, zp, one, inv127, eps, flat)
            replaced.add(node.input[1])
            n_mm += 1
        elif (
            quantize_embedding
            and node.op_type == "Gather"
            and node.input[0] in inits
            and node.name not in exclude_nodes
            and len(inits[node.input[0]].dims) == 2
            and inits[node.input[0]].data_type == TensorProto.FLOAT
            and not any(a.name == "axis" and a.i != 0 for a in node.attribute)
        ):
            nodes += _int8_gather(node, numpy_helper.to_array(inits[node.input[0]]), const)
            replaced.add(node.input[0])
            n_gather += 1
        else:
            nodes.append(node)

    still_used = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name not in replaced or t.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    del graph.node[:]
    graph.node.extend(nodes)
    if n_mm and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model, Int8Stats(n_mm, n_gather, 7 if reduce_range else 8)


def _constant_weight(
    node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]
) -> tuple[np.ndarray, str | None] | None:
    """(W as (K, N), bias input name or None) for a MatMul/Gemm with a constant 2-D fp32 weight."""
    if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
        return None
    init = inits.get(node.input[1])
    if init is None or len(init.dims) != 2 or init.data_type != TensorProto.FLOAT:
        return None
    w = numpy_helper.to_array(init)
    if node.op_type == "MatMul":
        return w, None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        return None
    if attrs.get("transB", 0):
        w = w.T
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    return w, bias


def _rowwise_matmul(
    node: onnx.NodeProto,
    w: np.ndarray,
    bias: str | None,
    qmax: int,
    opset: int,
    const: Callable[[str, np.ndarray], str],
    zp: str,
    one: str,
    inv127: str,
    eps: str,
    flat: str,
) -> list[onnx.NodeProto]:
    """Nodes computing ``node``'s output with per-row int8 activations (see module doc)."""
    k, n = w.shape
    p = f"rq8.{node.name or node.output[0]}"
    w_scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / qmax  # (N,)
    w_q = np.clip(np.round(w / w_scale), -qmax, qmax).astype(np.int8)  # (K, N)
    wq = const(f"{p}.w_int8", w_q)
    ws = const(f"{p}.w_scale", w_scale.astype(np.float32))
    shape_mk = const(f"{p}.shape_mk", np.array([-1, k], np.int64))
    n_dim = const(f"{p}.n", np.array([n], np.int64))
    x = node.input[0]

    def t(s: str) -> str:
        return f"{p}.{s}"

    if opset >= 18:  # reductions take axes as an input from opset 18 on
        axes = const(f"{p}.axes", np.array([-1], np.int64))
        reduce_max = helper.make_node("ReduceMax", [t("x2"), axes], [t("max")], keepdims=1)
        reduce_min = helper.make_node("ReduceMin", [t("x2"), axes], [t("min")], keepdims=1)
    else:
        reduce_max = helper.make_node("ReduceMax", [t("x2")], [t("max")], axes=[-1], keepdims=1)
        reduce_min = helper.make_node("ReduceMin", [t("x2")], [t("min")], axes=[-1], keepdims=1)
    y = t("y_scaled")
    out = [
        helper.make_node("Reshape", [x, shape_mk], [t("x2")]),  # (M, K)
        # max |x| per row as max(max x, -min x): two reads of x, no |x| tensor written
        reduce_max,  # (M, 1)
        reduce_min,
        helper.make_node("Neg", [t("min")], [t("negmin")]),
        helper.make_node("Max", [t("max"), t("negmin")], [t("amax")]),
        helper.make_node("Mul", [t("amax"), inv127], [t("s0")]),
        # (M, 1); eps keeps the scale of an all-zero row finite
        helper.make_node("Max", [t("s0"), eps], [t("sx")]),
        helper.make_node("Reshape", [t("sx"), flat], [t("sx1")]),  # (M,)
        helper.make_node("Shape", [t("sx1")], [t("m")]),
        helper.make_node("Expand", [zp, t("m")], [t("zx")]),  # (M,) all 128
        helper.make_node("QuantizeLinear", [t("x2"), t("sx1"), t("zx")], [t("xq")], axis=0),
        # int32 GEMM with the per-channel weight scale applied in its epilogue: (M, N) float
        helper.make_node(
            "MatMulIntegerToFloat",
            [t("xq"), wq, one, ws, zp],
            [t("y0")],
            domain=MS_DOMAIN,
        ),
        helper.make_node("Mul", [t("y0"), t("sx")], [y]),  # per-row activation scale
        helper.make_node("Shape", [x], [t("lead")], end=-1),
        helper.make_node("Concat", [t("lead"), n_dim], [t("shape_out")], axis=0),
    ]
    if bias is not None:
        out.append(helper.make_node("Add", [y, bias], [t("y_bias")]))
        y = t("y_bias")
    out.append(helper.make_node("Reshape", [y, t("shape_out")], [node.output[0]]))
    return out


def _int8_gather(
    node: onnx.NodeProto, table: np.ndarray, const: Callable[[str, np.ndarray], str]
) -> list[onnx.NodeProto]:
    """Nodes computing ``Gather(table, ids)`` from int8 rows and one scale per row."""
    p = f"rq8.{node.name or node.output[0]}"
    scale = np.maximum(np.abs(table).max(axis=1, keepdims=True), 1e-12) / 127.0  # (V, 1)
    q = np.clip(np.round(table / scale), -127, 127).astype(np.int8)  # (V, C)
    tq = const(f"{p}.table_int8", q)
    ts = const(f"{p}.table_scale", scale.astype(np.float32))
    ids = node.input[1]
    return [
        helper.make_node("Gather", [tq, ids], [f"{p}.rows_q"], axis=0),
        helper.make_node("Gather", [ts, ids], [f"{p}.rows_s"], axis=0),
        helper.make_node("Cast", [f"{p}.rows_q"], [f"{p}.rows_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [f"{p}.rows_f", f"{p}.rows_s"], [node.output[0]]),
    ]
