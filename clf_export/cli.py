"""``clf-export``: turn a trained classifier into deployable ONNX files.

    clf-export RUN_DIR --out DIR [--quantize] [--fp16]
    clf-export --state-dict FILE.pth --labels ham,spam [--model gpt2] --out DIR [--quantize]

Each stage (load, trace, parity, int8, fp16, evaluation, write) is reported on stderr with
its seconds; the summary goes to stdout. Exit status 0 on success; 1 when the export fails
(nothing is left in DIR); 2 on bad usage.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .options import ExportOptions
    from .report import ExportReport

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests).

    Each option's destination is the name of its :class:`~clf_export.options.ExportOptions`
    field, and its default that field's default.
    """
    from clf_runtime.contract import EXPORT_REPORT_FILE, MODEL_FILES, SPLITS
    from clf_train.presets import MODELS

    from .options import (
        DEFAULT_MAX_LENGTH,
        FP16,
        INT8,
        INT8_FORMATS,
        INT8_SCHEMES,
        TEST_SPLIT,
        ExportOptions,
    )

    p = argparse.ArgumentParser(
        prog="clf-export",
        description="Export a trained GPT-2 classifier to ONNX: fp32, optional int8 (CPU) and "
        f"fp16 (CUDA), each checked against the torch model; writes DIR/{EXPORT_REPORT_FILE} "
        "last.",
    )
    p.add_argument("run_dir", nargs="?", help="run directory written by clf-train")
    p.add_argument("--out", required=True, help="export directory to create")
    p.add_argument("--state-dict", help="finetuned chapter-6 state dict (.pth) instead of RUN_DIR")
    p.add_argument(
        "--model",
        choices=MODELS,
        metavar="NAME",
        help=f"with --state-dict: the model shape to check the file against ({', '.join(MODELS)})",
    )
    p.add_argument("--labels", help="with --state-dict: label names in logit order, e.g. ham,spam")
    p.add_argument("--quantize", action="store_true", help=f"also write {MODEL_FILES[INT8]}")
    p.add_argument("--fp16", action="store_true", help=f"also write {MODEL_FILES[FP16]}")
    p.add_argument(
        "--opset",
        type=int,
        default=ExportOptions.opset,
        help=f"ONNX opset (default {ExportOptions.opset})",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help=f"longest token sequence (default: the run's; min({DEFAULT_MAX_LENGTH}, context) "
        "for --state-dict)",
    )
    p.add_argument(
        "--eval-split",
        default=None,
        help=f"run split for the comparison: {', '.join(SPLITS)} (default: {TEST_SPLIT}, if any)",
    )
    p.add_argument("--eval-data", help="labelled .jsonl/.csv (text,label) for the comparison")
    p.add_argument(
        "--int8-format",
        choices=INT8_FORMATS,
        default=ExportOptions.int8_format,
        help="int8 weights: auto = 8-bit (u8s8) with VNNI, else 7-bit (u8s8-reduce-range)",
    )
    p.add_argument(
        "--int8-scheme",
        choices=("auto", *INT8_SCHEMES),
        default=ExportOptions.int8_scheme,
        help="int8 activation scales: auto = the fastest scheme whose held-out quality is no "
        "worse than rowwise's (per-row scales computed per call); static and static-ln use "
        "scales calibrated on the run's train split",
    )
    p.add_argument(
        "--no-quantize-embeddings",
        dest="quantize_embeddings",
        action="store_false",
        help=f"keep the embedding tables fp32 in {MODEL_FILES[INT8]}",
    )
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads for checks")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export in --out")
    return p


def _options(args: argparse.Namespace) -> ExportOptions:
    """The :class:`ExportOptions` of parsed arguments (fields without a flag keep defaults)."""
    from .options import ExportOptions

    return ExportOptions(
        **{f.name: getattr(args, f.name) for f in fields(ExportOptions) if hasattr(args, f.name)}
    )


def _summary(report: ExportReport) -> str:
    from .options import FP32

    exporter = f"{report.exporter['name']}, opset {report.exporter['opset']}"
    lines = [f"exported to {report.out_dir} ({exporter})"]
    for m in report.models:
        lines.append(f"  {m.file:<18} {m.precision:<5} {m.total_bytes / 1e6:9.1f} MB")
    lines.append(
        f"  parity vs torch: max |logit diff| {report.parity['max_abs_logit_diff']:.2e} "
        f"(tolerance {report.parity['tolerance']:g})"
    )
    if report.lora:
        lines.append(
            f"  LoRA adapters merged: max |logit diff| vs unmerged "
            f"{report.lora['max_abs_logit_diff']:.2e} (tolerance {report.lora['tolerance']:g})"
        )
    if report.int8:
        lines.append(f"  int8 format: {report.int8['format']}, scheme: {report.int8['scheme']}")
    if report.fp16:
        fp16 = report.fp16
        lines.append(
            f"  fp16 check: {fp16['provider']}, max |logit diff| "
            f"{fp16['max_abs_logit_diff_vs_fp32']:.2e}"
            if fp16.get("checked")
            else f"  fp16 check: {fp16['reason']}"
        )
    ev = report.evaluation or {}
    if "accuracy" in ev:
        acc = ", ".join(f"{p} {a:.4f}" for p, a in ev["accuracy"].items())
        lines.append(f"  accuracy on {ev['n']} held-out texts: {acc}")
        for key, cmp in ev.items():
            if key.endswith(f"_vs_{FP32}"):
                lines.append(
                    f"  {key}: argmax agreement {cmp['argmax_agreement']:.4f}, "
                    f"|prob diff| p50 {cmp['p50_abs_prob_diff']:.2e} p99 "
                    f"{cmp['p99_abs_prob_diff']:.2e} max {cmp['max_abs_prob_diff']:.2e}"
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``clf-export``; returns the exit status."""
    missing = [m for m in ("torch", "onnx") if importlib.util.find_spec(m) is None]
    if missing:  # a runtime-only install
        print(
            f"clf-export: error: {' and '.join(missing)} not installed. Export needs the "
            "extra: pip install 'gpt-clf[export]'",
            file=sys.stderr,
        )
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.run_dir is None) == (args.state_dict is None):
        parser.error("pass exactly one of RUN_DIR or --state-dict FILE")
    if args.state_dict is None and (args.labels or args.model):
        parser.error("--labels and --model go with --state-dict; a run dir knows its own")
    if args.state_dict is not None and not args.labels:
        parser.error("--state-dict needs --labels (label names in logit order, e.g. ham,spam)")

    from clf_train.errors import TrainError

    from .errors import ExportError
    from .onnx_export import export_run, export_state_dict
    from .progress import PROGRESS_LOGGER

    # The stages (load, trace, parity, int8, fp16, evaluation, write) with their seconds.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("clf-export: %(message)s"))
    progress = logging.getLogger(PROGRESS_LOGGER)
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    try:
        options = _options(args).validate()
        if args.state_dict is not None:
            labels = [x.strip() for x in args.labels.split(",") if x.strip()]
            report = export_state_dict(
                args.state_dict, args.out, options, labels=labels, model=args.model
            )
        else:
            report = export_run(args.run_dir, args.out, options)
    except (ExportError, TrainError) as e:  # the two error roots: one line, exit 1
        print(f"clf-export: error: {e}", file=sys.stderr)
        return 1
    finally:
        progress.removeHandler(handler)
    print(_summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
