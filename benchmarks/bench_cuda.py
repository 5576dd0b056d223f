"""CUDA benchmark (run on a machine with an NVIDIA GPU): clf_runtime on CUDA, fp16 and fp32
(IO binding), vs torch eager (Hugging Face ``GPT2ForSequenceClassification``, fp32 and fp16)
on CUDA, at batch 1 / 32 / 128 on the SMS test texts, with the same seeded GPT-2 small weights
as ``bench_inference.py``.

It fails fast, before building anything, when onnxruntime cannot really run on CUDA (no GPU,
no driver, CUDA/cuDNN libraries missing, or the CPU-only onnxruntime wheel): exit code 2 with
the reason. When torch has no CUDA (e.g. the CPU torch build), the torch rows are skipped and
the reason is recorded. ``--allow-cpu`` runs the same code on the CPU (fp32 only) to check the
script itself on a machine without a GPU; those numbers mean nothing for CUDA.

Usage on the GPU machine (project venv set up with ``bash setup.sh`` and
``bash benchmarks/setup.sh``): ``python benchmarks/bench_cuda.py`` (~3-5 min: building the
models on the CPU takes most of it). Results: ``benchmarks/results/cuda.json``.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common
import numpy as np

from clf_runtime.session import CUDA, cuda_is_usable


def check_cuda(allow_cpu: bool) -> dict[str, Any]:
    """Say what can run on CUDA; raise SystemExit(2) early when onnxruntime cannot."""
    import onnxruntime as ort

    info: dict[str, Any] = {"onnxruntime_providers": ort.get_available_providers()}
    info["ort_cuda"] = cuda_is_usable()
    if not info["ort_cuda"] and not allow_cpu:
        why = (
            "this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu, never "
            "the CPU wheel beside it)"
            if CUDA not in info["onnxruntime_providers"]
            else "CUDAExecutionProvider is installed but a session falls back to CPU: no GPU or "
            "driver (`nvidia-smi`), or the CUDA / cuDNN libraries this onnxruntime-gpu "
            "needs are missing (onnxruntime's log above names them)"
        )
        print(
            f"error: onnxruntime cannot run on CUDA here: {why}. Run this benchmark on a GPU "
            "machine, or pass --allow-cpu to check the script on the CPU.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    try:
        import torch

        info["torch_cuda"] = bool(torch.cuda.is_available())
        info["torch_cuda_reason"] = (
            None
            if info["torch_cuda"]
            else (f"torch {torch.__version__} reports no CUDA device (CPU build, or no driver)")
        )
        if info["torch_cuda"]:
            info["gpu"] = torch.cuda.get_device_name(0)
            info["torch_cuda_version"] = torch.version.cuda
    except ImportError as e:
        info["torch_cuda"], info["torch_cuda_reason"] = False, f"torch not importable: {e}"
    return info


def build_models(work: Path, preset: str, seed: int, fp16: bool) -> dict[str, Any]:
    """HF dir (seeded weights) and our export (fp32, + fp16 when asked), reused when present."""
    import engines

    export = work / "export"
    wanted = ["model.onnx"] + (["model.fp16.onnx"] if fp16 else [])
    if all((export / f).is_file() for f in wanted) and (work / "hf").is_dir():
        print(f"reusing models in {work}")
        return {"reused": True}
    shutil.rmtree(work / "hf", ignore_errors=True)
    shutil.rmtree(export, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    engines.build_hf_dir(work / "hf", preset, seed)
    info = engines.build_ours(work / "hf", work / "run", export, seed, quantize=False, fp16=fp16)
    info["build_seconds"] = round(time.perf_counter() - t0, 1)
    return info


def torch_cuda_engine(hf_dir: Path, dtype_name: str) -> Any:
    """HF GPT2ForSequenceClassification on CUDA in ``dtype_name`` (fp32/fp16), synchronized."""
    import torch
    from engines import MAX_LENGTH, Engine
    from transformers import AutoTokenizer, GPT2ForSequenceClassification

    dtype = torch.float16 if dtype_name == "fp16" else torch.float32
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    tok.pad_token = tok.eos_token
    model = GPT2ForSequenceClassification.from_pretrained(str(hf_dir), dtype=dtype)
    model = model.to("cuda").eval()
    model.config.pad_token_id = tok.pad_token_id

    def run(texts: Sequence[str]) -> np.ndarray:
        enc = tok(
            list(texts), padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        ).to("cuda")
        with torch.no_grad():
            probs = torch.softmax(model(**enc).logits.float(), dim=-1).cpu().numpy()
        return probs  # .cpu() synchronizes: the time includes the GPU work

    def fixed(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.from_numpy(ids).to("cuda")
            return (
                model(input_ids=t, attention_mask=torch.ones_like(t)).logits.float().cpu().numpy()
            )

    return Engine(
        f"torch-cuda-{dtype_name}",
        dtype_name,
        run,
        fixed,
        {"engine": "transformers GPT2ForSequenceClassification (eager, CUDA)", "dtype": dtype_name},
    )


def ours_engine(export_dir: Path, precision: str, providers: str) -> Any:
    """clf_runtime.Classifier on ``providers`` (cuda: IO binding inside run_logits)."""
    from engines import MAX_LENGTH, classifier_engine

    from clf_runtime import Classifier

    clf = Classifier.load(export_dir, providers=providers, precision=precision)

    def run(texts: Sequence[str]) -> np.ndarray:
        # One engine call = one batch of exactly the texts given (no token-budget split).
        n = max(1, len(texts))
        return clf.predict_proba(list(texts), batch_size=n, max_batch_tokens=n * MAX_LENGTH)

    dev = "cuda" if providers == "cuda" else "cpu"
    return classifier_engine(clf, f"ours-{dev}-{precision}", run, io_binding=clf.provider == CUDA)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = common.arg_parser(__doc__, "cuda / cuda_cpu_check")
    ap.add_argument(
        "--allow-cpu",
        action="store_true",
        help="run on the CPU (fp32 only) to check the script without a GPU",
    )
    ap.add_argument(
        "--batch-sizes", type=common.int_list, default=[1, 32, 128], help="comma separated"
    )
    ap.add_argument("--batch1-texts", type=int, default=100, help="texts in the batch-1 mode")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes per batch size")
    ap.add_argument("--warmup", type=int, default=3, help="untimed batches per engine")
    ap.add_argument("--no-sweep", action="store_true", help="skip the fixed-shape sweep")
    return ap.parse_args(argv)


def measure(
    args: argparse.Namespace, work: Path, *, cuda: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Every engine at every batch size (+ the sweep); (default result name, payload)."""
    on_cuda = bool(cuda["ort_cuda"])
    providers = "cuda" if on_cuda else "cpu"
    precisions = ["fp16", "fp32"] if on_cuda else ["fp32"]
    import bench_inference
    from engines import load_engines

    build = build_models(work, args.preset, args.seed, fp16=on_cuda)
    texts, _, _ = common.sms_test_split()
    competitors = [ours_engine(work / "export", p, providers) for p in precisions]
    torch_rows_skipped = None
    if on_cuda and cuda.get("torch_cuda"):
        competitors += [torch_cuda_engine(work / "hf", p) for p in ("fp32", "fp16")]
    elif not on_cuda:
        competitors += load_engines(work, os.cpu_count() or 1, ["torch-fp32"])
    else:
        torch_rows_skipped = cuda.get("torch_cuda_reason")
        print(f"torch rows skipped: {torch_rows_skipped}")

    modes: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    for bs in args.batch_sizes:
        subset = texts[: args.batch1_texts] if bs == 1 else texts
        print(f"batch {bs}: {len(subset)} texts ...")
        rows, outs = bench_inference.measure_mode(
            competitors, subset, bs, warmup=args.warmup, repeats=args.repeats
        )
        modes[f"batch{bs}"] = rows
        if bs == max(args.batch_sizes):
            outputs = outs
        bench_inference.print_mode(rows, title=f"batch {bs} ({providers})")
    ref = (
        "torch-cuda-fp32"
        if "torch-cuda-fp32" in outputs
        else ("torch-fp32" if "torch-fp32" in outputs else f"ours-{providers}-fp32")
    )
    agree = bench_inference.agreement(outputs, ref)
    bench_inference.print_agreement(agree, title=f"agreement with {ref}")
    ratios = {}
    for mode, rows in modes.items():
        for ours in (e.name for e in competitors if e.name.startswith("ours-")):
            for other in (e.name for e in competitors if e.name.startswith("torch-")):
                ratios[f"{mode} {ours} / {other}"] = common.ratio(
                    rows[ours]["texts_per_s"], rows[other]["texts_per_s"]
                )
    common.print_values(ratios, "ratio (texts/s)", title="ratios (within this run)")
    sweep_rows = (
        []
        if args.no_sweep
        else bench_inference.sweep(
            competitors,
            (1, 32, 128),
            (16, 64, 128),
            warmup=2,
            repeats=args.repeats,
            seed=args.seed,
        )
    )
    payload = {
        "benchmark": "cuda",
        "on_cuda": on_cuda,
        "environment": common.environment(
            providers=providers,
            preset=args.preset,
            seed=args.seed,
            repeats=args.repeats,
            warmup_batches=args.warmup,
            cuda=cuda,
            nvidia_smi=common.gpu_name(),
            engines={e.name: e.info for e in competitors},
        ),
        "build": build,
        "texts": {
            "source": common.SMS_TEST_SOURCE,
            "n": len(texts),
            "n_batch1": min(len(texts), args.batch1_texts),
        },
        "modes": modes,
        "agreement": agree,
        "ratios_texts_per_s": ratios,
        "torch_rows_skipped": torch_rows_skipped,
        "sweep": sweep_rows,
    }
    return ("cuda" if on_cuda else "cuda_cpu_check"), payload


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cuda = check_cuda(args.allow_cpu)  # before any heavy work; exits with 2 when CUDA is unusable
    return common.run_program(args, functools.partial(measure, cuda=cuda), prefix="bench_cuda_")


if __name__ == "__main__":
    sys.exit(main())
