"""The competitors of the inference benchmarks, built from ONE set of seeded weights.

``prepare_models(work, ...)`` makes, in ``work``: ``hf/`` (a Hugging Face
``GPT2ForSequenceClassification`` directory with random seeded weights and tokenizer files),
``optimum_fp32/`` + ``optimum_int8/`` (optimum's export and dynamic quantization of it), and
``run/`` + ``export/`` (the same weights through ``clf_train.pretrained`` and ``clf_export``).
``load_engines`` wraps each as an :class:`Engine`: ``run(texts) -> probabilities`` driven the
way each library's documentation shows, and ``fixed(ids) -> logits`` for fixed shapes.
Used by ``bench_inference.py``, ``bench_coldstart.py`` and ``bench_cuda.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common
import numpy as np

from clf_runtime import Classifier
from clf_runtime.batching import softmax
from clf_runtime.tokenizer import END_OF_TEXT_ID

MAX_LENGTH = 256  # tokens kept per text by every engine (SMS texts are <= ~100 tokens)
LABELS = ["ham", "spam"]


@dataclass
class Engine:
    """One competitor: ``run(texts) -> probabilities (B, C)``; ``fixed(ids) -> logits``;
    ``tokenize(texts) -> [ids]`` and ``feed(ids, mask) -> probabilities`` split ``run`` into
    its tokenizer and its model call (Hugging Face engines), so an expert caller can tokenize,
    sort and pad ahead of time and time only the model."""

    name: str
    precision: str
    run: Callable[[Sequence[str]], np.ndarray]
    fixed: Callable[[np.ndarray], np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)
    tokenize: Callable[[Sequence[str]], list[list[int]]] | None = None
    feed: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    session: Any = None
    """ours: the :class:`clf_runtime.Classifier`."""


# ----------------------------------------------------------------------------- model building


def build_hf_dir(hf_dir: Path, preset: str, seed: int) -> None:
    """Seeded random ``GPT2ForSequenceClassification`` (2 labels) + tokenizer in ``hf_dir``."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    cfg = GPT2Config(
        **common.preset_config(preset, "hf"),
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        num_labels=len(LABELS),
        pad_token_id=END_OF_TEXT_ID,
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    torch.manual_seed(seed)
    model = GPT2ForSequenceClassification(cfg).eval()
    model.save_pretrained(str(hf_dir), safe_serialization=True)
    common.hf_gpt2_tokenizer(hf_dir)


def build_ours(
    hf_dir: Path,
    run_dir: Path,
    export_dir: Path,
    seed: int,
    *,
    quantize: bool = True,
    fp16: bool = False,
) -> dict[str, Any]:
    """HF dir -> our classifier (same weights) -> run dir -> clf_export (fp32 + int8/fp16)."""
    import torch
    from safetensors.torch import load_file

    from clf_export import export_run
    from clf_train.pretrained import build_classifier, load_pretrained
    from clf_train.run_dir import WEIGHTS_FILE, RunConfig, save_weights, write_split

    pre = load_pretrained(weights=hf_dir)
    clf = build_classifier(pre, len(LABELS), pooling="last", seed=seed)
    score = load_file(str(hf_dir / "model.safetensors"))["score.weight"]  # (C, d), no bias
    with torch.no_grad():
        clf.head.weight.copy_(score)
        clf.head.bias.zero_()
    run_cfg = RunConfig(
        model=pre.config,
        labels=list(LABELS),
        pooling="last",
        max_length=MAX_LENGTH,
        train={"benchmark": "bench_inference: seeded random HF GPT-2 weights, not trained"},
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    run_cfg.write(run_dir)
    save_weights(run_dir / WEIGHTS_FILE, clf, run_config=run_cfg)
    os.environ.setdefault("CLF_DATA_DIR", str(common.SMS_DIR))
    from clf_train.splits import prepare_data

    data = prepare_data("sms-spam", balance=True, seed=123)
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        write_split(run_dir, name, split.texts, split.labels)
    del clf
    t0 = time.perf_counter()
    report = export_run(run_dir, export_dir, quantize=quantize, fp16=fp16, overwrite=True)
    return {
        "pretrained_source": pre.source,
        "export_seconds": round(time.perf_counter() - t0, 1),
        "export_report": _jsonable(report.to_dict()),
    }


def build_optimum(hf_dir: Path, fp32_dir: Path, int8_dir: Path, vnni: bool) -> dict[str, Any]:
    """optimum export (fp32) and dynamic int8 quantization, saved once."""
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    t0 = time.perf_counter()
    model = ORTModelForSequenceClassification.from_pretrained(
        str(hf_dir), export=True, provider="CPUExecutionProvider"
    )
    model.save_pretrained(str(fp32_dir))
    t1 = time.perf_counter()
    make = AutoQuantizationConfig.avx512_vnni if vnni else AutoQuantizationConfig.avx2
    qconfig = make(is_static=False, per_channel=False)
    ORTQuantizer.from_pretrained(str(fp32_dir)).quantize(
        save_dir=str(int8_dir), quantization_config=qconfig
    )
    return {
        "export_seconds": round(t1 - t0, 1),
        "quantize_seconds": round(time.perf_counter() - t1, 1),
        "quantization_config": "avx512_vnni" if vnni else "avx2",
    }


def _jsonable(obj: Any) -> Any:
    try:
        json.dumps(obj)
        return obj
    except TypeError:
        return repr(obj)


def prepare_models(
    work: Path, preset: str, seed: int, vnni: bool, *, rebuild: bool = False
) -> dict[str, Any]:
    """Build (or reuse, when ``work`` already holds them for the same settings) all models."""
    stamp = {"preset": preset, "seed": seed, "vnni": vnni, "max_length": MAX_LENGTH}
    stamp_file = work / "built.json"
    if stamp_file.is_file() and not rebuild:
        built = common.load_json(stamp_file)
        if built.get("stamp") == stamp:
            print(f"reusing models in {work}")
            return built
    for sub in ("hf", "run", "export", "optimum_fp32", "optimum_int8"):
        shutil.rmtree(work / sub, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    print(f"building models in {work} (preset {preset}, seed {seed}) ...")
    build_hf_dir(work / "hf", preset, seed)
    built: dict[str, Any] = {"stamp": stamp}
    built["optimum"] = build_optimum(
        work / "hf", work / "optimum_fp32", work / "optimum_int8", vnni
    )
    built["ours"] = build_ours(work / "hf", work / "run", work / "export", seed)
    stamp_file.write_text(json.dumps(built, indent=2))
    return built


# ----------------------------------------------------------------------------- engines


def load_engines(work: Path, threads: int, names: Sequence[str]) -> list[Engine]:
    """Load every requested engine once."""
    engines: list[Engine] = []
    hf_dir = work / "hf"
    need_tok = any(not n.startswith("ours") for n in names)
    tok = None
    if need_tok:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(hf_dir))
        tok.pad_token = tok.eos_token
    for name in names:
        if name == "torch-fp32":
            engines.append(_torch_engine(hf_dir, tok, threads))
        elif name.startswith("optimum-"):
            engines.append(_optimum_engine(work, name.split("-")[1], tok, threads))
        elif name.startswith("ours-"):
            engines.append(_ours_engine(work / "export", name.split("-")[1], threads))
        else:
            raise ValueError(f"unknown engine {name!r}")
    return engines


def _torch_engine(hf_dir: Path, tok: Any, threads: int) -> Engine:
    import torch
    from transformers import GPT2ForSequenceClassification

    model = GPT2ForSequenceClassification.from_pretrained(str(hf_dir)).eval()
    model.config.pad_token_id = tok.pad_token_id

    def run(texts: Sequence[str]) -> np.ndarray:
        enc = tok(
            list(texts), padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        )
        with torch.no_grad():
            return torch.softmax(model(**enc).logits, dim=-1).numpy()

    def fixed(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.from_numpy(ids)
            return model(input_ids=t, attention_mask=torch.ones_like(t)).logits.numpy()

    def feed(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
            return torch.softmax(out.logits, dim=-1).numpy()

    return Engine(
        "torch-fp32",
        "fp32",
        run,
        fixed,
        {
            "engine": "transformers GPT2ForSequenceClassification (eager)",
            "torch_threads": torch.get_num_threads(),
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
        },
        tokenize=lambda texts: _hf_ids(tok, texts),
        feed=feed,
    )


def _optimum_engine(work: Path, precision: str, tok: Any, threads: int) -> Engine:
    from optimum.onnxruntime import ORTModelForSequenceClassification

    from clf_runtime.session import session_options

    opts = session_options(threads)  # as the runtime's: N intra-op threads, 1 inter-op
    if precision == "fp32":
        model = ORTModelForSequenceClassification.from_pretrained(
            str(work / "optimum_fp32"), session_options=opts, provider="CPUExecutionProvider"
        )
    else:
        model = ORTModelForSequenceClassification.from_pretrained(
            str(work / "optimum_int8"),
            file_name="model_quantized.onnx",
            session_options=opts,
            provider="CPUExecutionProvider",
        )

    def run(texts: Sequence[str]) -> np.ndarray:
        enc = tok(
            list(texts), padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="np"
        )
        return softmax(np.asarray(model(**enc).logits))

    def fixed(ids: np.ndarray) -> np.ndarray:
        return np.asarray(model(input_ids=ids, attention_mask=np.ones_like(ids)).logits)

    def feed(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return softmax(np.asarray(model(input_ids=ids, attention_mask=mask).logits))

    return Engine(
        f"optimum-{precision}",
        precision,
        run,
        fixed,
        {
            "engine": "optimum ORTModelForSequenceClassification",
            "providers": model.providers,
            "intra_op_threads": threads,
        },
        tokenize=lambda texts: _hf_ids(tok, texts),
        feed=feed,
    )


def _config_entry(opts: Any, key: str) -> str:
    try:
        return opts.get_session_config_entry(key)
    except RuntimeError:  # not set: onnxruntime's default applies
        return "onnxruntime default"


def _hf_ids(tok: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, unpadded, cut as the engines' own calls cut them."""
    return tok(list(texts), truncation=True, max_length=MAX_LENGTH)["input_ids"]


def _ours_engine(export_dir: Path, precision: str, threads: int) -> Engine:
    clf = Classifier.load(
        export_dir, providers=["CPUExecutionProvider"], threads=threads, precision=precision
    )

    def run(texts: Sequence[str]) -> np.ndarray:
        return clf.predict_proba(list(texts), batch_size=32)

    return classifier_engine(clf, f"ours-{precision}", run, intra_op_threads=threads)


def classifier_engine(
    clf: Classifier, name: str, run: Callable[[Sequence[str]], np.ndarray], **info: Any
) -> Engine:
    """An :class:`Engine` around a loaded ``clf_runtime.Classifier``: ``run`` as given, fixed
    shapes through ``run_logits`` with every token real; ``info`` adds to what it records."""

    def fixed(ids: np.ndarray) -> np.ndarray:
        lengths = np.full((ids.shape[0],), ids.shape[1], dtype=np.int64)  # (B,)
        return clf.run_logits(ids, lengths)

    opts = clf._session.get_session_options()  # a benchmark may look inside
    return Engine(
        name,
        clf.metadata.precision,
        run,
        fixed,
        {
            "engine": "clf_runtime.Classifier",
            "provider": clf.provider,
            "model_file": clf.model_path.name,
            "session_options": {
                "intra_op_num_threads": opts.intra_op_num_threads,
                "inter_op_num_threads": opts.inter_op_num_threads,
                "graph_optimization_level": str(opts.graph_optimization_level),
                "execution_mode": str(opts.execution_mode),
                "enable_cpu_mem_arena": opts.enable_cpu_mem_arena,
                "enable_mem_pattern": opts.enable_mem_pattern,
                "intra_op_allow_spinning": _config_entry(opts, "session.intra_op.allow_spinning"),
            },
            **info,
        },
        session=clf,
    )
