"""Export a trained classifier to ONNX: fp32 always, int8 and fp16 on request.

Graph contract (shared with ``clf_runtime``): inputs ``input_ids`` int64 (batch, sequence)
and ``lengths`` int64 (batch), right-padded; output ``logits`` float32 (batch, num_labels);
``batch`` and ``sequence`` are dynamic. With ``pooling="last"`` the traced function is
``GPTClassifier.forward_last_only``: the last block's query, MLP, final norm and head run on
one position per row.

Exporter (pinned): ``torch.onnx.export(..., dynamo=True)`` at opset 18. Measured with torch
2.13 on GPT-2 small (random weights, onnxruntime CPU, 1 thread): the TorchScript exporter
(``dynamo=False``) still works and both give correct dynamic shapes at untraced sizes and the
same speed (batch 1 x 32: 55.6 vs 56.1 ms; 8 x 64: 592 vs 595 ms), but the TorchScript
tracer records ``d_model`` as a runtime ``Shape`` value, so the last block's split query /
key-value weights stay computed tensors that the int8 quantizer cannot touch; torch.export
sees ``d_model`` as a constant and the split folds into plain weights. It is also the
exporter torch keeps (the TorchScript one is deprecated), and it writes one external-data
file for models over 2 GB. The price is export time (14 s vs 7 s for GPT-2 small).

Nothing that looks like a successful export is left behind on failure: every file is
written into a temporary directory next to ``out_dir`` and moved into place only after
every check passed, ``report.json`` last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clf_runtime._version import __version__
from clf_runtime.metadata import ModelMetadata
from clf_runtime.tokenizer import END_OF_TEXT_ID, TOKENIZER_NAME, encode_batch

from .errors import ExportError
from .fp16 import check_fp16, convert_fp16
from .fusions import fuse_tanh_gelu
from .parity import (
    PARITY_TOLERANCE,
    batched_logits,
    check_parity,
    compare_logits,
    evaluate,
    make_session,
    parity_inputs,
    read_labelled_file,
    run_logits,
)
from .quantize import fold_weight_transforms, quantize_int8
from .report import ExportReport, ModelFile, commit_export, describe_file, staging_dir

__all__ = [
    "DEFAULT_OPSET",
    "EXPORTER",
    "EXTERNAL_DATA_THRESHOLD",
    "MODEL_FILES",
    "export_model",
    "export_run",
    "export_state_dict",
    "save_onnx",
]

DEFAULT_OPSET = 18
"""ONNX opset of the exported graphs (the dynamo exporter's native opset in torch 2.13)."""
EXPORTER = "torch.onnx.export(dynamo=True)"
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3 - 128 * 1024**2
"""Models whose tensors exceed this many bytes keep them in ``<file>.data`` (protobuf caps a
file at 2 GiB; the margin covers the graph itself)."""
MODEL_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
_TRACE_BATCH, _TRACE_SEQUENCE = 2, 8  # mid-sized, so no probe shape equals the traced one

_EXPORTER_WHY = (
    "dynamo exporter pinned: correct dynamic batch/sequence and the same onnxruntime CPU speed "
    "as the TorchScript exporter in torch 2.13, but d_model stays a constant so every weight "
    "MatMul is quantizable; the TorchScript exporter is deprecated"
)


# ---------------------------------------------------------------------------------------------
# Graph


class _ExportedFunction:
    """Factory of the traced module (torch imported lazily)."""

    @staticmethod
    def build(model: Any) -> Any:
        import torch

        class Graph(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
                # (B, T), (B,) -> (B, num_labels); forward_last_only falls back to forward
                # for mean pooling.
                return self.model.forward_last_only(input_ids, lengths)

        return Graph().eval()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress logs and deprecation warnings for one call."""
    names = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _trace(model: Any, path: Path, *, opset: int, fused_attention: bool = True) -> None:
    """Trace ``model`` to ``path`` (tensors in ``path.data``) with dynamic batch and sequence.

    ``fused_attention``: attention becomes onnxruntime's ``MultiHeadAttention`` (see
    :mod:`clf_export.attention`); without it, the exporter's standard-op decomposition.
    """
    import torch

    from . import attention

    cfg = model.cfg
    seq = min(_TRACE_SEQUENCE, cfg.context_length)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (_TRACE_BATCH, seq), generator=gen)  # (B, T)
    lengths = torch.tensor([seq, max(1, seq // 2)], dtype=torch.int64)  # (B,)
    batch = torch.export.Dim("batch", min=1)
    sequence = torch.export.Dim("sequence", min=1, max=cfg.context_length)
    patch = attention.fused_attention() if fused_attention else contextlib.nullcontext()
    try:
        with _quiet_exporter(), torch.no_grad(), patch:
            torch.onnx.export(
                _ExportedFunction.build(model),
                (ids, lengths),
                str(path),
                input_names=["input_ids", "lengths"],
                output_names=["logits"],
                dynamic_shapes={"input_ids": {0: batch, 1: sequence}, "lengths": {0: batch}},
                opset_version=opset,
                custom_translation_table=attention.TRANSLATIONS if fused_attention else None,
                dynamo=True,  # pinned: see the module docstring
                external_data=True,  # one model.onnx.data, whatever the size; re-saved below
                optimize=True,
                verbose=False,
            )
    except Exception as e:  # torch.export raises many unrelated types
        raise ExportError(f"torch.onnx.export failed at opset {opset}: {e}") from e


def _traced_graph(model: Any, scratch: Path, *, opset: int, fused_attention: bool) -> Any:
    """Trace ``model`` (see :func:`_trace`) in ``scratch/trace`` and return the loaded graph,
    weight transforms folded; the files are removed."""
    import onnx

    folder = scratch / "trace"
    folder.mkdir()
    try:
        _trace(model, folder / "model.onnx", opset=opset, fused_attention=fused_attention)
        proto = onnx.load(str(folder / "model.onnx"))  # external data read into memory
    finally:
        shutil.rmtree(folder)
    fold_weight_transforms(proto)
    # The exporter's value_info shape hints are optional, and onnx's file-based shape
    # inference (run before the fp16 conversion) rejects some of them as inconsistent.
    del proto.graph.value_info[:]
    return proto


def _tensor_bytes(model: Any) -> int:
    return sum(len(t.raw_data) if t.raw_data else t.ByteSize() for t in model.graph.initializer)


def save_onnx(model: Any, path: Path, *, threshold: int = EXTERNAL_DATA_THRESHOLD) -> Path | None:
    """Save ``model`` to ``path``; tensors go to ``<name>.data`` beside it above ``threshold``.

    The external-data location is stored as a bare file name, so the pair can be moved
    together. Returns the data file, or None. Note: ``onnx`` moves the tensors out of the
    in-memory ``model`` when it writes external data; reload the file to use it again.
    """
    import onnx

    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    try:
        if _tensor_bytes(model) > threshold:
            onnx.save_model(
                model,
                str(path),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data.name,
                size_threshold=1024,
            )
            return data
        onnx.save_model(model, str(path))
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot write {path}: {e}") from e
    return None


def _set_metadata(model: Any, meta: ModelMetadata) -> None:
    del model.metadata_props[:]
    for key, value in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


# ---------------------------------------------------------------------------------------------
# The export


def _tokenize_eval(
    eval_data: tuple[Sequence[str], Sequence[str]], labels: Sequence[str], max_length: int
) -> tuple[list[list[int]], np.ndarray]:
    texts, names = eval_data
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted({n for n in names if n not in index})
    if unknown:
        raise ExportError(
            f"the evaluation data has labels {unknown[:5]} that the model does not know; "
            f"its labels are {list(labels)}"
        )
    if not texts:
        raise ExportError("the evaluation data is empty; pass a file with at least one row")
    ids = encode_batch(list(texts), max_length=max_length)
    return ids, np.asarray([index[n] for n in names], dtype=np.int64)


def export_model(
    model: Any,
    labels: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    max_length: int,
    pooling: str | None = None,
    quantize: bool = False,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    eval_data: tuple[Sequence[str], Sequence[str]] | None = None,
    eval_source: str | None = None,
    int8_format: str = "auto",
    int8_scheme: str = "auto",
    calibration_data: Sequence[str] | None = None,
    quantize_embeddings: bool = True,
    overwrite: bool = False,
    threads: int | None = None,
    source: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    parity_tolerance: float = PARITY_TOLERANCE,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
) -> ExportReport:
    """Export a :class:`~clf_train.model.GPTClassifier` to ``out_dir`` and check it.

    Writes ``model.onnx`` (+ ``model.int8.onnx`` with ``quantize``, ``model.fp16.onnx`` with
    ``fp16``) and ``report.json``. ``eval_data`` is ``(texts, label names)`` for the held-out
    comparison of precisions; ``calibration_data`` (training texts) calibrates the static int8
    schemes (``int8_scheme``, see :func:`~clf_export.quantize.quantize_int8`). ``pooling``, when
    given, must equal ``model.pooling``.
    ``extra`` goes into every file's metadata (e.g. the run config). Raises
    :class:`~clf_export.errors.ParityError` when the fp32 graph disagrees with the model, and
    :class:`~clf_export.errors.ExportError` for every other failure; either way nothing is
    left in ``out_dir``.
    """
    out_dir = Path(out_dir)
    labels = list(labels)
    cfg = model.cfg
    problems = []
    if len(labels) != model.num_labels:
        problems.append(f"{len(labels)} labels {labels} for a model with {model.num_labels} logits")
    if pooling is not None and pooling != model.pooling:
        problems.append(f"pooling {pooling!r} but the model was built with {model.pooling!r}")
    if not 1 <= max_length <= cfg.context_length:
        problems.append(
            f"max_length {max_length} is outside 1..{cfg.context_length} (the model's context "
            "length); pass a smaller --max-length"
        )
    if problems:
        raise ExportError("cannot export: " + "; ".join(problems))
    eval_tokens = _tokenize_eval(eval_data, labels, max_length) if eval_data is not None else None
    source = dict(source or {"kind": "model"})
    exporter = {"name": EXPORTER, "opset": opset, "why": _EXPORTER_WHY}
    meta_extra = {**dict(extra or {}), "exporter": EXPORTER, "opset": opset, "source": source}

    def metadata(precision: str) -> ModelMetadata:
        return ModelMetadata(
            labels=tuple(labels),
            max_length=max_length,
            tokenizer=TOKENIZER_NAME,
            pooling=model.pooling,
            precision=precision,
            package_version=__version__,
            pad_token_id=END_OF_TEXT_ID,
            extra=meta_extra,
        )

    def write(proto: Any, precision: str) -> list[str]:
        _set_metadata(proto, metadata(precision))
        path = tmp / MODEL_FILES[precision]
        data = save_onnx(proto, path, threshold=external_data_threshold)
        written[precision] = data
        return [path.name] + ([data.name] if data is not None else [])

    was_training = model.training
    model.eval()
    try:
        with staging_dir(out_dir, overwrite=overwrite) as tmp:
            written: dict[str, Path | None] = {}
            names: list[str] = []
            raw = tmp / "raw"
            raw.mkdir()
            proto = _traced_graph(model, raw, opset=opset, fused_attention=True)
            # fp16 is converted from a graph of standard ops (no MultiHeadAttention, no
            # FastGelu): the onnxruntime-only rewrites are for its CPU kernels.
            unfused = raw / "unfused.onnx"
            if fp16:
                save_onnx(
                    _traced_graph(model, raw, opset=opset, fused_attention=False),
                    unfused,
                    threshold=external_data_threshold,
                )
            fuse_tanh_gelu(proto)
            names += write(proto, "fp32")
            del proto
            fp32_path = tmp / MODEL_FILES["fp32"]

            sessions = {"fp32": make_session(fp32_path, threads=threads)}
            probes = parity_inputs(
                max_length, vocab_size=cfg.vocab_size, pad_token_id=END_OF_TEXT_ID
            )
            parity = check_parity(sessions["fp32"], model, probes, tolerance=parity_tolerance)
            probe_logits = [run_logits(sessions["fp32"], ids, lens) for ids, lens in probes]

            int8_info = None
            if quantize:
                proto, int8_info = quantize_int8(
                    fp32_path,
                    int8_format=int8_format,
                    quantize_embeddings=quantize_embeddings,
                    scheme=int8_scheme,
                    calibration_ids=None
                    if calibration_data is None
                    else encode_batch(list(calibration_data), max_length=max_length),
                    eval_ids=None if eval_tokens is None else eval_tokens[0],
                    pad_token_id=END_OF_TEXT_ID,
                    threads=threads,
                )
                names += write(proto, "int8")
                del proto
                sessions["int8"] = make_session(tmp / MODEL_FILES["int8"], threads=threads)
                got = [run_logits(sessions["int8"], ids, lens) for ids, lens in probes]
                if not all(np.all(np.isfinite(x)) for x in got):
                    raise ExportError("the int8 graph produced non-finite logits on the probes")
                int8_info["vs_fp32_on_probes"] = compare_logits(
                    np.concatenate(probe_logits), np.concatenate(got)
                )

            fp16_info = None
            if fp16:
                proto = convert_fp16(unfused, tmp / "scratch.fp16.onnx")
                names += write(proto, "fp16")
                del proto
                for path in tmp.glob("scratch.fp16.onnx*"):
                    path.unlink()
                fp16_info, session = check_fp16(
                    tmp / MODEL_FILES["fp16"], probe_logits, probes, threads=threads
                )
                if session is not None:
                    sessions["fp16"] = session
            shutil.rmtree(raw)

            evaluation: dict[str, Any] = {"skipped": "no evaluation data (see --eval-data)"}
            if eval_tokens is not None:
                token_ids, label_ids = eval_tokens
                logits = {
                    p: batched_logits(s, token_ids, pad_token_id=END_OF_TEXT_ID)
                    for p, s in sessions.items()
                }
                evaluation = {"source": eval_source or "eval_data", **evaluate(logits, label_ids)}
                if "fp16" in sessions:
                    evaluation["fp16_provider"] = fp16_info["provider"] if fp16_info else None
            sessions.clear()

            models: list[ModelFile] = [
                describe_file(tmp / MODEL_FILES[p], p, external_data=written[p]) for p in written
            ]
            report = ExportReport(
                out_dir=str(out_dir),
                source=source,
                labels=labels,
                max_length=max_length,
                pooling=model.pooling,
                pad_token_id=END_OF_TEXT_ID,
                exporter=exporter,
                models=models,
                parity=parity,
                int8=int8_info,
                fp16=fp16_info,
                evaluation=evaluation,
            )
            commit_export(tmp, out_dir, names, report)
    finally:
        model.train(was_training)
    return report


def export_run(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    quantize: bool = False,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    max_length: int | None = None,
    eval_split: str | None = None,
    eval_data: str | os.PathLike[str] | None = None,
    **options: Any,
) -> ExportReport:
    """Export the trained model of a ``clf-train`` run directory (``clf-export RUN_DIR``).

    ``max_length`` defaults to the run's. The int8 / fp16 comparison runs on ``eval_data``
    (a .jsonl / .csv file) when given, else on the run's ``split/<eval_split>.jsonl`` (which
    must exist), else on ``split/test.jsonl`` when the run has one. ``options`` are passed to
    :func:`export_model` (``int8_format``, ``quantize_embeddings``, ``overwrite``,
    ``threads``, ``external_data_threshold``, ...).
    Raises :class:`~clf_train.run_dir.RunDirError` for a missing or inconsistent run dir.
    """
    from clf_train.run_dir import SPLIT_DIR, load_run, read_split

    run_dir = Path(run_dir)
    model, run_cfg = load_run(run_dir)
    data, data_source = None, None
    if eval_data is not None:
        data, data_source = read_labelled_file(eval_data), str(eval_data)
    elif eval_split is not None:  # asked for: it must exist (read_split raises RunDirError)
        data = read_split(run_dir, eval_split)
        data_source = str(run_dir / SPLIT_DIR / f"{eval_split}.jsonl")
    elif (run_dir / SPLIT_DIR / "test.jsonl").is_file():  # default: the test split if present
        data = read_split(run_dir, "test")
        data_source = str(run_dir / SPLIT_DIR / "test.jsonl")
    if (
        quantize
        and "calibration_data" not in options
        and (run_dir / SPLIT_DIR / "train.jsonl").is_file()
    ):
        options["calibration_data"] = read_split(run_dir, "train")[0]  # static int8 scales
    return export_model(
        model,
        run_cfg.labels,
        out_dir,
        max_length=max_length or run_cfg.max_length,
        quantize=quantize,
        fp16=fp16,
        opset=opset,
        eval_data=data,
        eval_source=data_source,
        source={"kind": "run_dir", "path": str(run_dir.resolve())},
        extra={"run_config": run_cfg.to_dict()},
        **options,
    )


def export_state_dict(
    state_dict: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    labels: Sequence[str],
    model: str | None = None,
    quantize: bool = False,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    max_length: int | None = None,
    eval_data: str | os.PathLike[str] | None = None,
    **options: Any,
) -> ExportReport:
    """Export a finetuned chapter-6 state dict (``clf-export --state-dict FILE --labels ...``).

    ``model`` (``gpt2`` ... ``gpt2-xl``) is checked against the file's shapes when given. The
    file must hold the classification head ``out_head`` with one row per label. Pooling is
    ``last`` (the last real token); ``max_length`` defaults to min(256, context length).
    Raises :class:`~clf_train.pretrained.PretrainedError` for an unreadable file.
    """
    from clf_train.pretrained import build_classifier, load_pretrained

    labels = list(labels)
    pretrained = load_pretrained(model=model, weights=state_dict)
    cfg = pretrained.config
    head = pretrained.head
    if head is None:
        raise ExportError(
            f"{state_dict} has no classification head: out_head is missing or is the "
            "language-model head (vocab_size x emb_dim, no bias), so this is a pretrained, not "
            "a finetuned model. The chapter-6 recipe replaces out_head with Linear(emb_dim, "
            "num_classes); export the state dict saved after finetuning."
        )
    rows = int(head["weight"].shape[0])
    if rows != len(labels):
        what = "the language-model head" if rows == cfg.vocab_size else f"a {rows}-class head"
        raise ExportError(
            f"{state_dict} holds {what} (out_head with {rows} outputs) but --labels names "
            f"{len(labels)} classes {labels}; pass one label per output of the finetuned head"
        )
    classifier = build_classifier(pretrained, len(labels), pooling="last")
    data = read_labelled_file(eval_data) if eval_data is not None else None
    return export_model(
        classifier,
        labels,
        out_dir,
        max_length=max_length or min(256, cfg.context_length),
        quantize=quantize,
        fp16=fp16,
        opset=opset,
        eval_data=data,
        eval_source=None if eval_data is None else str(eval_data),
        source={"kind": "state_dict", "path": str(Path(state_dict).resolve()), "model": model},
        extra={"model": cfg.to_dict(), "pretrained_source": pretrained.source},
        **options,
    )
