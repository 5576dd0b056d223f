"""Where the time of an int8 (or fp32) call goes: onnxruntime's profiler, per operator type.

Runs each model of ``bench_inference.py``'s work directory (ours ``model.int8.onnx`` /
``model.onnx``, optimum's ``model_quantized.onnx`` / ``model.onnx``) on the same batches: the
300 SMS test texts sorted by length and cut into consecutive batches of 32 (what an expert
feeds optimum, and close to what the runtime plans), and on single texts (the first
``--single-texts``, one per call). For every model it reports the graph after onnxruntime's
optimizations (nodes per op type), the profiled kernel time per op type, and the share spent
outside the matrix products (integer GEMMs and fp32 MatMul/Gemm/attention) -- the part that
quantization schemes, fusions and fewer nodes can shrink.

onnxruntime's profile names operators, not the MLAS kernels under them: on x86 the integer
GEMMs (``MatMulIntegerToFloat``, ``DynamicQuantizeMatMul``, ``MatMulInteger``) dispatch to
MLAS's u8 x s8 kernel for the best instruction set the CPU reports (AVX-512 VNNI, AVX-VNNI,
AMX, else AVX2); the JSON records the CPU flags that decide it.

    python benchmarks/profile_ops.py --work-dir /tmp/bench/models
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common
import numpy as np

PAD_ID = 50256
MATRIX_OPS = {
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "MatMulInteger",
    "QGemm",
    "MatMul",
    "Gemm",
    "FusedMatMul",
    "MultiHeadAttention",
    "Attention",
}
"""Matrix products: integer GEMMs, fp32 GEMMs and fused attention. Everything else is overhead
that a scheme or a fusion can remove (quantization, reductions, casts, reshapes, norms)."""


def _models(work: Path) -> dict[str, Path]:
    found = {
        "ours-int8": work / "export" / "model.int8.onnx",
        "optimum-int8": work / "optimum_int8" / "model_quantized.onnx",
        "ours-fp32": work / "export" / "model.onnx",
        "optimum-fp32": work / "optimum_fp32" / "model.onnx",
    }
    missing = [str(p) for p in found.values() if not p.is_file()]
    if missing:
        raise SystemExit(
            f"missing {', '.join(missing)}: build the models first with "
            f"`benchmarks/bench_inference.py --work-dir {work}`"
        )
    return found


def _feeds(session: Any, ids: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
    """Ours: ``input_ids`` + ``lengths``; optimum: ``input_ids`` + ``attention_mask`` (+ position
    ids)."""
    names = {i.name for i in session.get_inputs()}
    if "lengths" in names:
        return {"input_ids": ids, "lengths": lengths}
    mask = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)  # (B, T)
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "position_ids" in names:
        feeds["position_ids"] = np.broadcast_to(np.arange(ids.shape[1]), ids.shape).copy()
    return feeds


def _batches(tokens: Sequence[Sequence[int]], size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Length-sorted consecutive batches of ``size``, right-padded by the runtime's
    :func:`~clf_runtime.batching.pad_batch`: (ids (B, T), lengths (B,))."""
    from clf_runtime.batching import pad_batch

    order = np.argsort([len(t) for t in tokens], kind="stable")
    batches = (pad_batch(tokens, order[i : i + size], PAD_ID) for i in range(0, len(order), size))
    return [(b.input_ids, b.lengths) for b in batches]


def profile_model(
    path: Path, work: list[tuple[np.ndarray, np.ndarray]], *, threads: int, warmup: int
) -> dict[str, Any]:
    """Profile ``path`` on ``work``: graph after optimization, kernel time per op type."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="profile_ops_") as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.log_severity_level = 3  # the saved graph is only read here, never shipped
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        optimized = onnx.load(opts.optimized_model_filepath, load_external_data=False)
        graph_ops = collections.Counter(n.op_type for n in optimized.graph.node)
        for ids, lengths in work[:warmup]:
            session.run(None, _feeds(session, ids, lengths))
        for ids, lengths in work:
            session.run(None, _feeds(session, ids, lengths))
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    timed_from = runs[warmup]["ts"] if len(runs) > warmup else 0
    per_op: collections.Counter[str] = collections.Counter()
    for e in events:
        if (
            e.get("cat") == "Node"
            and e.get("name", "").endswith("_kernel_time")
            and e["ts"] >= timed_from
        ):
            per_op[e["args"]["op_name"]] += e["dur"]
    run_us = sum(e["dur"] for e in runs[warmup:])
    kernel_us = sum(per_op.values())
    matrix_us = sum(v for k, v in per_op.items() if k in MATRIX_OPS)
    return {
        "calls": len(work),
        "run_ms_total": round(run_us / 1e3, 2),
        "kernel_ms_total": round(kernel_us / 1e3, 2),
        "matrix_share_of_kernel_time": round(matrix_us / kernel_us, 4) if kernel_us else None,
        "outside_matrix_share_of_kernel_time": (
            round(1 - matrix_us / kernel_us, 4) if kernel_us else None
        ),
        "kernel_ms_per_op_type": {k: round(v / 1e3, 2) for k, v in per_op.most_common()},
        "graph_nodes": sum(graph_ops.values()),
        "graph_nodes_per_op_type": dict(graph_ops.most_common()),
    }


def measure(args: argparse.Namespace, work: Path) -> tuple[str, dict[str, Any]]:
    """Profile every model on the batch-32 and the single-text workloads."""
    from transformers import AutoTokenizer

    models = _models(work)
    texts, _, _ = common.sms_test_split()
    tokens = AutoTokenizer.from_pretrained(str(work / "hf"))(texts)["input_ids"]
    workloads = {
        "batch32_sorted": _batches(tokens, 32),
        "single_text": _batches(tokens[: args.single_texts], 1),
    }
    results: dict[str, dict[str, Any]] = {}
    rows = []
    for workload, batches in workloads.items():
        for name, path in models.items():
            print(f"{workload}: {name} ...", flush=True)
            r = profile_model(path, batches, threads=args.threads, warmup=args.warmup)
            results.setdefault(workload, {})[name] = r
            top = list(r["kernel_ms_per_op_type"].items())[:4]
            rows.append(
                {
                    "workload": workload,
                    "model": name,
                    "run_ms": r["run_ms_total"],
                    "outside_matrix": r["outside_matrix_share_of_kernel_time"],
                    "nodes": r["graph_nodes"],
                    "top ops (ms)": ", ".join(f"{k} {v:g}" for k, v in top),
                }
            )
    common.print_table(
        rows,
        ["workload", "model", "run_ms", "outside_matrix", "nodes", "top ops (ms)"],
        title="profiled kernel time",
    )
    payload = {
        "benchmark": "profile_ops",
        "environment": common.environment(
            threads=args.threads,
            warmup_calls=args.warmup,
            models={k: str(v) for k, v in models.items()},
        ),
        "texts": {"source": common.SMS_TEST_SOURCE, "n": len(texts), "single": args.single_texts},
        "matrix_ops": sorted(MATRIX_OPS),
        "int8_kernel_note": (
            "the profile names operators; MLAS picks the u8 x s8 kernel of the integer GEMMs "
            "from the CPU flags in environment.cpu.flags (AMX > AVX-512 VNNI > AVX-VNNI > AVX2)"
        ),
        "workloads": results,
    }
    return "profile_ops", payload


def main(argv: Sequence[str] | None = None) -> int:
    ap = common.arg_parser(__doc__, "profile_ops")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls per model and workload")
    ap.add_argument("--single-texts", type=int, default=100, help="texts of the single-text run")
    args = ap.parse_args(argv)
    if args.work_dir is None:
        ap.error("--work-dir is required: the directory bench_inference.py built its models in")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return common.run_program(args, measure, prefix="profile_ops_")


if __name__ == "__main__":
    sys.exit(main())
