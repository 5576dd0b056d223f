"""int8 activation schemes: static (calibrated) and per-row scales, shared quantization,
SmoothQuant, the scheme choice, and the pooling contract of every scheme's exported graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from samples import SHORT_TEXTS  # noqa: E402

from clf_export.errors import ExportError  # noqa: E402
from clf_export.fusions import fold_weight_transforms  # noqa: E402
from clf_export.quantize import quantize_int8  # noqa: E402
from clf_export.rowwise_int8 import quantize_rowwise_int8  # noqa: E402
from clf_export.static_int8 import (  # noqa: E402
    INT8_SCHEMES,
    ActivationRange,
    calibrate,
    layer_norm_inputs,
    smooth_layer_norms,
    static_params,
)
from clf_runtime import Classifier  # noqa: E402
from clf_runtime.tokenizer import encode_batch  # noqa: E402

TINY_MAX_LENGTH = 64  # must match tests/conftest.py (build_tiny_export)
TEXTS = list(SHORT_TEXTS)


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _linear(k: int = 16, n: int = 8, readers: int = 1, bias: bool = True) -> onnx.ModelProto:
    """``readers`` MatMuls with their own constant weights (and bias adds) reading one x."""
    rng = np.random.default_rng(1)
    nodes, inits, outputs = [], [], []
    for r in range(readers):
        inits.append(numpy_helper.from_array(rng.normal(size=(k, n)).astype(np.float32), f"w{r}"))
        out = f"y{r}"
        if bias:
            nodes.append(helper.make_node("MatMul", ["x", f"w{r}"], [f"m{r}"], name=f"mm{r}"))
            nodes.append(helper.make_node("Add", [f"m{r}", f"b{r}"], [out]))
            b = rng.normal(size=n).astype(np.float32)
            inits.append(numpy_helper.from_array(b, f"b{r}"))
        else:
            nodes.append(helper.make_node("MatMul", ["x", f"w{r}"], [out], name=f"mm{r}"))
        outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, ["b", "t", n]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", k])
    return _model(nodes, [x], outputs, inits)


# ----------------------------------------------------------------------------- graph forms


def test_static_matmul_is_two_nodes_with_the_bias_in_the_gemm() -> None:
    model = _linear()
    rng = np.random.default_rng(2)
    calib = rng.normal(size=(4, 6, 16)).astype(np.float32)
    r = ActivationRange(calib.reshape(-1, 16).min(0), calib.reshape(-1, 16).max(0))
    q, stats = quantize_rowwise_int8(model, static_inputs={"x": static_params(r)})
    assert [n.op_type for n in q.graph.node] == ["QuantizeLinear", "MatMulIntegerToFloat"]
    assert stats.activations_static == 1 and stats.activations_dynamic == 0
    assert stats.biases_folded == 1
    x = rng.normal(size=(3, 5, 16)).astype(np.float32)
    want = _run(model, {"x": x})[0]
    got = _run(q, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=0.05 * np.abs(want).max())
    # A batch mate far outside the calibrated range is clipped; it moves nobody else.
    mates = np.concatenate([x[:1], 100 * x[1:]])
    np.testing.assert_array_equal(_run(q, {"x": mates})[0][0], got[0])
    np.testing.assert_array_equal(_run(q, {"x": x[:1, :2]})[0], got[:1, :2])


def test_static_params_cover_the_range_and_keep_zero_exact() -> None:
    scale, zero = static_params(ActivationRange(np.array([-0.17, -0.1]), np.array([3.0, 2.0])))
    assert scale == pytest.approx(3.17 / 255)
    assert zero == round(0.17 / scale)
    # ranges on one side of zero still include it
    scale, zero = static_params(ActivationRange(np.array([1.0]), np.array([2.0])))
    assert zero == 0 and scale == pytest.approx(2.0 / 255)


def test_an_activation_read_by_three_matmuls_is_quantized_once() -> None:
    model = _linear(readers=3)
    for static in (False, True):
        r = ActivationRange(np.full(16, -4.0), np.full(16, 4.0))
        q, stats = quantize_rowwise_int8(
            model, static_inputs={"x": static_params(r)} if static else None
        )
        ops = [n.op_type for n in q.graph.node]
        assert ops.count("QuantizeLinear") == 1
        assert ops.count("MatMulIntegerToFloat") == 3
        counts = (stats.activations_static, stats.activations_dynamic)
        assert counts == ((1, 0) if static else (0, 1))
        if not static:
            assert ops.count("ReduceMax") == 1
        x = np.random.default_rng(3).normal(size=(2, 4, 16)).astype(np.float32)
        for want, got in zip(_run(model, {"x": x}), _run(q, {"x": x}), strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=0.05 * np.abs(want).max())


def test_blocked_and_flattened_row_scales_give_the_same_numbers() -> None:
    """opset 21's blocked QuantizeLinear (one block per row, no reshapes) and the flattened
    (rows, K) form quantize identically; the blocked graph has fewer nodes."""
    model = _linear(readers=2)
    blocked, _ = quantize_rowwise_int8(model)
    flat, _ = quantize_rowwise_int8(model, blocked=False)
    assert blocked.opset_import[0].version == 21 and flat.opset_import[0].version == 18
    onnx.checker.check_model(blocked)
    assert "Reshape" not in [n.op_type for n in blocked.graph.node]
    assert len(blocked.graph.node) < len(flat.graph.node)
    x = np.random.default_rng(5).normal(size=(2, 7, 16)).astype(np.float32)
    x[0, 3] = 0.0  # an all-zero row keeps a finite scale in both forms
    for a, b in zip(_run(blocked, {"x": x}), _run(flat, {"x": x}), strict=True):
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).all()


def test_quantizing_leaves_the_source_alone_and_keeps_its_model_fields() -> None:
    model = _linear(readers=2)
    model.producer_name = "clf-test"
    model.graph.doc_string = "a graph"
    entry = model.metadata_props.add()
    entry.key, entry.value = "labels", "a,b"
    before = model.SerializeToString()
    q, _ = quantize_rowwise_int8(model)
    assert model.SerializeToString() == before
    assert q.producer_name == "clf-test" and q.graph.doc_string == "a graph"
    assert [(p.key, p.value) for p in q.metadata_props] == [("labels", "a,b")]
    assert [i.name for i in q.graph.input] == ["x"] and len(q.graph.output) == 2
    assert {t.name for t in q.graph.initializer}.isdisjoint({"w0", "w1"})  # fp32 weights gone


def test_slice_of_a_weight_is_folded() -> None:
    w = np.arange(24, dtype=np.float32).reshape(6, 4)
    nodes = [
        helper.make_node("Slice", ["w", "starts", "ends", "axes"], ["w_top"]),
        helper.make_node("MatMul", ["x", "w_top"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array([2], np.int64), "starts"),
        numpy_helper.from_array(np.array([6], np.int64), "ends"),
        numpy_helper.from_array(np.array([0], np.int64), "axes"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = _model(nodes, [x], [y], inits)
    assert fold_weight_transforms(model) == 1
    assert [n.op_type for n in model.graph.node] == ["MatMul"]
    folded = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    np.testing.assert_array_equal(folded["w_top"], w[2:6])


# ----------------------------------------------------------------------------- SmoothQuant


def _layer_norm_graph(c: int = 8, outlier: float = 40.0) -> onnx.ModelProto:
    """input_ids -> embedding -> LayerNorm (one wide channel) -> MatMul, and the last row
    -> MatMul (a row gather, like the last block's query); the graph contract's inputs."""
    rng = np.random.default_rng(4)
    gamma = np.ones(c, np.float32)
    gamma[3] = outlier
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["h"]),
        helper.make_node("LayerNormalization", ["h", "gamma", "beta"], ["ln"], axis=-1),
        helper.make_node("MatMul", ["ln", "w1"], ["y1"], name="mm1"),
        helper.make_node("Slice", ["ln", "last", "end", "one"], ["ln_last"]),
        helper.make_node("MatMul", ["ln_last", "w2"], ["y2"], name="mm2"),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(size=(50, c)).astype(np.float32), "emb"),
        numpy_helper.from_array(gamma, "gamma"),
        numpy_helper.from_array(rng.normal(size=c).astype(np.float32) * 0.1, "beta"),
        numpy_helper.from_array(rng.normal(size=(c, 5)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(c, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array([-1], np.int64), "last"),
        numpy_helper.from_array(np.array([2**31], np.int64), "end"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
    ]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "t"]),
        helper.make_tensor_value_info("lengths", TensorProto.INT64, [1]),
    ]
    outputs = [
        helper.make_tensor_value_info("y1", TensorProto.FLOAT, [1, "t", 5]),
        helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 1, 3]),
    ]
    return _model(nodes, inputs, outputs, inits)


def test_calibration_records_each_activation_range() -> None:
    model = _layer_norm_graph()
    ids = [[1, 2, 3], [4, 5], [7, 8, 9, 10]]
    ranges = calibrate(model, ids, ["ln", "ln_last"])
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info("ln", TensorProto.FLOAT, None))
    values = [
        _run(probe, {"input_ids": np.array([t]), "lengths": np.array([len(t)])})[2][0] for t in ids
    ]
    every = np.concatenate(values)  # (tokens, C)
    np.testing.assert_allclose(ranges["ln"].low, every.min(0), rtol=1e-6)
    np.testing.assert_allclose(ranges["ln"].high, every.max(0), rtol=1e-6)
    last = np.stack([v[-1] for v in values])
    np.testing.assert_allclose(ranges["ln_last"].high, last.max(0), rtol=1e-6)
    assert layer_norm_inputs(model.graph, ["ln", "ln_last", "h"]) == {"ln", "ln_last"}


def test_smoothquant_keeps_the_function_and_narrows_the_outlier_channel() -> None:
    model = _layer_norm_graph()
    ids = [[1, 2, 3], [4, 5], [7, 8, 9, 10], [11, 12, 13, 14, 15]]
    ranges = calibrate(model, ids, ["ln", "ln_last"])
    spread_before = ranges["ln"].abs_max.max() / np.median(ranges["ln"].abs_max)
    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(model)
    assert smooth_layer_norms(smoothed, ranges) == 1
    feeds = {"input_ids": np.array([[3, 1, 4, 1, 5]]), "lengths": np.array([5])}
    for want, got in zip(_run(model, feeds), _run(smoothed, feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # the updated ranges are the smoothed graph's own (measured again)
    again = calibrate(smoothed, ids, ["ln", "ln_last"])
    for name in ("ln", "ln_last"):
        np.testing.assert_allclose(ranges[name].low, again[name].low, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(ranges[name].high, again[name].high, rtol=1e-4, atol=1e-6)
    spread_after = again["ln"].abs_max.max() / np.median(again["ln"].abs_max)
    assert spread_before > 10 and spread_after < spread_before / 3


def test_smoothquant_leaves_a_layer_norm_read_by_something_else_alone() -> None:
    model = _layer_norm_graph()
    model.graph.node.append(helper.make_node("Relu", ["ln"], ["other"]))
    model.graph.output.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, None))
    ranges = calibrate(model, [[1, 2, 3]], ["ln", "ln_last"])
    before = model.SerializeToString()
    assert smooth_layer_norms(model, ranges) == 0
    assert model.SerializeToString() == before


# ----------------------------------------------------------------------------- exported graphs


@pytest.fixture(scope="module")
def exports(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_export_dir: Path,
    tiny_static_export_dir: Path,
    tiny_export_builder,
) -> dict[str, Path]:
    """The tiny classifier exported with each int8 scheme (rowwise: the shared export, which
    has no calibration texts; static: the shared calibrated one)."""
    static_ln = tiny_export_builder(tmp_path_factory.mktemp("static_ln"), int8_scheme="static-ln")
    return {"static": tiny_static_export_dir, "static-ln": static_ln, "rowwise": tiny_export_dir}


@pytest.mark.parametrize("scheme", INT8_SCHEMES)
def test_every_scheme_keeps_the_pooling_contract(exports: dict[str, Path], scheme: str) -> None:
    int8 = Classifier.load(exports[scheme], providers="cpu", threads=1)
    fp32 = Classifier.load(exports[scheme] / "model.onnx", providers="cpu", threads=1)
    long_text = " ".join(["word"] * 59) + " end"
    loud = "WIN!!! £££ " * 20  # a batch mate with a very different range
    alone = np.concatenate([int8.predict_proba([t]) for t in TEXTS])
    mixed = int8.predict_proba([*TEXTS, long_text, loud], batch_size=8)[: len(TEXTS)]
    np.testing.assert_allclose(mixed, alone, atol=1e-5, rtol=0)
    assert np.abs(int8.predict_proba(TEXTS) - fp32.predict_proba(TEXTS)).max() < 0.05


def test_scheme_graph_shapes(exports: dict[str, Path]) -> None:
    """static: no run-time reductions at all; static-ln: fewer than rowwise (only the
    attention and GELU outputs keep per-row scales); rowwise: one per quantized activation."""
    from collections import Counter

    ops = {
        s: Counter(n.op_type for n in onnx.load(str(p / "model.int8.onnx")).graph.node)
        for s, p in exports.items()
    }
    n_layer = 2
    # per block: LayerNorm 1 (q, k, v), attention output, LayerNorm 2, GELU output; the last
    # block's query reads its own (gathered) LayerNorm rows
    assert ops["rowwise"]["ReduceMax"] == ops["rowwise"]["QuantizeLinear"] == 4 * n_layer + 1
    assert ops["static-ln"]["ReduceMax"] == 2 * n_layer
    assert ops["static-ln"]["QuantizeLinear"] == 4 * n_layer + 1
    assert ops["static"]["ReduceMax"] == ops["static"]["ReduceMin"] == 0
    for s in INT8_SCHEMES:
        assert ops[s]["MatMulIntegerToFloat"] == 6 * n_layer


def test_scheme_choice_follows_held_out_quality(
    tiny_export_dir: Path, calibration_texts: list[str]
) -> None:
    fp32 = tiny_export_dir / "model.onnx"
    calib = encode_batch(calibration_texts, max_length=TINY_MAX_LENGTH)
    held_out = encode_batch(TEXTS * 2, max_length=TINY_MAX_LENGTH)
    _, info = quantize_int8(fp32, threads=1)
    assert info["scheme"] == "rowwise" and "no calibration (training) texts" in info["scheme_why"]
    _, info = quantize_int8(fp32, calibration_ids=calib, threads=1)
    assert info["scheme"] == "rowwise" and "no held-out texts" in info["scheme_why"]
    _, info = quantize_int8(fp32, calibration_ids=calib, eval_ids=held_out, threads=1)
    quality = info["candidates_on_held_out"]
    ref = quality["rowwise"]

    def no_worse(q: dict[str, float]) -> bool:
        return (
            q["argmax_agreement"] >= ref["argmax_agreement"]
            and q["max_abs_prob_diff"] <= ref["max_abs_prob_diff"]
        )

    # the first scheme, fastest first, that is no worse than rowwise; only those were built
    expected = next(s for s in INT8_SCHEMES if s == "rowwise" or no_worse(quality[s]))
    assert info["scheme"] == expected
    tried = INT8_SCHEMES[: INT8_SCHEMES.index(expected) + 1]
    assert set(quality) == set(tried) | {"rowwise"}
    assert info["calibration"]["texts"] == len(calib)
    with pytest.raises(ExportError, match="needs calibration texts"):
        quantize_int8(fp32, scheme="static")
    with pytest.raises(ExportError, match="unknown int8 scheme 'dynamic'"):
        quantize_int8(fp32, scheme="dynamic")


# ----------------------------------------------------------------------------- tokenizer


def test_small_and_large_batches_tokenize_alike() -> None:
    from clf_runtime.tokenizer import get_encoding

    enc = get_encoding()
    texts = [f"{TEXTS[i % len(TEXTS)]} {i}" for i in range(80)]
    want = [enc.encode_ordinary(t) or [50256] for t in texts]
    assert encode_batch(texts[:3]) == want[:3]  # encoded in the calling thread
    assert encode_batch(texts) == want  # tiktoken's thread pool
