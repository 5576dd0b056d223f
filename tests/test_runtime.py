"""clf_runtime.Classifier: loading, provider/file choice, safety, parity with torch, batching."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from samples import SHORT_TEXTS

from clf_runtime import (
    Classifier,
    ClassifierError,
    InvalidInputError,
    MetadataError,
    ModelLoadError,
    ModelMetadata,
    Prediction,
)
from clf_runtime.batching import pad_batch, plan_batches, softmax
from clf_runtime.classifier import run_with_io_binding
from clf_runtime.session import CPU, CUDA, cuda_is_usable, session_options
from clf_runtime.tokenizer import encode_batch

# Must match tests/conftest.py (build_tiny_export).
TINY_LABELS = ("negative", "neutral", "positive")
TINY_MAX_LENGTH = 64

TEXTS = [
    *SHORT_TEXTS,
    "see you",
]


@pytest.fixture(scope="module")
def fp32(tiny_export_dir: Path) -> Classifier:
    return Classifier.load(tiny_export_dir / "model.onnx", providers="cpu", threads=1)


@pytest.fixture(scope="module")
def int8(tiny_export_dir: Path) -> Classifier:
    return Classifier.load(tiny_export_dir, providers="cpu", threads=1)


@pytest.fixture(scope="module")
def int8_static(tiny_static_export_dir: Path) -> Classifier:
    return Classifier.load(tiny_static_export_dir, providers="cpu", threads=1)


@pytest.fixture(scope="module", params=["fp32", "int8", "int8-static"])
def either(
    request: pytest.FixtureRequest, fp32: Classifier, int8: Classifier, int8_static: Classifier
) -> Classifier:
    """Every precision and int8 scheme (per-row and calibrated activation scales): the
    pooling contract and thread safety hold for each."""
    return {"fp32": fp32, "int8": int8, "int8-static": int8_static}[request.param]


def torch_proba(model, texts: list[str]) -> np.ndarray:
    """Reference: the torch model on each text alone (no padding at all)."""
    import torch

    rows = []
    with torch.no_grad():
        for ids in encode_batch(texts, max_length=TINY_MAX_LENGTH):
            logits = model(torch.tensor([ids]), torch.tensor([len(ids)]))
            rows.append(torch.softmax(logits.double(), dim=-1)[0].numpy())
    return np.array(rows)


# ----------------------------------------------------------------------------- loading


def test_directory_on_cpu_picks_int8(int8: Classifier, tiny_export_dir: Path) -> None:
    assert int8.model_path == tiny_export_dir / "model.int8.onnx"
    assert int8.metadata.precision == "int8"
    assert int8.provider == CPU


def test_explicit_file_and_precision_are_honoured(tiny_export_dir: Path) -> None:
    by_file = Classifier.load(tiny_export_dir / "model.onnx", providers=[CPU], threads=1)
    assert by_file.model_path.name == "model.onnx" and by_file.metadata.precision == "fp32"
    by_precision = Classifier.load(tiny_export_dir, precision="fp32", providers="cpu", threads=1)
    assert by_precision.model_path.name == "model.onnx"
    with pytest.raises(ModelLoadError, match="fp16"):
        Classifier.load(tiny_export_dir, precision="fp16", providers="cpu")
    with pytest.raises(ModelLoadError, match="holds a fp32 model"):
        Classifier.load(tiny_export_dir / "model.onnx", precision="int8", providers="cpu")


def test_directory_falls_back_to_fp32(tiny_export_dir: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_export_dir / "model.onnx", tmp_path / "model.onnx")
    assert Classifier.load(tmp_path, providers="cpu", threads=1).model_path.name == "model.onnx"


def test_labels_and_metadata(fp32: Classifier) -> None:
    assert fp32.labels == TINY_LABELS
    assert isinstance(fp32.metadata, ModelMetadata)
    assert fp32.metadata.max_length == TINY_MAX_LENGTH
    assert fp32.metadata.pad_token_id == 50256
    assert fp32.metadata.extra["preset"] == "gpt2-tiny"  # the exporter keeps the caller's extra
    assert fp32.metadata.extra["seed"] == 0


def test_auto_provider_checks_that_cuda_really_runs(tiny_export_dir: Path) -> None:
    # onnxruntime-gpu lists CUDA even without CUDA libraries and then silently runs on CPU.
    clf = Classifier.load(tiny_export_dir, threads=1)
    if cuda_is_usable():
        assert clf.provider == CUDA
    else:
        assert clf.provider == CPU
        assert clf.model_path.name == "model.int8.onnx"


@pytest.mark.skipif(
    CUDA not in ort.get_available_providers() or cuda_is_usable(),
    reason="needs onnxruntime-gpu without working CUDA",
)
def test_cuda_only_provider_without_cuda_is_an_error(tiny_export_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="fell back"):
        Classifier.load(tiny_export_dir, providers=["cuda"])


def test_unknown_provider_and_bad_threads(tiny_export_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="NopeExecutionProvider"):
        Classifier.load(tiny_export_dir, providers=["NopeExecutionProvider"])
    with pytest.raises(ModelLoadError, match="threads"):
        Classifier.load(tiny_export_dir, providers="cpu", threads=0)


def test_session_options_are_explicit() -> None:
    opts = session_options(3)
    assert opts.intra_op_num_threads == 3
    assert opts.inter_op_num_threads == 1
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        Classifier.load(tmp_path / "nope.onnx")
    with pytest.raises(ModelLoadError, match="holds none of"):
        Classifier.load(tmp_path)


def test_a_training_run_directory_is_named_with_the_export_command(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"is a clf-train run directory.*`clf-export .*run"):
        Classifier.load(run)


def test_truncated_file(tiny_export_dir: Path, tmp_path: Path) -> None:
    data = (tiny_export_dir / "model.onnx").read_bytes()
    bad = tmp_path / "model.onnx"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError) as info:
        Classifier.load(bad, providers="cpu")
    assert "truncated or corrupt" in str(info.value)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf at all")
    with pytest.raises(ModelLoadError):
        Classifier.load(garbage, providers="cpu")


def _tiny_graph(with_metadata: bool = False, output: str = "logits"):
    import onnx
    from onnx import TensorProto, helper

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    lengths = helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"])
    out = helper.make_tensor_value_info(output, TensorProto.INT64, ["batch"])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["lengths"], [output])], "g", [ids, lengths], [out]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if with_metadata:
        onnx.helper.set_model_props(
            model, ModelMetadata(labels=("a", "b"), max_length=8).to_props()
        )
    return model


def test_foreign_onnx_without_metadata(tmp_path: Path) -> None:
    import onnx

    path = tmp_path / "foreign.onnx"
    onnx.save(_tiny_graph(), str(path))
    with pytest.raises(MetadataError, match="not a gpt-clf model"):
        Classifier.load(path, providers="cpu")


def test_wrong_graph_signature(tmp_path: Path) -> None:
    import onnx

    path = tmp_path / "wrong.onnx"
    onnx.save(_tiny_graph(with_metadata=True, output="scores"), str(path))
    with pytest.raises(ModelLoadError, match="missing output 'logits'") as info:
        Classifier.load(path, providers="cpu")
    assert not isinstance(info.value, MetadataError)


# ----------------------------------------------------------------------------- external data


def _external_model(location: str, *, in_subgraph: bool = False):
    """y = x + w, with w stored as external data at ``location`` (optionally inside an If)."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones(2, np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "8")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    if not in_subgraph:
        graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [w])
    else:
        branch_out = helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])
        then = helper.make_graph(
            [helper.make_node("Identity", ["w"], ["b"])], "t", [], [branch_out], [w]
        )
        other = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["b"])], "e", [], [branch_out]
        )
        cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
        node = helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)
        graph = helper.make_graph([node], "g", [x, cond], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("in_subgraph", [False, True])
@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_external_data_outside_directory_is_refused(
    tmp_path: Path, kind: str, in_subgraph: bool
) -> None:
    import onnx

    secret = tmp_path / "secret.bin"
    np.ones(2, np.float32).tofile(secret)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    location = {"dotdot": "../secret.bin", "absolute": str(secret), "symlink": "link.bin"}[kind]
    if kind == "symlink":
        (model_dir / "link.bin").symlink_to(secret)
    path = model_dir / "model.onnx"
    onnx.save(_external_model(location, in_subgraph=in_subgraph), str(path))
    with pytest.raises(ModelLoadError, match="outside the model directory"):
        Classifier.load(path, providers="cpu")


def test_onnxruntime_itself_refuses_escaping_external_data(tmp_path: Path) -> None:
    # Defence in depth, documented: onnxruntime (>= 1.20, checked with 1.31) refuses too, so
    # the protobuf walk in session.py is not the only guard.
    import onnx

    np.ones(2, np.float32).tofile(tmp_path / "secret.bin")
    (tmp_path / "model").mkdir()
    path = tmp_path / "model" / "model.onnx"
    onnx.save(_external_model("../secret.bin"), str(path))
    with pytest.raises(Exception, match="escapes model directory"):
        ort.InferenceSession(str(path), providers=[CPU])


def test_external_data_inside_directory_loads(
    tiny_export_dir: Path, tmp_path: Path, fp32: Classifier
) -> None:
    import onnx

    proto = onnx.load(str(tiny_export_dir / "model.onnx"))
    onnx.save(proto, str(tmp_path / "model.onnx"), save_as_external_data=True, location="w.bin")
    assert (tmp_path / "w.bin").is_file()
    clf = Classifier.load(tmp_path, providers="cpu", threads=1)
    np.testing.assert_array_equal(clf.predict_proba(TEXTS), fp32.predict_proba(TEXTS))


# ----------------------------------------------------------------------------- predictions


def test_fp32_matches_torch(fp32: Classifier, tiny_torch_model) -> None:
    expected = torch_proba(tiny_torch_model, TEXTS)
    got = fp32.predict_proba(TEXTS, batch_size=4)
    assert got.shape == (len(TEXTS), 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_int8_is_close_to_fp32(fp32: Classifier, int8: Classifier) -> None:
    diff = np.abs(int8.predict_proba(TEXTS) - fp32.predict_proba(TEXTS)).max()
    assert diff < 0.05


def test_predict_returns_predictions_in_order(fp32: Classifier) -> None:
    # Mixed lengths get sorted into batches; the output must come back in input order.
    texts = [TEXTS[i % len(TEXTS)] * (1 + i % 4) for i in range(23)]
    probs = fp32.predict_proba(texts, batch_size=3)
    alone = np.concatenate([fp32.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(probs, alone, atol=1e-5, rtol=0)
    preds = fp32.predict(texts, batch_size=3)
    assert len(preds) == len(texts)
    for pred, row in zip(preds, probs, strict=True):
        assert isinstance(pred, Prediction)
        assert pred.label == TINY_LABELS[int(row.argmax())]
        assert pred.score == pytest.approx(float(row.max()), abs=0)
        assert list(pred.probs) == list(TINY_LABELS)
        assert list(pred.probs.values()) == pytest.approx(row.tolist(), abs=0)


def test_padding_invariance(either: Classifier) -> None:
    # int8 too: its activations are quantized per row (token) or with calibrated scales,
    # never per batch.
    long_text = " ".join(["word"] * 59) + " end"
    assert len(encode_batch([long_text])[0]) == 60
    short = "hi"
    alone = either.predict_proba([short])
    together = either.predict_proba([short, long_text], batch_size=2)
    assert either.predict_proba([short, long_text], batch_size=1)[0].tolist() == alone[0].tolist()
    np.testing.assert_allclose(together[0], alone[0], atol=1e-5, rtol=0)
    # A different answer for the long text shows the comparison can fail.
    assert np.abs(together[1] - alone[0]).max() > 1e-3


def test_max_batch_tokens_splits_batches(fp32: Classifier) -> None:
    texts = [TEXTS[i % len(TEXTS)] for i in range(12)]
    a = fp32.predict_proba(texts, batch_size=32, max_batch_tokens=1)
    b = fp32.predict_proba(texts, batch_size=32, max_batch_tokens=10_000)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="max_batch_tokens"):
        fp32.predict_proba(texts, max_batch_tokens=0)
    with pytest.raises(ValueError, match="batch_size"):
        fp32.predict_proba(texts, batch_size=0)


def test_probabilities_sum_to_one(int8: Classifier) -> None:
    probs = int8.predict_proba(TEXTS * 3)
    np.testing.assert_allclose(probs.astype(np.float64).sum(axis=1), 1.0, atol=1e-6, rtol=0)
    assert (probs >= 0).all()


# ----------------------------------------------------------------------------- inputs


def test_empty_input(fp32: Classifier) -> None:
    assert fp32.predict([]) == []
    empty = fp32.predict_proba(iter(()))
    assert empty.shape == (0, 3) and empty.dtype == np.float32


def test_generator_tuple_and_numpy_inputs(fp32: Classifier) -> None:
    expected = fp32.predict_proba(TEXTS)
    np.testing.assert_array_equal(fp32.predict_proba(t for t in TEXTS), expected)
    np.testing.assert_array_equal(fp32.predict_proba(tuple(TEXTS)), expected)
    np.testing.assert_array_equal(fp32.predict_proba(np.array(TEXTS)), expected)
    np.testing.assert_array_equal(fp32.predict_proba(np.array(TEXTS, dtype=object)), expected)
    with pytest.raises(InvalidInputError, match="1-D"):
        fp32.predict_proba(np.array([TEXTS[:2], TEXTS[2:4]]))
    with pytest.raises(InvalidInputError, match="dtype"):
        fp32.predict_proba(np.arange(3))


def test_bare_str_is_rejected(fp32: Classifier) -> None:
    with pytest.raises(InvalidInputError, match=r"wrap it: predict\(\[text\]\)"):
        fp32.predict("just one text")
    with pytest.raises(InvalidInputError, match="decode"):
        fp32.predict(b"bytes")


@pytest.mark.parametrize(("bad", "type_name"), [(None, "NoneType"), (b"x", "bytes"), (3, "int")])
def test_non_str_items_name_index_and_type(fp32: Classifier, bad: object, type_name: str) -> None:
    with pytest.raises(InvalidInputError, match=rf"index 2 is {type_name}"):
        fp32.predict(["a", "b", bad, "d"])
    with pytest.raises(TypeError):  # InvalidInputError is a TypeError too
        fp32.predict_proba(["a", bad])


def test_awkward_strings_do_not_crash(fp32: Classifier) -> None:
    # tiktoken replaces lone surrogates with U+FFFD itself (no sanitizing needed here).
    texts = ["a\ud800b", "\udfff", "x\x00y", "<|endoftext|>", "   \n\t ", "", "\u200b", "😀" * 100]
    probs = fp32.predict_proba(texts)
    assert probs.shape == (len(texts), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_endoftext_is_ordinary_text() -> None:
    assert 50256 not in encode_batch(["<|endoftext|>"], max_length=64)[0]
    assert encode_batch([""], max_length=64) == [[50256]]


def test_ten_megabyte_strings(fp32: Classifier) -> None:
    # ~10 MB of words, and 10 MB of spaces: tiktoken overflows its stack on ~1M-character
    # whitespace runs; the runtime cuts texts to max_length * 128 characters first.
    words = ("free prize call now " * 500_000)[:10_000_000]
    probs = fp32.predict_proba([words, " " * 10_000_000, "\n" * 10_000_000])
    assert probs.shape == (3, 3)
    np.testing.assert_allclose(probs[0], fp32.predict_proba([words[:5000]])[0], atol=1e-6)


def test_thread_safety(either: Classifier) -> None:
    texts = [TEXTS[i % len(TEXTS)] + f" {i}" for i in range(40)]
    reference = [either.predict_proba(texts[k::5], batch_size=4) for k in range(5)]
    results: dict[tuple[int, int], np.ndarray] = {}
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for call in range(5):
                k = (worker + call) % 5
                results[(worker, call)] = either.predict_proba(texts[k::5], batch_size=4)
        except BaseException as e:  # collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 40
    for (worker, call), got in results.items():
        np.testing.assert_array_equal(got, reference[(worker + call) % 5])


def test_chunking_bounds_and_preserves_order(fp32: Classifier) -> None:
    texts = [TEXTS[i % len(TEXTS)] + " x" * (i % 7) for i in range(25)]
    whole = fp32.predict_proba(texts)
    chunks = list(fp32.iter_proba(iter(texts), chunk_size=4))
    assert [len(c) for c in chunks] == [4, 4, 4, 4, 4, 4, 1]
    np.testing.assert_allclose(np.concatenate(chunks), whole, atol=1e-5, rtol=0)
    np.testing.assert_allclose(fp32.predict_proba(texts, chunk_size=3), whole, atol=1e-5, rtol=0)
    with pytest.raises(InvalidInputError, match="index 9 is NoneType"):
        fp32.predict_proba([*texts[:9], None], chunk_size=4)


def test_non_finite_logits_are_reported(fp32: Classifier, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fp32, "run_logits", lambda ids, lengths: np.full((len(ids), 3), np.nan))
    with pytest.raises(ClassifierError, match="non-finite"):
        fp32.predict_proba(["a"])


def test_io_binding_path_on_cpu(fp32: Classifier) -> None:
    # The CUDA code path, run on the CPU device so it is exercised without a GPU.
    tokens = encode_batch(TEXTS, max_length=TINY_MAX_LENGTH)
    index = plan_batches(np.array([len(t) for t in tokens]), batch_size=8, max_batch_tokens=10**6)
    batch = pad_batch(tokens, index[0], 50256)
    plain = fp32.run_logits(batch.input_ids, batch.lengths)
    bound = run_with_io_binding(fp32._session, batch.input_ids, batch.lengths, device="cpu")
    np.testing.assert_array_equal(bound, plain)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_is_usable(), reason="CUDA is not usable by onnxruntime here")
def test_cuda_matches_cpu(tiny_export_dir: Path, fp32: Classifier) -> None:
    gpu = Classifier.load(tiny_export_dir / "model.onnx", providers="cuda")
    assert gpu.provider == CUDA
    np.testing.assert_allclose(gpu.predict_proba(TEXTS), fp32.predict_proba(TEXTS), atol=1e-4)


# ----------------------------------------------------------------------------- batching unit


def test_plan_batches_respects_both_limits() -> None:
    lengths = np.array([5, 1, 9, 1, 3, 20, 2, 2])
    batches = plan_batches(lengths, batch_size=3, max_batch_tokens=12)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    # Sorted lengths 1 1 2 2 3 5 9 20, cost = padded tokens + 8 per call. Filling the first
    # batch ([1, 3, 6]: 6 padded tokens) costs more than [1, 3] (2); the rest ties between
    # [6, 7, 4] + [0] (9 + 5) and [6, 7] + [4, 0] (4 + 10), and ties go to the larger last call.
    assert [b.tolist() for b in batches] == [[1, 3], [6, 7], [4, 0], [2], [5]]
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * lengths[b].max() <= 12


def _best_plan_cost(lengths: list[int], batch_size: int, budget: int) -> int:
    """Independent reference: the cheapest cut of the sorted lengths into consecutive batches
    (padded tokens + CALL_COST_TOKENS per batch), by trying every cut."""
    from itertools import pairwise, product

    from clf_runtime.batching import CALL_COST_TOKENS

    s = sorted(lengths)
    best = None
    for cuts in product([False, True], repeat=len(s) - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [len(s)]
        groups = [s[a:b] for a, b in pairwise(bounds)]
        if any(len(g) > batch_size or (len(g) > 1 and len(g) * g[-1] > budget) for g in groups):
            continue
        cost = sum(len(g) * g[-1] + CALL_COST_TOKENS for g in groups)
        best = cost if best is None else min(best, cost)
    assert best is not None
    return best


@pytest.mark.parametrize("seed", range(6))
def test_plan_batches_is_the_cheapest_cut(seed: int) -> None:
    from clf_runtime.batching import CALL_COST_TOKENS

    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 120, size=int(rng.integers(2, 13)))
    batch_size, budget = int(rng.integers(1, 6)), int(rng.integers(60, 400))
    batches = plan_batches(lengths, batch_size=batch_size, max_batch_tokens=budget)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    cost = sum(len(b) * int(lengths[b].max()) + CALL_COST_TOKENS for b in batches)
    assert cost == _best_plan_cost(lengths.tolist(), batch_size, budget)
    for b in batches:
        assert len(b) <= batch_size and (len(b) == 1 or len(b) * lengths[b].max() <= budget)


def test_pad_batch_and_softmax() -> None:
    batch = pad_batch([[1, 2, 3], [4]], np.array([1, 0]), pad_id=9)
    assert batch.input_ids.tolist() == [[4, 9, 9], [1, 2, 3]]
    assert batch.lengths.tolist() == [1, 3]
    probs = softmax(np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]], dtype=np.float32))
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-7)


@pytest.mark.slow
def test_hundred_thousand_texts_in_one_call(int8: Classifier) -> None:
    texts = (TEXTS[i % len(TEXTS)] for i in range(100_000))
    probs = int8.predict_proba(texts, batch_size=64)
    assert probs.shape == (100_000, 3)
    # int8 activations are quantized per row, so batch mates do not move a text's result.
    np.testing.assert_allclose(probs[: len(TEXTS)], int8.predict_proba(TEXTS), atol=1e-5)
