"""Threads benchmark of ``clf_runtime.Batcher``: N threads classifying 1,000 short texts between
them, with and without the batcher, against one sequential ``predict_proba`` call.

Each measurement is a fresh process (so peak memory belongs to that mode alone) that loads the
model, warms it up on 8 texts, then times one of:

- ``single``: one thread, one ``clf.predict_proba(texts)`` call (the reference);
- ``threads-direct-share``: N threads, each one ``clf.predict_proba(its share)`` at once;
- ``threads-direct-text``: N threads, each ``clf.predict_proba([text])`` text after text;
- ``threads-batcher-share`` / ``threads-batcher-text``: the same through one shared
  ``Batcher(clf)``.

Reported: wall seconds (median over ``--repeats`` interleaved runs) and peak RSS (``VmHWM``,
median). Targets: with the batcher, N threads are no slower than the single call and their
peak RSS is within 1.2x of it.

Usage: ``python benchmarks/bench_batcher.py --preset gpt2-tiny`` (the tiny shape: seconds) or
``--preset gpt2 --work-dir /tmp/bench/models`` (GPT-2 small, int8: ~3 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common
from bench_coldstart import ensure_export

MODES = (
    "single",
    "threads-direct-share",
    "threads-direct-text",
    "threads-batcher-share",
    "threads-batcher-text",
)

CHILD = r"""
import json, sys, threading, time
from clf_runtime import Batcher, Classifier
export, precision, threads, mode, workers, texts_file = sys.argv[1:7]
threads, workers = int(threads), int(workers)
texts = json.load(open(texts_file, encoding="utf-8"))
clf = Classifier.load(export, providers="cpu", threads=threads, precision=precision)
clf.predict_proba(texts[:8])  # tokenizer tables and the first run are not what is measured
batcher = Batcher(clf) if "batcher" in mode else None
call = batcher.predict_proba if batcher else clf.predict_proba
share = -(-len(texts) // workers)
parts = [texts[w * share:(w + 1) * share] for w in range(workers)]

def run(part):
    if mode.endswith("-text"):
        for t in part:
            call([t])
    else:
        call(part)

t0 = time.perf_counter()
if mode == "single":
    clf.predict_proba(texts)
else:
    pool = [threading.Thread(target=run, args=(p,)) for p in parts]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
wall = time.perf_counter() - t0
stats = batcher.stats() if batcher else None
if batcher:
    batcher.close()
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print("RESULT " + json.dumps({
    "wall_s": wall, "vmhwm_mb": hwm / 1024,
    "model_calls": stats.model_calls if stats else None,
    "max_requests_per_call": stats.max_requests_per_call if stats else None,
}))
"""


def run_child(
    export: Path, precision: str, threads: int, mode: str, workers: int, texts_file: Path
) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(export),
            precision,
            str(threads),
            mode,
            str(workers),
            str(texts_file),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(common.REPO_ROOT)},
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} child failed:\n{out.stdout[-2000:]}{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def short_texts(n: int) -> list[str]:
    """``n`` SMS messages (train, then val and test of the balanced split): short, real texts."""
    os.environ.setdefault("CLF_DATA_DIR", str(common.SMS_DIR))
    from clf_train.splits import prepare_data

    data = prepare_data("sms-spam", balance=True, seed=123)
    texts = [*data.train.texts, *data.val.texts, *data.test.texts]
    if len(texts) < n:
        texts = texts * (n // len(texts) + 1)
    return texts[:n]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="gpt2-tiny", choices=["gpt2", "gpt2-mini", "gpt2-tiny"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model-dir", type=Path, default=None, help="use this export instead")
    ap.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of the model")
    ap.add_argument("--workers", type=int, default=8, help="caller threads")
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs per mode")
    ap.add_argument("--work-dir", type=Path, default=None, help="build/reuse the export here")
    ap.add_argument("--out", type=Path, default=common.RESULTS_DIR)
    ap.add_argument("--name", default=None, help="result file stem (default: batcher_PRESET)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_batcher_") as tmp:
        if args.model_dir is not None:
            export = args.model_dir
        else:
            export = ensure_export(args.work_dir or Path(tmp) / "models", args.preset, args.seed)
        texts = short_texts(args.texts)
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(texts), encoding="utf-8")
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
        for rep in range(args.repeats):
            for mode in MODES if rep % 2 == 0 else tuple(reversed(MODES)):
                r = run_child(export, args.precision, args.threads, mode, args.workers, texts_file)
                runs[mode].append(r)
                print(f"  run {rep + 1} {mode:<22} {r['wall_s']:.3f} s  {r['vmhwm_mb']:.0f} MB")
    summary = {}
    for mode, rs in runs.items():
        summary[mode] = {
            "mode": mode,
            "median_wall_s": round(statistics.median(r["wall_s"] for r in rs), 3),
            "median_peak_rss_mb": round(statistics.median(r["vmhwm_mb"] for r in rs), 1),
            "model_calls": rs[0]["model_calls"],
            "max_requests_per_call": max((r["max_requests_per_call"] or 0) for r in rs) or None,
        }
    single = summary["single"]
    for row in summary.values():
        row["wall_vs_single"] = common.ratio(row["median_wall_s"], single["median_wall_s"])
        row["rss_vs_single"] = common.ratio(row["median_peak_rss_mb"], single["median_peak_rss_mb"])
    goals = {}
    for mode in ("threads-batcher-share", "threads-batcher-text"):
        s = summary[mode]
        goals[f"{mode}: wall <= single call"] = {
            "value": s["wall_vs_single"],
            "threshold": 1.0,
            "met": s["wall_vs_single"] <= 1.0,
        }
        goals[f"{mode}: peak RSS <= 1.2x single call"] = {
            "value": s["rss_vs_single"],
            "threshold": 1.2,
            "met": s["rss_vs_single"] <= 1.2,
        }
    common.print_table(
        list(summary.values()),
        [
            "mode",
            "median_wall_s",
            "wall_vs_single",
            "median_peak_rss_mb",
            "rss_vs_single",
            "model_calls",
            "max_requests_per_call",
        ],
        title=f"{args.workers} threads, {len(texts)} texts, {args.preset} {args.precision}, "
        f"{args.threads} intra-op threads",
    )
    common.print_targets(goals)
    payload = {
        "benchmark": "batcher",
        "environment": common.environment(
            threads=args.threads,
            workers=args.workers,
            precision=args.precision,
            preset=args.preset,
            seed=args.seed,
            texts=len(texts),
            repeats=args.repeats,
        ),
        "summary": summary,
        "targets": goals,
        "runs": runs,
    }
    path = common.write_result(args.name or f"batcher_{args.preset}", payload, out_dir=args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
