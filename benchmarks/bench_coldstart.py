"""Cold-start benchmark: a fresh Python process that imports the runtime, loads a model and
classifies one text, for fp32 and int8 (GPT-2 small by default).

Each run is a new ``python -c`` child that reports its own phase times (import, load, first
prediction) and its peak memory (``VmHWM`` from ``/proc/self/status``: the quoted number);
the parent also times the whole process (interpreter start-up included) and records the
child's ``ru_maxrss`` from ``os.wait4`` (informational only: Linux carries ``ru_maxrss``
across ``execve``, so it can include the parent's size). The OS file cache is warm after the
first run ("cold" means a new process, not a cold disk); every run is recorded. Targets: int8
cold start <= 2 s, peak RSS <= 450 MB.

Usage: ``python benchmarks/bench_coldstart.py [--model-dir EXPORT_DIR] [--runs 5]``. Without
``--model-dir`` a GPT-2 small export with seeded random weights is built first (as in
``bench_inference.py``; ``--work-dir`` shares its models).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from clf_runtime import Classifier
t1 = time.perf_counter()
clf = Classifier.load(sys.argv[1], precision=sys.argv[2], threads=int(sys.argv[3]),
                      providers=["CPUExecutionProvider"])
t2 = time.perf_counter()
pred = clf.predict(["hello"])
t3 = time.perf_counter()
hwm = None
with open("/proc/self/status") as fh:
    for line in fh:
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
print("RESULT " + json.dumps({
    "import_s": t1 - t0, "load_s": t2 - t1, "predict_s": t3 - t2, "in_process_s": t3 - t0,
    "vmhwm_kb": hwm, "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "torch_imported": "torch" in sys.modules, "label": pred[0].label,
    "model_file": clf.model_path.name,
}))
"""


def run_child(model_dir: Path, precision: str, threads: int) -> dict[str, Any]:
    """One fresh process: its self-reported numbers, plus the parent's wall time and the
    child's own ``ru_maxrss`` (reaped with ``os.wait4``, so earlier children do not mask it)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(model_dir), precision, str(threads)],
            stdout=out,
            stderr=err,
            text=True,
            cwd=common.REPO_ROOT,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: tell Popen
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(
            f"cold-start child ({precision}) failed with {proc.returncode}:\n{stderr[-3000:]}"
        )
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(
            f"cold-start child printed no RESULT line:\n{stdout[-2000:]}{stderr[-2000:]}"
        )
    res = json.loads(lines[-1][len("RESULT ") :])
    res["process_wall_s"] = wall
    res["wait4_maxrss_kb"] = usage.ru_maxrss
    return res


def ensure_export(work: Path, preset: str, seed: int) -> Path:
    """An export directory with model.onnx + model.int8.onnx (built once, as bench_inference)."""
    import engines

    export = work / "export"
    if (export / "model.onnx").is_file() and (export / "model.int8.onnx").is_file():
        print(f"reusing {export}")
        return export
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "hf" / "model.safetensors").is_file():
        engines.build_hf_dir(work / "hf", preset, seed)
    engines.build_ours(work / "hf", work / "run", export, seed)
    return export


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of each phase, peak memory in MB (max over runs and median)."""
    med = {
        k: round(statistics.median(r[k] for r in runs), 3)
        for k in ("import_s", "load_s", "predict_s", "in_process_s", "process_wall_s")
    }
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across execve, so a child started by a big
    # parent (vfork/fork, then exec) inherits the parent's size as its "peak"; VmHWM belongs
    # to the address space that exec creates, i.e. to the child program alone.
    peak_kb = [r["vmhwm_kb"] for r in runs]
    return {
        "runs": len(runs),
        **{f"median_{k}": v for k, v in med.items()},
        "median_peak_rss_mb": round(statistics.median(peak_kb) / 1024, 1),
        "max_peak_rss_mb": round(max(peak_kb) / 1024, 1),
        "torch_imported": any(r["torch_imported"] for r in runs),
        "model_file": runs[0]["model_file"],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = common.arg_parser(
        __doc__, "coldstart", preset_help="architecture of the built export (not with --model-dir)"
    )
    ap.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="export directory to load (default: build a GPT-2 small export)",
    )
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per precision")
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args(argv)


def measure(args: argparse.Namespace, work: Path) -> tuple[str, dict[str, Any]]:
    """``--runs`` fresh processes per precision; (default result name, payload)."""
    model_dir = args.model_dir or ensure_export(work, args.preset, args.seed)
    sizes = {p.name: round(p.stat().st_size / 2**20, 1) for p in sorted(model_dir.glob("*.onnx"))}
    results: dict[str, Any] = {}
    rows = []
    for precision in ("fp32", "int8"):
        runs = []
        for i in range(args.runs):
            r = run_child(model_dir, precision, args.threads)
            print(
                f"  {precision} run {i + 1}: in-process {r['in_process_s']:.3f} s, "
                f"process {r['process_wall_s']:.3f} s, peak RSS (VmHWM) "
                f"{r['vmhwm_kb'] / 1024:.0f} MB"
            )
            runs.append(r)
        summary = summarize(runs)
        results[precision] = {"summary": summary, "runs": runs}
        rows.append({"precision": precision, **summary})
    common.print_table(
        rows,
        [
            "precision",
            "median_import_s",
            "median_load_s",
            "median_predict_s",
            "median_in_process_s",
            "median_process_wall_s",
            "median_peak_rss_mb",
            "torch_imported",
        ],
        title="cold start (fresh process: import + load + predict(['hello']))",
    )
    int8 = results["int8"]["summary"]
    targets = {
        "int8 cold start (import+load+predict, median) <= 2 s": {
            "value": int8["median_in_process_s"],
            "threshold": 2.0,
            "met": int8["median_in_process_s"] <= 2.0,
        },
        "int8 peak RSS (median) <= 450 MB": {
            "value": int8["median_peak_rss_mb"],
            "threshold": 450,
            "met": int8["median_peak_rss_mb"] <= 450,
        },
    }
    common.print_targets(targets)
    payload = {
        "benchmark": "coldstart",
        "environment": common.environment(
            threads=args.threads, runs=args.runs, providers=["CPUExecutionProvider"]
        ),
        "model_dir": str(model_dir),
        "model_files_mb": sizes,
        "results": results,
        "targets": targets,
    }
    return "coldstart", payload


def main(argv: Sequence[str] | None = None) -> int:
    return common.run_program(parse_args(argv), measure, prefix="bench_coldstart_")


if __name__ == "__main__":
    sys.exit(main())
