"""clf_export: ONNX graph contract, parity, int8 / fp16, metadata, report, external data.

Everything is built here (no trainer): a gpt2-tiny classifier trained for a few dozen steps
on synthetic ham / spam texts so its predictions are not all one class, saved as a run dir.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from clf_export import (  # noqa: E402
    ExportError,
    ExportOptions,
    ParityError,
    export_model,
    export_run,
)
from clf_export.quantize import resolve_int8_format  # noqa: E402
from clf_runtime._version import __version__  # noqa: E402
from clf_runtime.contract import MODEL_FILES  # noqa: E402
from clf_runtime.metadata import ModelMetadata  # noqa: E402
from clf_runtime.tokenizer import encode_batch  # noqa: E402
from clf_train.model import PRESETS, GPTClassifier, init_weights  # noqa: E402
from clf_train.run_dir import RunConfig, load_run, read_split, save_weights, write_split  # noqa: E402

LABELS = ["ham", "spam"]
MAX_LENGTH = 32
PAD = 50256
_HAM = [
    "see you at lunch tomorrow",
    "call me when you get home",
    "the meeting moved to friday",
    "thanks for the book",
]
_SPAM = [
    "win a free prize now",
    "claim your cash reward today",
    "urgent you won a holiday",
    "text stop to end offer",
]


def make_texts(n: int, seed: int) -> tuple[list[str], list[str]]:
    """``n`` short synthetic texts, half ham, half spam, seeded."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = LABELS[i % 2]
        parts = rng.sample(_SPAM if label == "spam" else _HAM, k=rng.randint(1, 3))
        texts.append(f"{rng.choice(['hi', 'hey', 'ok', 'so'])} " + " and ".join(parts))
        labels.append(label)
    return texts, labels


def pad(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    ids = np.full((len(seqs), lengths.max()), PAD, dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
    return ids, lengths


def train_tiny(texts: list[str], labels: list[str], steps: int = 4) -> GPTClassifier:
    """A seeded gpt2-tiny classifier, trained full-batch (embeddings frozen, for speed).

    4 steps: the synthetic held-out texts are all right, with probabilities 0.6 to 0.97, so
    probability differences between precisions are not hidden by saturation.
    """
    torch.manual_seed(0)
    cfg = PRESETS["gpt2-tiny"]
    model = GPTClassifier(cfg, len(LABELS))
    init_weights(model, seed=0, n_layer=cfg.n_layer)
    ids, lengths = (torch.from_numpy(x) for x in pad(encode_batch(texts, max_length=MAX_LENGTH)))
    y = torch.tensor([LABELS.index(x) for x in labels])
    params = [p for n, p in model.named_parameters() if not n.startswith("backbone.wt")]
    opt = torch.optim.Adam(params, lr=1e-3)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(ids, lengths), y).backward()
        opt.step()
    return model.eval()


def make_run_dir(path: Path) -> Path:
    """A complete run dir: config.json, model.safetensors, split/{train,val,test}.jsonl."""
    torch.set_num_threads(1)
    path.mkdir(parents=True, exist_ok=True)
    train = make_texts(40, seed=1)
    model = train_tiny(*train)
    cfg = RunConfig(model=PRESETS["gpt2-tiny"], labels=LABELS, max_length=MAX_LENGTH)
    cfg.write(path)
    save_weights(path / "model.safetensors", model, run_config=cfg)
    write_split(path, "train", *train)
    write_split(path, "val", *make_texts(20, seed=2))
    write_split(path, "test", *make_texts(40, seed=3))
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("export") / "run")


@pytest.fixture(scope="module")
def exported(run_dir: Path) -> tuple[Path, dict]:
    out = run_dir.parent / "out"
    report = export_run(run_dir, out, quantize=True, fp16=True, threads=1)
    assert report.to_dict() == json.loads((out / "report.json").read_text("utf-8"))
    return out, report.to_dict()


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def logits_of(sess: ort.InferenceSession, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return sess.run(["logits"], {"input_ids": ids, "lengths": lengths})[0]


def precisions(report: dict) -> list[str]:
    return [m["precision"] for m in report["models"]]


# -------------------------------------------------------------------------------------------


def test_writes_exactly_the_export_files(exported: tuple[Path, dict]) -> None:
    out, report = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "model.fp16.onnx",
        "model.int8.onnx",
        "model.onnx",
        "report.json",
    ]
    assert not [p for p in out.parent.iterdir() if ".export-" in p.name]  # temp dir removed
    for entry in report["models"]:
        path = out / entry["file"]
        assert entry["bytes"] == path.stat().st_size
        import hashlib

        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["external_data"] is None
    assert report["exporter"]["opset"] == 18
    assert report["exporter"]["name"] == "torch.onnx.export(dynamo=True)"
    assert set(report["versions"]) >= {"torch", "onnx", "onnxruntime", "gpt_clf"}
    sizes = {m["precision"]: m["bytes"] for m in report["models"]}
    # int8 weights and the per-row int8 token table: well under a third of fp32.
    assert sizes["int8"] < sizes["fp32"] / 3
    assert report["int8"]["embedding_tables_int8"] == 2  # token and position tables


def test_graph_interface_is_dynamic(exported: tuple[Path, dict]) -> None:
    out, report = exported
    for name in precisions(report):
        graph = onnx.load(str(out / MODEL_FILES[name]), load_external_data=False).graph

        def dims(value: onnx.ValueInfoProto) -> list:
            return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

        ins = {i.name: i for i in graph.input}
        assert list(ins) == ["input_ids", "lengths"]
        assert ins["input_ids"].type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert ins["lengths"].type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert dims(ins["input_ids"]) == ["batch", "sequence"]
        assert dims(ins["lengths"]) == ["batch"]
        (out_value,) = graph.output
        assert out_value.name == "logits"
        assert out_value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert dims(out_value) == ["batch", 2]


@pytest.mark.parametrize(
    ("batch", "seq", "lengths"),
    [(1, 1, [1]), (3, 17, [17, 3, 9]), (2, MAX_LENGTH, [MAX_LENGTH, 5]), (7, 11, None)],
)
def test_fp32_parity_with_torch(
    exported: tuple[Path, dict], run_dir: Path, batch: int, seq: int, lengths: list | None
) -> None:
    out, _ = exported
    model, _ = load_run(run_dir)
    rng = np.random.default_rng(batch * 100 + seq)
    ids = rng.integers(0, 50257, size=(batch, seq), dtype=np.int64)
    lens = np.array(lengths or rng.integers(1, seq + 1, size=batch), dtype=np.int64)
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(lens)).numpy()
    got = logits_of(session(out / "model.onnx"), ids, lens)
    assert got.shape == (batch, 2)
    assert np.max(np.abs(got - want)) <= 1e-4


def test_report_parity_table(exported: tuple[Path, dict]) -> None:
    _, report = exported
    shapes = [(r["batch"], r["sequence"]) for r in report["parity"]["shapes"]]
    assert shapes[:3] == [(1, 1), (3, 17), (2, MAX_LENGTH)]
    assert report["parity"]["shapes"][1]["lengths"] == [17, 3, 9]
    assert (2, 8) not in shapes  # the traced shape is not a probe: the probes test dynamism
    assert report["parity"]["tolerance"] == 1e-4
    assert all(0 <= r["max_abs_logit_diff"] <= 1e-4 for r in report["parity"]["shapes"])


@pytest.mark.parametrize("precision", ["fp32", "int8", "fp16"])
def test_padding_invariance_inside_the_graph(exported: tuple[Path, dict], precision: str) -> None:
    """A text alone and padded into a longer batch with other texts: same logits.

    This includes int8: activations are quantized with one scale per row (token), so batch
    mates and padding cannot move a text's scale (onnxruntime's quantize_dynamic would fail).
    """
    out, report = exported
    if precision not in precisions(report):
        pytest.skip(f"no {precision} model")
    sess = session(out / MODEL_FILES[precision])
    seqs = encode_batch(
        ["win a free prize now", "hi", "see you at lunch tomorrow and call me when you get home"]
    )
    alone = logits_of(sess, *pad([seqs[0]]))
    batch = logits_of(sess, *pad(seqs))
    ids, lengths = pad(seqs)
    ids = np.concatenate([ids, np.full((3, 9), PAD, dtype=np.int64)], axis=1)  # extra padding
    padded = logits_of(sess, ids, lengths)
    assert np.max(np.abs(batch[0] - alone[0])) <= 1e-5
    assert np.max(np.abs(padded - batch)) <= 1e-5


def test_metadata_round_trip_in_every_file(exported: tuple[Path, dict], run_dir: Path) -> None:
    out, report = exported
    assert precisions(report) == ["fp32", "int8", "fp16"]
    run_cfg = json.loads((run_dir / "config.json").read_text("utf-8"))
    for precision in precisions(report):
        sess = session(out / MODEL_FILES[precision])
        meta = ModelMetadata.from_props(sess.get_modelmeta().custom_metadata_map)
        assert meta.labels == tuple(LABELS)
        assert meta.max_length == MAX_LENGTH
        assert (meta.tokenizer, meta.pooling, meta.precision) == ("gpt2", "last", precision)
        assert (meta.package_version, meta.pad_token_id) == (__version__, 50256)
        assert meta.extra["exporter"] == "torch.onnx.export(dynamo=True)"
        assert meta.extra["opset"] == 18
        assert meta.extra["source"] == {"kind": "run_dir", "path": str(run_dir.resolve())}
        assert meta.extra["run_config"] == run_cfg


def test_report_evaluation_recomputed(exported: tuple[Path, dict], run_dir: Path) -> None:
    """Accuracy, agreement and max |prob diff| from running the sessions here."""
    out, report = exported
    texts, names = read_split(run_dir, "test")
    y = np.array([LABELS.index(n) for n in names])
    seqs = encode_batch(texts, max_length=MAX_LENGTH)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    logits = {}
    for precision in precisions(report):
        sess, rows = session(out / MODEL_FILES[precision]), {}
        for start in range(0, len(order), 32):  # the report's batching: by length, 32 a batch
            chunk = order[start : start + 32]
            for i, row in zip(chunk, logits_of(sess, *pad([seqs[i] for i in chunk])), strict=True):
                rows[i] = row
        logits[precision] = np.stack([rows[i] for i in range(len(seqs))])
    ev = report["evaluation"]
    assert ev["n"] == 40
    assert ev["source"].endswith("split/test.jsonl")

    def probs(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    for precision, x in logits.items():
        assert ev["accuracy"][precision] == np.mean(x.argmax(-1) == y)
        if precision != "fp32":
            cmp = ev[f"{precision}_vs_fp32"]
            assert cmp["argmax_agreement"] == np.mean(x.argmax(-1) == logits["fp32"].argmax(-1))
            diff = np.max(np.abs(probs(x) - probs(logits["fp32"])))
            assert cmp["max_abs_prob_diff"] == pytest.approx(diff, abs=1e-6)
    # The few training steps separate the classes: not all one class, better than chance.
    assert ev["accuracy"]["fp32"] >= 0.75
    assert len(set(logits["fp32"].argmax(-1))) == 2


def test_int8_agrees_with_fp32(exported: tuple[Path, dict]) -> None:
    """Bound: on 40 texts, at most 2 may flip. The held-out probabilities lie in 0.6..0.97
    (margin >= 0.2 in probability) and int8 moves them by about 1e-3 (measured), so a flip
    needs a text within a hair of the boundary; more than 2 of 40 means broken quantization.
    On the random-token probes (out of distribution) probabilities may move at most 0.05."""
    _, report = exported
    assert report["evaluation"]["int8_vs_fp32"]["argmax_agreement"] >= 38 / 40
    assert report["evaluation"]["int8_vs_fp32"]["max_abs_prob_diff"] < 0.02
    assert report["int8"]["vs_fp32_on_probes"]["max_abs_prob_diff"] < 0.05
    assert report["int8"]["format"] == resolve_int8_format("auto")[0]
    assert report["int8"]["excluded_nodes"]  # the head stays fp32
    # query, key, value, attention output, MLP in, MLP out: 6 weights per block
    assert report["int8"]["int8_matmuls"] == 12


def test_fp16_checked_and_close(exported: tuple[Path, dict]) -> None:
    _, report = exported
    fp16 = report["fp16"]
    if not fp16["checked"]:
        pytest.skip(fp16["reason"])
    assert fp16["provider"] in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert fp16["max_abs_logit_diff_vs_fp32"] < 1e-2
    assert fp16["argmax_agreement_vs_fp32"] == 1.0
    assert report["evaluation"]["fp16_vs_fp32"]["argmax_agreement"] == 1.0


def test_graph_rewrites(exported: tuple[Path, dict]) -> None:
    """GELU is one FastGelu and attention one MultiHeadAttention per block (fp32, int8); int8
    runs every weight product as an integer GEMM; fp16 keeps the plain decomposed GELU and
    attention (converted from the unfused trace)."""
    from collections import Counter

    import onnx

    out, report = exported

    def ops(precision: str) -> Counter:
        path = out / MODEL_FILES[precision]
        return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)

    n_layer = PRESETS["gpt2-tiny"].n_layer
    fp32, int8, fp16 = ops("fp32"), ops("int8"), ops("fp16")
    assert fp32["FastGelu"] == int8["FastGelu"] == n_layer
    assert fp32["Tanh"] == int8["Tanh"] == 0
    assert fp32["MultiHeadAttention"] == int8["MultiHeadAttention"] == n_layer
    assert fp32["Softmax"] == int8["Softmax"] == 0
    assert int8["MatMulIntegerToFloat"] == report["int8"]["int8_matmuls"] == 12
    assert int8["MatMul"] == 0 and int8["Gemm"] == 1  # only the head stays fp32
    assert fp16["Tanh"] == n_layer and fp16["FastGelu"] == 0
    assert fp16["Softmax"] == n_layer and fp16["MultiHeadAttention"] == 0


def test_int8_format_choice() -> None:
    assert resolve_int8_format("auto", vnni=True)[0] == "u8s8"
    import platform

    if platform.machine().lower() in ("x86_64", "amd64"):
        assert resolve_int8_format("auto", vnni=False)[0] == "u8s8-reduce-range"
    assert resolve_int8_format("u8s8-reduce-range")[0] == "u8s8-reduce-range"
    with pytest.raises(ExportError, match="unknown int8 format 's8s8'"):
        resolve_int8_format("s8s8")


def test_external_data_path(tmp_path: Path, run_dir: Path, exported: tuple[Path, dict]) -> None:
    """A forced tiny threshold: tensors go to <file>.data, referenced by a bare file name (fp16
    included: its conversion reads the unfused graph's external data)."""
    model, cfg = load_run(run_dir)
    out = tmp_path / "big"
    options = ExportOptions(
        max_length=MAX_LENGTH, quantize=True, fp16=True, threads=1, external_data_threshold=1024
    )
    report = export_model(model, cfg.labels, out, options).to_dict()
    assert sorted(p.name for p in out.iterdir()) == [
        "model.fp16.onnx",
        "model.fp16.onnx.data",
        "model.int8.onnx",
        "model.int8.onnx.data",
        "model.onnx",
        "model.onnx.data",
        "report.json",
    ]
    for entry in report["models"]:
        assert entry["external_data"] == entry["file"] + ".data"
        assert entry["external_data_bytes"] == (out / entry["external_data"]).stat().st_size
        proto = onnx.load(str(out / entry["file"]), load_external_data=False)
        locations = {
            kv.value
            for t in proto.graph.initializer
            if t.data_location == onnx.TensorProto.EXTERNAL
            for kv in t.external_data
            if kv.key == "location"
        }
        assert locations == {entry["external_data"]}
        # The tensors really moved out: the graph file keeps under 5 % of the bytes.
        assert (out / entry["file"]).stat().st_size < entry["external_data_bytes"] / 20
    # Same logits as the single-file export of the same run.
    ref_dir, _ = exported
    ids, lengths = pad(encode_batch(["win a free prize now", "see you at lunch"]))
    for precision in ("fp32", "int8", "fp16"):
        got = logits_of(session(out / MODEL_FILES[precision]), ids, lengths)
        want = logits_of(session(ref_dir / MODEL_FILES[precision]), ids, lengths)
        assert np.max(np.abs(got - want)) <= 1e-6


def test_parity_failure_leaves_nothing(
    tmp_path: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A weight perturbed between the torch model and the written graph: ParityError."""
    import clf_export.fp32 as fp32

    fold = fp32.fold_weight_transforms

    def fold_and_perturb(proto: onnx.ModelProto) -> int:
        n = fold(proto)
        for t in proto.graph.initializer:
            if t.name.endswith("head.weight"):
                w = onnx.numpy_helper.to_array(t) + 0.01
                t.CopyFrom(onnx.numpy_helper.from_array(w, t.name))
        return n

    monkeypatch.setattr(fp32, "fold_weight_transforms", fold_and_perturb)
    model, cfg = load_run(run_dir)
    out = tmp_path / "out"
    with pytest.raises(ParityError, match="disagrees with the torch model"):
        export_model(model, cfg.labels, out, max_length=MAX_LENGTH, quantize=True, threads=1)
    assert list(tmp_path.iterdir()) == []  # neither --out nor the temp dir


def _model_with_unused_initializer() -> bytes:
    """A graph onnxruntime warns about (it drops the unused initializer) when it loads it."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        [onnx.numpy_helper.from_array(np.zeros(1, np.float32), "unused")],
    )
    opset = [onnx.helper.make_opsetid("", 18)]
    return onnx.helper.make_model(graph, opset_imports=opset, ir_version=10).SerializeToString()


def test_export_leaves_onnxruntime_log_level_alone(
    tmp_path: Path, run_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """onnxruntime's default logger belongs to the process: an fp16 export (whose CUDA check
    wants quiet) must not change it. onnxruntime has no getter, so the level is observed: a
    session-level warning is hidden at severity 3 (error) and shown at 2 (warning)."""
    warning_model = _model_with_unused_initializer()

    def onnxruntime_warns() -> bool:
        ort.InferenceSession(warning_model, providers=["CPUExecutionProvider"])
        return "Removing initializer 'unused'" in capfd.readouterr().err

    model, cfg = load_run(run_dir)
    ort.set_default_logger_severity(3)
    try:
        assert not onnxruntime_warns()
        export_model(model, cfg.labels, tmp_path / "out", fp16=True, threads=1)
        capfd.readouterr()
        assert not onnxruntime_warns()  # still 3
    finally:
        ort.set_default_logger_severity(2)  # onnxruntime's default
    assert onnxruntime_warns()  # the observation works: at 2 the warning shows


def test_evaluation_data_choice(tmp_path: Path, run_dir: Path) -> None:
    """--eval-data wins, else --eval-split (which must exist), else the test split if any."""
    from clf_export.evaluation import run_eval_set
    from clf_train.run_dir import RunDirError

    data = tmp_path / "held_out.csv"
    data.write_text('text,label\nwin cash now,spam\n"hi, see you",ham\n', encoding="utf-8")
    chosen = run_eval_set(run_dir, ExportOptions(eval_data=data))
    assert (chosen.texts, chosen.labels, chosen.source) == (
        ["win cash now", "hi, see you"],
        ["spam", "ham"],
        str(data),
    )
    val = run_eval_set(run_dir, ExportOptions(eval_split="val"))
    assert (val.texts, val.labels) == read_split(run_dir, "val")
    assert val.source == str(run_dir / "split" / "val.jsonl")
    assert run_eval_set(run_dir, ExportOptions()).source == str(run_dir / "split" / "test.jsonl")
    bare = tmp_path / "bare_run"
    bare.mkdir()
    assert run_eval_set(bare, ExportOptions()) is None
    with pytest.raises(RunDirError):
        run_eval_set(bare, ExportOptions(eval_split="val"))


def test_evaluation_data_errors(tmp_path: Path) -> None:
    from clf_export.evaluation import EvalSet, read_labelled_file

    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a", "label": "ham"}\n\n{"text": "b"}\n', encoding="utf-8")
    with pytest.raises(ExportError, match=r"d\.jsonl row 2 is not a text/label row"):
        read_labelled_file(jsonl)
    csv = tmp_path / "d.csv"
    csv.write_text("message,label\nhi,ham\n", encoding="utf-8")
    with pytest.raises(ExportError, match=r"columns \['message', 'label'\]; expected a header"):
        read_labelled_file(csv)
    with pytest.raises(ExportError, match="does not exist"):
        read_labelled_file(tmp_path / "missing.jsonl")
    unknown = EvalSet(["a", "b"], ["ham", "eggs"], "x")
    with pytest.raises(ExportError, match=r"labels \['eggs'\] that the model does not know"):
        unknown.tokenize(LABELS, MAX_LENGTH)
    with pytest.raises(ExportError, match="the evaluation data is empty"):
        EvalSet([], [], "x").tokenize(LABELS, MAX_LENGTH)
    tokens = EvalSet(["win a free prize now"], ["spam"], "x").tokenize(LABELS, 3)
    assert tokens.token_ids == [encode_batch(["win a free prize now"])[0][:3]]
    assert tokens.label_ids.tolist() == [1]


def test_probe_comparison_catches_non_finite_logits() -> None:
    from clf_export.parity import ProbeLogits, parity_inputs

    class Fixed:  # a stand-in session answering fixed logits
        def __init__(self, value: float) -> None:
            self.value = value

        def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            return [np.full((len(feeds["lengths"]), 2), self.value, np.float32)]

    inputs = parity_inputs(MAX_LENGTH, vocab_size=50257, pad_token_id=PAD)
    reference = ProbeLogits.run(Fixed(1.0), inputs)
    assert [x.shape for x in reference.outputs] == [(len(lens), 2) for _, lens in inputs]
    assert reference.compare(Fixed(1.5)) == {
        "max_abs_logit_diff": 0.5,
        "p50_abs_prob_diff": 0.0,
        "p99_abs_prob_diff": 0.0,
        "max_abs_prob_diff": 0.0,
        "argmax_agreement": 1.0,
    }
    assert reference.compare(Fixed(float("nan"))) is None


# -------------------------------------------------------------------------------------------
# Chapter-6 state dict and Hugging Face weights


def chapter6_state_dict(model: GPTClassifier) -> dict[str, torch.Tensor]:
    """``model``'s weights under the names the chapter-6 GPTModel saves (with its mask buffer)."""
    sd = model.state_dict()
    d = model.cfg.d_model
    out = {
        "tok_emb.weight": sd["backbone.wte.weight"],
        "pos_emb.weight": sd["backbone.wpe.weight"],
        "final_norm.scale": sd["backbone.ln_f.weight"],
        "final_norm.shift": sd["backbone.ln_f.bias"],
        "out_head.weight": sd["head.weight"],
        "out_head.bias": sd["head.bias"],
    }
    names = {
        "ln_1.weight": "norm1.scale",
        "ln_1.bias": "norm1.shift",
        "attn.proj.weight": "att.out_proj.weight",
        "attn.proj.bias": "att.out_proj.bias",
        "ln_2.weight": "norm2.scale",
        "ln_2.bias": "norm2.shift",
        "mlp.fc.weight": "ff.layers.0.weight",
        "mlp.fc.bias": "ff.layers.0.bias",
        "mlp.proj.weight": "ff.layers.2.weight",
        "mlp.proj.bias": "ff.layers.2.bias",
    }
    ctx = model.cfg.context_length
    for i in range(model.cfg.n_layer):
        b = f"backbone.blocks.{i}."
        for ours, theirs in names.items():
            out[f"trf_blocks.{i}.{theirs}"] = sd[b + ours]
        for kind in ("weight", "bias"):
            q, k, v = sd[b + f"attn.qkv.{kind}"].split(d, dim=0)
            for part, t in zip(("query", "key", "value"), (q, k, v), strict=True):
                out[f"trf_blocks.{i}.att.W_{part}.{kind}"] = t.clone()
        out[f"trf_blocks.{i}.att.mask"] = torch.triu(torch.ones(ctx, ctx), diagonal=1)
    return {k: v.contiguous() for k, v in out.items()}


def test_state_dict_path(tmp_path: Path, run_dir: Path) -> None:
    from clf_export import export_state_dict

    model, _ = load_run(run_dir)
    pth = tmp_path / "review_classifier.pth"
    torch.save(chapter6_state_dict(model), pth)
    out = tmp_path / "out"
    report = export_state_dict(pth, out, labels=LABELS, threads=1).to_dict()
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "report.json"]
    assert report["max_length"] == 256  # min(256, context length 512)
    assert report["source"]["kind"] == "state_dict"
    assert report["evaluation"] == {"skipped": "no evaluation data (see --eval-data)"}
    ids, lengths = pad(encode_batch(["win a free prize now", "hi", "see you at lunch"]))
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(lengths)).numpy()
    assert np.max(np.abs(logits_of(session(out / "model.onnx"), ids, lengths) - want)) <= 1e-4
    meta = ModelMetadata.from_props(session(out / "model.onnx").get_modelmeta().custom_metadata_map)
    assert (meta.labels, meta.max_length, meta.pooling) == (tuple(LABELS), 256, "last")

    # A head that does not match the labels, and a language-model head: clear errors.
    with pytest.raises(ExportError, match=r"2-class head .* 3 classes"):
        export_state_dict(pth, tmp_path / "bad", labels=["a", "b", "c"])
    sd = chapter6_state_dict(model)
    sd["out_head.weight"] = sd["tok_emb.weight"].clone()
    del sd["out_head.bias"]
    torch.save(sd, tmp_path / "lm.pth")
    with pytest.raises(ExportError, match=r"no classification head: .* language-model head"):
        export_state_dict(tmp_path / "lm.pth", tmp_path / "bad", labels=LABELS)
    with pytest.raises(ExportError, match="--eval-split val names a run split"):
        export_state_dict(pth, tmp_path / "bad", labels=LABELS, eval_split="val")
    assert not (tmp_path / "bad").exists()


def test_matches_transformers_gpt2(tmp_path: Path) -> None:
    """HF GPT2Model -> load_pretrained -> build_classifier -> ONNX: logits equal
    head(hf last_hidden_state at position length - 1)."""
    transformers = pytest.importorskip("transformers")
    from clf_train.pretrained import build_classifier, load_pretrained

    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(
        vocab_size=50257, n_positions=64, n_embd=64, n_layer=2, n_head=4, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    hf = transformers.GPT2Model(hf_cfg).eval()
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    clf = build_classifier(load_pretrained(weights=tmp_path / "hf"), 2, seed=3)
    report = export_model(clf, LABELS, tmp_path / "out", max_length=64, threads=1).to_dict()
    assert report["max_length"] == 64

    ids, lengths = pad(encode_batch(["win a free prize now", "hi", "see you at lunch tomorrow"]))
    with torch.no_grad():
        hidden = hf(input_ids=torch.from_numpy(ids)).last_hidden_state  # (B, T, C)
        last = hidden[torch.arange(len(lengths)), torch.from_numpy(lengths) - 1]  # (B, C)
        want = clf.head(last).numpy()
    got = logits_of(session(tmp_path / "out" / "model.onnx"), ids, lengths)
    assert np.max(np.abs(got - want)) <= 1e-4
