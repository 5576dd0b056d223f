"""Unit tests of the ONNX graph rewrites used by clf-export (tiny hand-built graphs)."""

from __future__ import annotations

import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from clf_export.fusions import fuse_tanh_gelu  # noqa: E402
from clf_export.rowwise_int8 import quantize_rowwise_int8  # noqa: E402


def _const(name: str, value: float | np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def _gelu_graph(*, swap: bool, extra_reader: bool = False) -> onnx.ModelProto:
    """y = gelu_tanh(h + bias), decomposed as torch.onnx.export writes it (or operands swapped)."""

    def bin_op(op: str, a: str, b: str, out: str) -> onnx.NodeProto:
        return helper.make_node(op, [b, a] if swap else [a, b], [out])

    nodes = [
        bin_op("Add", "h", "bias", "x"),
        helper.make_node("Pow", ["x", "three"], ["p"]),
        bin_op("Mul", "c", "p", "m1"),
        bin_op("Add", "x", "m1", "a1"),
        bin_op("Mul", "k", "a1", "m2"),
        helper.make_node("Tanh", ["m2"], ["t"]),
        bin_op("Add", "t", "one", "a2"),
        bin_op("Mul", "half", "a2", "m3"),
        bin_op("Mul", "x", "m3", "y"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])]
    if extra_reader:  # someone else reads an intermediate: the chain must stay as it is
        nodes.append(helper.make_node("Identity", ["t"], ["t_copy"]))
        outputs.append(helper.make_tensor_value_info("t_copy", TensorProto.FLOAT, [2, 8]))
    inits = [
        _const("bias", np.linspace(-1, 1, 8)),
        _const("three", 3.0),
        _const("c", 0.044715),
        _const("k", math.sqrt(2 / math.pi)),
        _const("one", 1.0),
        _const("half", 0.5),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, 8])], outputs, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.mark.parametrize("swap", [False, True])
def test_gelu_chain_becomes_one_fastgelu_with_bias(swap: bool) -> None:
    model = _gelu_graph(swap=swap)
    h = np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32) * 3
    want = _run(model, {"h": h})[0]
    assert fuse_tanh_gelu(model) == 1
    assert [n.op_type for n in model.graph.node] == ["FastGelu"]
    assert list(model.graph.node[0].input) == ["h", "bias"]  # the bias add is folded in
    assert [t.name for t in model.graph.initializer] == ["bias"]  # constants dropped
    np.testing.assert_allclose(_run(model, {"h": h})[0], want, atol=1e-5)


def test_gelu_chain_with_another_reader_is_left_alone() -> None:
    model = _gelu_graph(swap=False, extra_reader=True)
    before = [n.op_type for n in model.graph.node]
    assert fuse_tanh_gelu(model) == 0
    assert [n.op_type for n in model.graph.node] == before


def _linear_graph(k: int = 16, n: int = 8) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(k, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "t", n])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_rowwise_int8_matmul_is_close_and_row_independent() -> None:
    model = _linear_graph()
    q, stats = quantize_rowwise_int8(model)
    assert stats.matmuls_quantized == 1
    x = np.random.default_rng(2).normal(size=(3, 5, 16)).astype(np.float32)
    x[1] *= 100.0  # a batch mate with a huge range must not change the other rows
    want = _run(model, {"x": x})[0]
    got = _run(q, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=0.03 * np.abs(want).max())
    alone = _run(q, {"x": x[:1, :2]})[0]
    np.testing.assert_array_equal(alone, got[:1, :2])
    zero = _run(q, {"x": np.zeros((1, 1, 16), np.float32)})[0]
    assert np.all(zero == 0)  # an all-zero row stays finite and exact


def test_rowwise_int8_reduce_range_uses_7_bit_weights() -> None:
    q, stats = quantize_rowwise_int8(_linear_graph(), reduce_range=True)
    assert stats.weight_bits == 7
    weights = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    w_int8 = next(v for k, v in weights.items() if k.endswith("w_int8"))
    assert w_int8.dtype == np.int8 and np.abs(w_int8).max() == 63
