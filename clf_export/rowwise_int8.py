"""Batch-invariant int8 quantization: per-row or fixed activation scales, per-channel weights.

Why not ``onnxruntime.quantization.quantize_dynamic``? Its ``DynamicQuantizeLinear`` picks ONE
activation scale for the whole ``[batch, sequence, features]`` tensor, padding included, so a
text's probabilities move with its batch mates (measured: up to 2e-3 on a tiny model, 1.9e-2 in
logits on GPT-2 small). That breaks the pooling contract. Here every activation that feeds a
weight MatMul gets a scale that no batch mate can move: either its own per-row scale, computed
from that row alone (dynamic), or a scale fixed at export time from calibration data
(static, see :mod:`clf_export.static_int8`). The matrix products run on onnxruntime's u8 x s8
integer GEMM (``com.microsoft.MatMulIntegerToFloat``, the kernel behind its own dynamic
quantization), the format its docs recommend for VNNI and AVX2 CPUs alike.

An activation read by several MatMuls (the query, key and value projections read the same
LayerNorm output) is quantized once and shared. Per activation ``x`` (``K`` features) and per
weight MatMul ``y = x @ W (+ b)`` reading it (W constant ``(K, N)``, ``s_w`` its per-column
scales)::

    dynamic (per row, once per x)                    static (once per x)
    a   = Max(ReduceMax(x, -1), -ReduceMin(x, -1),   q_x = QuantizeLinear(x, s_x, z_x)
              127 eps)                (..., 1)            # s_x, z_x constants
    s_x = a / 127                     (..., 1)
    q_x = QuantizeLinear(x, s_x, 128, axis=-1,       per MatMul:
                         block_size=K)  uint8         y = MatMulIntegerToFloat(q_x, W_q, s_x,
    per MatMul:                                               s_w, z_x, -, b)
    y = MatMulIntegerToFloat(q_x, W_q, 1, s_w, 128)       # bias in the GEMM epilogue
        * s_x (+ b)                   (..., N)

The dynamic form quantizes each row as one block of opset 21's blocked ``QuantizeLinear``, so
``x`` keeps its shape and no output needs a reshape (the graph's opset is raised from 18-20
to 21; ``blocked=False`` flattens ``x`` to ``(rows, K)`` with a per-axis scale instead, and
reshapes every output back: the same numbers, more nodes). Activations stay uint8 with zero
point 128: onnxruntime's int8 x int8 GEMM has no VNNI kernel on x86.

The token-embedding table can be stored as int8 with one scale per vocabulary row (a Gather of
rows is trivially batch-invariant): it shrinks the file by ~4x for a 50,257 x d table.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .fusions import MS_DOMAIN

__all__ = ["Int8Stats", "constant_weight", "quantize_rowwise_int8", "weight_matmuls"]


@dataclass
class Int8Stats:
    """What the quantizer changed."""

    matmuls_quantized: int
    gathers_quantized: int
    weight_bits: int
    activations_dynamic: int = 0
    """Distinct activations quantized per row at run time (each shared by its MatMuls)."""
    activations_static: int = 0
    """Distinct activations quantized with a fixed (calibrated) scale."""
    biases_folded: int = 0
    """Bias adds moved into the integer GEMM's epilogue (static activations only)."""


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def constant_weight(
    node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto]
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


def weight_matmuls(
    nodes: Iterable[onnx.NodeProto],
    inits: Mapping[str, onnx.TensorProto],
    exclude_nodes: Collection[str] = (),
) -> list[onnx.NodeProto]:
    """The MatMul / Gemm nodes among ``nodes`` with a constant weight (one of ``inits``) that
    the quantizer rewrites."""
    return [
        n for n in nodes if n.name not in exclude_nodes and constant_weight(n, inits) is not None
    ]


def quantize_rowwise_int8(
    model: onnx.ModelProto,
    *,
    exclude_nodes: Collection[str] = (),
    quantize_embedding: bool = True,
    reduce_range: bool = False,
    static_inputs: Mapping[str, tuple[float, int]] | None = None,
    blocked: bool = True,
) -> tuple[onnx.ModelProto, Int8Stats]:
    """Return a quantized copy of ``model`` (an fp32 graph with constant weight MatMuls/Gemms).

    ``exclude_nodes``: node names left in fp32 (e.g. the classification head).
    ``reduce_range``: 7-bit weights, for CPUs without VNNI where the u8 x s8 AVX2 kernel can
    saturate its 16-bit intermediate sums (onnxruntime's documented remedy).
    ``static_inputs``: activation name -> (scale, uint8 zero point) fixed at export time;
    every other activation of a quantized MatMul gets per-row scales at run time.
    ``blocked``: quantize per-row activations in their own shape with opset 21's blocked
    ``QuantizeLinear`` (a graph at opset 18-20 is raised to 21: the standard ops it uses keep
    their meaning), instead of flattening them to rows and reshaping every output back.
    """
    source = model  # read, never changed: the result is built beside it
    graph = source.graph
    static_inputs = dict(static_inputs or {})
    inits = {t.name: t for t in graph.initializer}
    qmax = 63 if reduce_range else 127
    new_inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    stats = Int8Stats(0, 0, 7 if reduce_range else 8)

    def const(name: str, value: np.ndarray) -> str:
        new_inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    opset = _opset(source)
    if blocked and 18 <= opset < 21:
        opset = 21
    shared = _Shared(const, opset)
    # One list of node objects: protobuf may wrap a node anew on each access, so identities
    # (id) are only stable within one list.
    all_nodes = list(graph.node)
    targets = {id(n) for n in weight_matmuls(all_nodes, inits, exclude_nodes)}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in all_nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    folded: set[int] = set()  # ids of bias Add nodes moved into an integer GEMM
    quantized: dict[str, _Activation] = {}

    for node in all_nodes:
        if id(node) in folded:
            continue
        if id(node) in targets:
            w, bias = constant_weight(node, inits)  # type: ignore[misc]
            x = node.input[0]
            if x not in quantized:
                if x in static_inputs:
                    scale, zero = static_inputs[x]
                    quantized[x] = shared.static_input(x, scale, zero, nodes)
                    stats.activations_static += 1
                else:
                    quantized[x] = shared.dynamic_input(x, w.shape[0], nodes)
                    stats.activations_dynamic += 1
            out = node.output[0]
            act = quantized[x]
            if act.static and bias is None:  # fold a following "+ b" into the GEMM epilogue
                add = _sole_bias_add(out, consumers, inits, w.shape[1], outputs)
                if add is not None:
                    bias, out = add
                    folded.add(id(consumers[node.output[0]][0]))
                    stats.biases_folded += 1
            p = f"rq8.{node.name or node.output[0]}"
            w_scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / qmax  # (N,)
            w_q = np.clip(np.round(w / w_scale), -qmax, qmax).astype(np.int8)  # (K, N)
            nodes += act.matmul(
                p, const(f"{p}.w_int8", w_q), const(f"{p}.w_scale", w_scale.astype(np.float32)),
                bias, out, w.shape[1],
            )  # fmt: skip
            stats.matmuls_quantized += 1
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
            stats.gathers_quantized += 1
        else:
            nodes.append(node)

    still_used = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
    # A copy of everything but the tensors and nodes, then only the tensors still read: the
    # fp32 weights that were quantized are never copied (a full copy of a large model would
    # double the memory an export needs).
    model = onnx.ModelProto()
    model.CopyFrom(_without_graph_body(source))
    out = model.graph
    out.initializer.extend(t for t in graph.initializer if t.name in still_used)
    out.initializer.extend(t for t in new_inits if t.name in still_used)
    out.node.extend(nodes)
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = opset
    if stats.matmuls_quantized and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model, stats


def _without_graph_body(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` without its graph's nodes and initializers (cheap: no tensors)."""
    shell = onnx.ModelProto()
    _copy_fields(model, shell, skip=("graph",))
    _copy_fields(model.graph, shell.graph, skip=("node", "initializer"))
    return shell


def _copy_fields(src: Any, dst: Any, *, skip: Collection[str]) -> None:
    for field, value in src.ListFields():
        if field.name in skip:
            continue
        if hasattr(value, "extend"):  # a repeated field
            getattr(dst, field.name).extend(value)
        elif hasattr(value, "CopyFrom"):  # a message
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def _sole_bias_add(
    out: str,
    consumers: Mapping[str, list[onnx.NodeProto]],
    inits: Mapping[str, onnx.TensorProto],
    n: int,
    outputs: Collection[str],
) -> tuple[str, str] | None:
    """(bias name, sum name) when the only reader of ``out`` is ``Add(out, b)``, b a constant
    ``(N,)`` fp32 vector; else None."""
    users = consumers.get(out, [])
    if out in outputs or len(users) != 1 or users[0].op_type != "Add":
        return None
    add = users[0]
    if len(add.input) != 2:
        return None
    other = add.input[1] if add.input[0] == out else add.input[0]
    b = inits.get(other)
    if b is None or list(b.dims) != [n] or b.data_type != TensorProto.FLOAT:
        return None
    return other, add.output[0]


@dataclass
class _Activation:
    """A quantized activation: what its MatMuls read."""

    static: bool
    q: str
    """uint8 tensor: (M, K) for dynamic, the input's own shape for static."""
    scale: str
    zero: str
    lead: str = ""
    """Dynamic 2-D form only: the input's leading dimensions (all but K), to shape outputs."""
    shared: _Shared | None = None
    blocked: bool = False
    """Dynamic only: quantized in the input's own shape (opset 21 blocked QuantizeLinear), so
    the GEMM output needs no reshape."""

    def matmul(
        self, p: str, w_q: str, w_scale: str, bias: str | None, out: str, n: int
    ) -> list[onnx.NodeProto]:
        """Nodes computing ``out`` = this activation @ W (+ bias)."""
        if self.static:
            # (..., N) float: int32 GEMM, then * s_x * s_w (+ b) in the GEMM's epilogue
            inputs = [self.q, w_q, self.scale, w_scale, self.zero, "", bias or ""]
            while inputs[-1] == "":
                inputs.pop()
            return [helper.make_node("MatMulIntegerToFloat", inputs, [out], domain=MS_DOMAIN)]
        assert self.shared is not None
        if self.blocked:  # (..., K) in, (..., N) out: nothing to flatten or reshape
            y0 = f"{p}.y0"
            nodes = [
                helper.make_node(
                    "MatMulIntegerToFloat",
                    [self.q, w_q, self.shared.one, w_scale, self.zero],
                    [y0],
                    domain=MS_DOMAIN,
                ),
            ]
            if bias is None:
                return [*nodes, helper.make_node("Mul", [y0, self.scale], [out])]
            return [
                *nodes,
                helper.make_node("Mul", [y0, self.scale], [f"{p}.y_scaled"]),
                helper.make_node("Add", [f"{p}.y_scaled", bias], [out]),
            ]
        y = f"{p}.y_scaled"
        nodes = [
            # int32 GEMM with the per-channel weight scale applied in its epilogue: (M, N) float
            helper.make_node(
                "MatMulIntegerToFloat",
                [self.q, w_q, self.shared.one, w_scale, self.zero],
                [f"{p}.y0"],
                domain=MS_DOMAIN,
            ),
            helper.make_node("Mul", [f"{p}.y0", self.scale], [y]),  # per-row activation scale
        ]
        if bias is not None:
            nodes.append(helper.make_node("Add", [y, bias], [f"{p}.y_bias"]))
            y = f"{p}.y_bias"
        shape = self.shared.out_shape(self, n, nodes)
        nodes.append(helper.make_node("Reshape", [y, shape], [out]))
        return nodes


class _Shared:
    """Constants and per-activation nodes shared by every quantized MatMul of one graph."""

    def __init__(self, const: Callable[[str, np.ndarray], str], opset: int) -> None:
        self.const = const
        self.opset = opset
        self.zp = const("rq8.zp128", np.array(128, np.uint8))
        self.one = const("rq8.one", np.array(1.0, np.float32))
        self.eps = const("rq8.eps", np.array(1e-12, np.float32))
        self.eps127 = const("rq8.eps127", np.array(127e-12, np.float32))
        self.inv127 = const("rq8.inv127", np.array(1.0 / 127.0, np.float32))
        self.flat = const("rq8.flat", np.array([-1], np.int64))
        self.axes = const("rq8.axes", np.array([-1], np.int64))
        self.shapes: dict[tuple[str, int], str] = {}

    def static_input(
        self, x: str, scale: float, zero: int, nodes: list[onnx.NodeProto]
    ) -> _Activation:
        p = f"sq8.{x}"
        s = self.const(f"{p}.scale", np.array(scale, np.float32))
        z = self.const(f"{p}.zero", np.array(zero, np.uint8))
        nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [f"{p}.q"]))
        return _Activation(True, f"{p}.q", s, z)

    def dynamic_input(self, x: str, k: int, nodes: list[onnx.NodeProto]) -> _Activation:
        p = f"rq8.{x}"

        def t(s: str) -> str:
            return f"{p}.{s}"

        if self.opset >= 21:
            # One block of K per row (blocked quantization, opset 21): x keeps its shape.
            nodes += [
                helper.make_node("ReduceMax", [x, self.axes], [t("max")]),  # (..., 1)
                helper.make_node("ReduceMin", [x, self.axes], [t("min")]),
                helper.make_node("Neg", [t("min")], [t("negmin")]),
                # max |x| per row, at least eps * 127 so an all-zero row keeps a finite scale
                helper.make_node("Max", [t("max"), t("negmin"), self.eps127], [t("amax")]),
                helper.make_node("Mul", [t("amax"), self.inv127], [t("sx")]),  # (..., 1)
                helper.make_node("Shape", [t("sx")], [t("shape")]),
                helper.make_node("Expand", [self.zp, t("shape")], [t("zx")]),  # (..., 1) all 128
                helper.make_node(
                    "QuantizeLinear", [x, t("sx"), t("zx")], [t("xq")], axis=-1, block_size=k
                ),
            ]
            return _Activation(False, t("xq"), t("sx"), self.zp, shared=self, blocked=True)

        shape_mk = self.const(t("shape_mk"), np.array([-1, k], np.int64))
        if self.opset >= 18:  # reductions take axes as an input from opset 18 on
            reduce_max = helper.make_node("ReduceMax", [t("x2"), self.axes], [t("max")])
            reduce_min = helper.make_node("ReduceMin", [t("x2"), self.axes], [t("min")])
        else:
            reduce_max = helper.make_node("ReduceMax", [t("x2")], [t("max")], axes=[-1])
            reduce_min = helper.make_node("ReduceMin", [t("x2")], [t("min")], axes=[-1])
        nodes += [
            helper.make_node("Reshape", [x, shape_mk], [t("x2")]),  # (M, K)
            # max |x| per row as max(max x, -min x): two reads of x and no |x| tensor written
            # (measured faster than ReduceMax(Abs(x)) on GPT-2 small batches)
            reduce_max,  # (M, 1), keepdims
            reduce_min,
            helper.make_node("Neg", [t("min")], [t("negmin")]),
            helper.make_node("Max", [t("max"), t("negmin")], [t("amax")]),
            helper.make_node("Mul", [t("amax"), self.inv127], [t("s0")]),
            # (M, 1); eps keeps the scale of an all-zero row finite
            helper.make_node("Max", [t("s0"), self.eps], [t("sx")]),
            helper.make_node("Reshape", [t("sx"), self.flat], [t("sx1")]),  # (M,)
            helper.make_node("Shape", [t("sx1")], [t("m")]),
            helper.make_node("Expand", [self.zp, t("m")], [t("zx")]),  # (M,) all 128
            helper.make_node("QuantizeLinear", [t("x2"), t("sx1"), t("zx")], [t("xq")], axis=0),
            helper.make_node("Shape", [x], [t("lead")], end=-1),
        ]
        return _Activation(False, t("xq"), t("sx"), self.zp, lead=t("lead"), shared=self)

    def out_shape(self, act: _Activation, n: int, nodes: list[onnx.NodeProto]) -> str:
        """The (..., N) output shape of a MatMul reading ``act``, built once per (act, N)."""
        key = (act.lead, n)
        if key not in self.shapes:
            name = f"{act.lead}.n{n}"
            n_dim = self.const(f"{name}.dim", np.array([n], np.int64))
            nodes.append(helper.make_node("Concat", [act.lead, n_dim], [name], axis=0))
            self.shapes[key] = name
        return self.shapes[key]


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
