"""Export a trained classifier to ONNX: fp32 always, int8 and fp16 on request.

:func:`export_model` is the whole export of one torch model, in four steps of their own: the
fp32 graph (:func:`clf_export.fp32.export_fp32`: trace, fold, fuse, save, parity with torch),
the int8 variant (:func:`clf_export.quantize.export_int8`), the fp16 variant
(:func:`clf_export.fp16.export_fp16`) and the held-out comparison of the precisions
(:func:`clf_export.evaluation.evaluate_sessions`). A model carrying LoRA adapters is merged
into plain weights first, and the merge checked (:func:`clf_export.merge.merge_for_export`).
:func:`export_run` and :func:`export_state_dict` load the model from a ``clf-train`` run
directory or a chapter-6 state dict, and call it.

Nothing that looks like a successful export is left behind on failure: every file is
written into a temporary directory next to ``out_dir`` and moved into place only after
every check passed, ``report.json`` last (:mod:`clf_export.staging`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from clf_runtime._version import __version__
from clf_runtime.contract import TRAIN, split_file
from clf_runtime.metadata import ModelMetadata
from clf_runtime.paths import OutputPathError, check_output_path
from clf_runtime.tokenizer import END_OF_TEXT_ID, TOKENIZER_NAME, encode_batch

from .errors import ExportError
from .evaluation import EvalSet, evaluate_sessions, read_labelled_file, run_eval_set
from .fp16 import export_fp16
from .fp32 import EXPORTER, EXPORTER_WHY, export_fp32
from .merge import merge_for_export
from .options import (
    CALIBRATION_TEXTS,
    DEFAULT_MAX_LENGTH,
    FP16,
    FP32,
    INT8,
    LAST_POOLING,
    ExportOptions,
    resolve_options,
)
from .progress import stage
from .quantize import export_int8
from .report import ExportReport
from .staging import StagedModels, commit_export, staging_dir

__all__ = ["export_model", "export_run", "export_state_dict"]


def _check_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """``out_dir`` as a Path, refused before any work if it cannot become a directory.

    The shared check of every CLI's output path (:func:`clf_runtime.paths.check_output_path`);
    an existing export in it is :func:`clf_export.staging.staging_dir`'s case (--overwrite).
    """
    try:
        return check_output_path(out_dir, flag="--out", kind="dir")
    except OutputPathError as e:
        raise ExportError(str(e)) from e


def _check_model(model: Any, labels: list[str], pooling: str | None, max_length: int) -> None:
    """Raise one :class:`ExportError` listing every way ``model`` does not fit the request."""
    problems = []
    if len(labels) != model.num_labels:
        problems.append(f"{len(labels)} labels {labels} for a model with {model.num_labels} logits")
    if pooling is not None and pooling != model.pooling:
        problems.append(f"pooling {pooling!r} but the model was built with {model.pooling!r}")
    context = model.cfg.context_length
    if not 1 <= max_length <= context:
        problems.append(
            f"max_length {max_length} is outside 1..{context} (the model's context length); "
            "pass a smaller --max-length"
        )
    if problems:
        raise ExportError("cannot export: " + "; ".join(problems))


def export_model(
    model: Any,
    labels: Sequence[str],
    out_dir: str | os.PathLike[str],
    options: ExportOptions | None = None,
    *,
    pooling: str | None = None,
    eval_set: EvalSet | None = None,
    calibration_texts: Sequence[str] | None = None,
    source: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    **changes: Any,
) -> ExportReport:
    """Export a :class:`~clf_train.model.GPTClassifier` to ``out_dir`` and check it.

    Writes ``model.onnx`` (+ ``model.int8.onnx`` with ``options.quantize``,
    ``model.fp16.onnx`` with ``options.fp16``) and ``report.json``. ``changes`` are
    :class:`ExportOptions` fields applied on top of ``options`` (``quantize=True``, ...).
    A model carrying LoRA adapters (:mod:`clf_train.lora`) is merged first and the merge
    checked (``report.lora``); ``model`` itself is not changed.
    ``options.max_length`` defaults to min(256, the model's context length). The held-out
    comparison of precisions runs on ``eval_set`` when given, else on ``options.eval_data``;
    those held-out texts also judge the int8 schemes, whose static scales are calibrated on
    ``calibration_texts`` (training texts; see :func:`~clf_export.quantize.quantize_int8`).
    ``pooling``, when given, must equal ``model.pooling``. ``source`` (where the model came
    from) and ``extra`` go into every file's metadata. Raises
    :class:`~clf_export.errors.ParityError` when the fp32 graph disagrees with the model, and
    :class:`~clf_export.errors.ExportError` for every other failure; either way nothing is
    left in ``out_dir``.
    """
    opts = resolve_options(options, changes)
    out_dir = _check_out_dir(out_dir)
    labels = list(labels)
    max_length = opts.max_length or min(DEFAULT_MAX_LENGTH, model.cfg.context_length)
    _check_model(model, labels, pooling, max_length)
    if eval_set is None and opts.eval_data is not None:
        eval_set = read_labelled_file(opts.eval_data)
    # Tokenized before the (slow) trace, so that bad evaluation data fails at once.
    eval_tokens = eval_set.tokenize(labels, max_length) if eval_set is not None else None
    calibration_ids = (
        encode_batch(list(calibration_texts), max_length=max_length)
        if opts.quantize and calibration_texts
        else None
    )
    source = dict(source or {"kind": "model"})
    metadata = ModelMetadata(
        labels=tuple(labels),
        max_length=max_length,
        tokenizer=TOKENIZER_NAME,
        pooling=model.pooling,
        precision=FP32,
        package_version=__version__,
        pad_token_id=END_OF_TEXT_ID,
        extra={**dict(extra or {}), "exporter": EXPORTER, "opset": opts.opset, "source": source},
    )
    was_training = model.training
    model.eval()
    try:
        # Before the staging dir exists: a merge that fails its check leaves nothing behind.
        traced, lora = merge_for_export(model, max_length=max_length)
        with staging_dir(out_dir, overwrite=opts.overwrite) as tmp:
            staged = StagedModels(tmp, metadata, threshold=opts.external_data_threshold)
            sessions: dict[str, Any] = {}  # precision -> session; the only references to them
            fp32, sessions[FP32] = export_fp32(traced, staged, opts, max_length=max_length)
            int8_info = fp16_info = None
            if opts.quantize:
                with stage("int8", "quantizing to int8, choosing the scheme, checking it"):
                    int8_info, sessions[INT8] = export_int8(
                        staged,
                        fp32,
                        opts,
                        calibration_ids=calibration_ids,
                        eval_ids=None if eval_tokens is None else eval_tokens.token_ids,
                        fp32_session=sessions[FP32],  # no second fp32 session in memory
                    )
            if fp32.unfused is not None:  # kept exactly when opts.fp16
                with stage("fp16", "converting to fp16 and checking it"):
                    fp16_info, sessions[FP16] = export_fp16(staged, fp32.unfused, fp32.probes, opts)
            staged.drop_scratch()
            live = {p: s for p, s in sessions.items() if s is not None}
            if eval_tokens is None:
                evaluation = evaluate_sessions(live, None)  # records why it was skipped
            else:
                n = len(eval_tokens.token_ids)
                with stage("evaluation", f"accuracy of {', '.join(live)} on {n:,} held-out texts"):
                    evaluation = evaluate_sessions(live, eval_tokens)
            sessions.clear()  # frees the sessions' memory before the files are hashed and moved
            with stage("write", f"hashing the files and moving them into {out_dir}"):
                report = ExportReport(
                    out_dir=str(out_dir),
                    source=source,
                    labels=labels,
                    max_length=max_length,
                    pooling=model.pooling,
                    pad_token_id=END_OF_TEXT_ID,
                    exporter={"name": EXPORTER, "opset": opts.opset, "why": EXPORTER_WHY},
                    models=staged.describe(),
                    parity=fp32.parity,
                    lora=lora,
                    int8=int8_info,
                    fp16=fp16_info,
                    evaluation=evaluation,
                )
                commit_export(tmp, out_dir, staged.names, report)
    finally:
        model.train(was_training)
    return report


def export_run(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: ExportOptions | None = None,
    **changes: Any,
) -> ExportReport:
    """Export the trained model of a ``clf-train`` run directory (``clf-export RUN_DIR``).

    ``changes`` are :class:`ExportOptions` fields applied on top of ``options``
    (``export_run(run, out, quantize=True)``). ``max_length`` defaults to the run's. The int8 /
    fp16 comparison runs on ``eval_data`` (a .jsonl / .csv file) when given, else on the run's
    ``split/<eval_split>.jsonl`` (which must exist), else on ``split/test.jsonl`` when the run
    has one. With ``quantize``, the run's train split (when it has one) calibrates the static
    int8 schemes. Raises :class:`~clf_train.run_dir.RunDirError` for a missing or inconsistent
    run dir, :class:`~clf_export.errors.ExportError` for everything else.
    """
    from clf_train.run_dir import load_run, read_split

    opts = resolve_options(options, changes)
    _check_out_dir(out_dir)  # before the (slow) load
    run_dir = Path(run_dir)
    # A LoRA run comes with its adapters apart: export_model merges them and checks the merge.
    with stage("load", f"reading the run {run_dir}"):
        model, run_cfg = load_run(run_dir, merge=False)
        calibration = None
        if opts.quantize and (run_dir / split_file(TRAIN)).is_file():
            calibration = read_split(run_dir, TRAIN)[0][:CALIBRATION_TEXTS]  # static int8 scales
    return export_model(
        model,
        run_cfg.labels,
        out_dir,
        replace(opts, max_length=opts.max_length or run_cfg.max_length),
        eval_set=run_eval_set(run_dir, opts),
        calibration_texts=calibration,
        source={"kind": "run_dir", "path": str(run_dir.resolve())},
        extra={"run_config": run_cfg.to_dict()},
    )


def export_state_dict(
    state_dict: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: ExportOptions | None = None,
    *,
    labels: Sequence[str],
    model: str | None = None,
    **changes: Any,
) -> ExportReport:
    """Export a finetuned chapter-6 state dict (``clf-export --state-dict FILE --labels ...``).

    ``model`` (a preset name: ``gpt2`` ... ``gpt2-xl``, ``gpt2-tiny``, ``gpt2-mini``) is checked
    against the file's shapes when given, and gives the number of attention heads (which
    tensor shapes do not show); a ``config.json`` beside a ``.safetensors`` file does too. The
    file must hold the classification head ``out_head`` with one row per label. Pooling is
    ``last`` (the last real token); ``max_length`` defaults to min(256, context length).
    ``changes`` are :class:`ExportOptions` fields applied on top of ``options``. Raises
    :class:`~clf_train.pretrained.PretrainedError` for an unreadable file.
    """
    from clf_train.pretrained import build_classifier, load_pretrained

    opts = resolve_options(options, changes)
    _check_out_dir(out_dir)  # before the (slow) load
    if opts.eval_split is not None:
        raise ExportError(
            f"--eval-split {opts.eval_split} names a run split, but a state dict has no run "
            "directory; pass --eval-data FILE instead"
        )
    labels = list(labels)
    with stage("load", f"reading the state dict {state_dict}"):
        pretrained = load_pretrained(model=model, weights=state_dict, weights_flag="--state-dict")
    if pretrained.lora is not None:
        raise ExportError(
            f"{state_dict} holds appendix-E LoRA adapters (W_query.lora.A ...); appendix E's "
            "alpha is not in the file, so they cannot be merged here. Merge them before saving "
            "(W += alpha * (A @ B).T in each LinearWithLoRA, then save the plain state dict), "
            "or continue from the file with clf-train --weights FILE --trainable lora "
            "--lora-rank R --lora-alpha (alpha x R) and export that run"
        )
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
    return export_model(
        build_classifier(pretrained, len(labels), pooling=LAST_POOLING),
        labels,
        out_dir,
        opts,
        source={"kind": "state_dict", "path": str(Path(state_dict).resolve()), "model": model},
        extra={"model": cfg.to_dict(), "pretrained_source": pretrained.source},
    )
