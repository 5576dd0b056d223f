"""What each int8 scheme costs and gives: speed and agreement with fp32 of the same model.

``clf-export --quantize`` chooses the int8 scheme by held-out quality (the fastest whose argmax
agreement with fp32 is no lower, and max |prob diff| no higher, than per-row's). This program
shows the speed side of that choice: it exports the run of ``bench_inference.py``'s work
directory (GPT-2 small, seeded random weights, the balanced SMS split) once per scheme with
``--int8-scheme`` forced, then times ``Classifier.predict_proba`` of each int8 file on the 300
SMS test texts in one call (texts/s) and one text per call (p50 / p99 ms), the schemes
interleaved pass by pass, and reports each file's held-out agreement with fp32 from its
export report.

    python benchmarks/bench_int8_schemes.py --work-dir /tmp/bench/models   # ~4 min

Output: ``results/int8_schemes.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common

SCHEMES = ("rowwise", "static-ln", "static")
"""Slowest to fastest (per-row scales computed every call -> every scale fixed at export)."""


def export_schemes(work: Path) -> dict[str, Path]:
    """``work/schemes/<scheme>``: the bench run exported with each scheme (reused if present)."""
    from clf_export import export_run

    run = work / "run"
    if not (run / "split" / "train.jsonl").is_file():
        raise SystemExit(
            f"{run} is missing: build the models first with "
            f"`benchmarks/bench_inference.py --work-dir {work}`"
        )
    out = {}
    for scheme in SCHEMES:
        target = work / "schemes" / scheme
        if not (target / "report.json").is_file():
            print(f"exporting with --int8-scheme {scheme} ...", flush=True)
            export_run(run, target, quantize=True, int8_scheme=scheme, overwrite=True)
        out[scheme] = target
    return out


def measure(args: argparse.Namespace, work: Path) -> tuple[str, dict[str, Any]]:
    """Export with each scheme, then time them side by side."""
    from clf_runtime import Classifier

    dirs = export_schemes(work)
    texts, _, _ = common.sms_test_split()
    clfs = {
        s: Classifier.load(d, providers="cpu", threads=args.threads, precision="int8")
        for s, d in dirs.items()
    }
    single_texts = texts[: args.single_texts]
    for clf in clfs.values():  # warm-up: sessions, arenas, caches
        clf.predict_proba(texts[:64])
    whole: dict[str, list[float]] = {s: [] for s in clfs}
    single: dict[str, list[float]] = {s: [] for s in clfs}
    for rep in range(args.repeats):
        order = list(clfs) if rep % 2 == 0 else list(reversed(clfs))
        for s in order:
            dt, _ = common.timed(lambda s=s: clfs[s].predict_proba(texts))
            whole[s].append(dt)
        for s in order:
            clfs[s].predict_proba(single_texts[:2])
            single[s] += [
                common.timed(lambda s=s, t=t: clfs[s].predict_proba([t]))[0] for t in single_texts
            ]
    rows = {}
    for s in clfs:
        report = common.load_json(dirs[s] / "report.json")
        evaluation = report["evaluation"]["int8_vs_fp32"]
        lat = common.percentiles(single[s])
        rows[s] = {
            "scheme": s,
            "texts_per_s": round(len(texts) / statistics.median(whole[s]), 2),
            "single_p50_ms": lat["p50_ms"],
            "single_p99_ms": lat["p99_ms"],
            "argmax_agreement_vs_fp32": evaluation["argmax_agreement"],
            "max_abs_prob_diff_vs_fp32": round(evaluation["max_abs_prob_diff"], 6),
        }
    base = rows["rowwise"]
    for r in rows.values():
        r["texts_per_s_vs_rowwise"] = common.ratio(r["texts_per_s"], base["texts_per_s"])
        r["single_p50_vs_rowwise"] = common.ratio(r["single_p50_ms"], base["single_p50_ms"])
    cols = [
        "scheme",
        "texts_per_s",
        "texts_per_s_vs_rowwise",
        "single_p50_ms",
        "single_p99_ms",
        "single_p50_vs_rowwise",
        "argmax_agreement_vs_fp32",
        "max_abs_prob_diff_vs_fp32",
    ]
    common.print_table(list(rows.values()), cols, title="int8 schemes, GPT-2 small, 300 SMS")
    payload = {
        "benchmark": "int8_schemes",
        "environment": common.environment(
            threads=args.threads, repeats=args.repeats, single_texts=args.single_texts
        ),
        "texts": {"source": common.SMS_TEST_SOURCE, "n": len(texts)},
        "model": "bench_inference.py's GPT-2 small run (seeded random weights)",
        "schemes": rows,
    }
    return "int8_schemes", payload


def main(argv: Sequence[str] | None = None) -> int:
    ap = common.arg_parser(__doc__, "int8_schemes")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads")
    ap.add_argument("--repeats", type=int, default=5, help="passes over the 300 texts")
    ap.add_argument("--single-texts", type=int, default=60, help="texts timed one per call")
    args = ap.parse_args(argv)
    if args.work_dir is None:
        ap.error("--work-dir is required: the directory bench_inference.py built its models in")
    return common.run_program(args, measure, prefix="bench_int8_schemes_")


if __name__ == "__main__":
    sys.exit(main())
