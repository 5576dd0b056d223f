"""Soak test of clf_runtime: many threads hammer one Classifier; results and memory must hold.

A program, not a test. N threads each make M ``predict_proba`` calls on one shared
:class:`clf_runtime.Classifier` with a mix of texts (short, long, empty, unicode, lone
surrogates, ``<|endoftext|>``, over-long). Every result is compared with a sequential
reference computed before the threads start (same call, same batch size: results must be
bit-identical). Reports errors, mismatches, p50/p99 call latency and the process RSS
(VmRSS from /proc/self/status) at start, middle and end, writes JSON, and exits non-zero
on any error, any mismatch, or RSS growth from middle to end above a threshold (the first
half absorbs allocator and onnxruntime arena warm-up).

    python benchmarks/soak_runtime.py EXPORT_DIR --threads 8 --calls 200
    python benchmarks/soak_runtime.py EXPORT_DIR --texts 100000 --calls 0   # one 100k call
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from clf_runtime import Classifier, __version__
from clf_runtime.atomic import atomic_write_json

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "soak.json"
_WORDS = [
    "free",
    "prize",
    "call",
    "now",
    "ok",
    "see",
    "you",
    "later",
    "meeting",
    "日本",
    "café",
    "£1000",
    "WINNER!!",
    "lol",
    "😀",
]


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found in /proc/self/status")


def make_requests(n: int, seed: int) -> list[list[str]]:
    """``n`` request payloads of 1-16 texts each, mixing awkward and ordinary texts."""
    rng = random.Random(seed)
    special = ["", " ", "\n\t", "<|endoftext|>", "a\ud800b", "x\x00y", "ok", "z" * 5000]
    requests = []
    for _ in range(n):
        texts = []
        for _ in range(rng.randint(1, 16)):
            if rng.random() < 0.2:
                texts.append(rng.choice(special))
            else:
                texts.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 120))))
        requests.append(texts)
    return requests


def soak(
    clf: Classifier, *, threads: int, calls: int, batch_size: int, distinct: int, seed: int
) -> dict[str, Any]:
    """Run the soak; return the measurements (see the module docstring)."""
    requests = make_requests(distinct, seed)
    reference = [clf.predict_proba(r, batch_size=batch_size) for r in requests]
    rss = {"start": rss_mib()}
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    mismatches = [0] * threads
    done = [0]
    lock = threading.Lock()
    half = threads * calls // 2

    def worker(w: int) -> None:
        rng = random.Random(seed + 1 + w)
        for _ in range(calls):
            k = rng.randrange(distinct)
            start = time.perf_counter()
            try:
                got = clf.predict_proba(requests[k], batch_size=batch_size)
            except Exception as e:  # counted and reported: the soak must see every failure
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            latencies[w].append((time.perf_counter() - start) * 1000.0)
            if not np.array_equal(got, reference[k]):
                mismatches[w] += 1
            with lock:
                done[0] += 1
                if done[0] == half:
                    rss["middle"] = rss_mib()

    pool = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
    began = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - began
    rss["end"] = rss_mib()
    rss.setdefault("middle", rss["end"])
    ms = np.array([x for per in latencies for x in per]) if threads * calls else np.zeros(1)
    return {
        "calls": threads * calls,
        "errors": len(errors),
        "error_samples": errors[:5],
        "mismatches": int(sum(mismatches)),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "wall_s": wall,
        "rss_mib": rss,
    }


def big_call(clf: Classifier, n: int, batch_size: int) -> dict[str, Any]:
    """One ``predict_proba`` over a generator of ``n`` texts; RSS before/after."""
    before = rss_mib()
    start = time.perf_counter()
    texts = (f"message number {i} " + "word " * (i % 50) for i in range(n))
    probs = clf.predict_proba(texts, batch_size=batch_size)
    return {
        "n_texts": n,
        "shape": list(probs.shape),
        "seconds": time.perf_counter() - start,
        "rss_before_mib": before,
        "rss_after_mib": rss_mib(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="export directory or .onnx file")
    parser.add_argument("--threads", type=int, default=8, help="concurrent caller threads")
    parser.add_argument("--calls", type=int, default=100, help="calls per thread")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--distinct", type=int, default=50, help="distinct request payloads")
    parser.add_argument(
        "--ort-threads", type=int, default=None, help="onnxruntime intra-op threads"
    )
    parser.add_argument("--providers", default="auto")
    parser.add_argument("--precision", default=None)
    parser.add_argument("--texts", type=int, default=0, help="also run one call of N texts")
    parser.add_argument("--max-rss-growth-mib", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    clf = Classifier.load(
        args.model, providers=args.providers, threads=args.ort_threads, precision=args.precision
    )
    result: dict[str, Any] = {
        "engine": "clf_runtime",
        "gpt_clf_version": __version__,
        "model_file": str(clf.model_path),
        "provider": clf.provider,
        "precision": clf.metadata.precision,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    result["soak"] = soak(
        clf,
        threads=args.threads,
        calls=args.calls,
        batch_size=args.batch_size,
        distinct=args.distinct,
        seed=args.seed,
    )
    if args.texts:
        result["big_call"] = big_call(clf, args.texts, args.batch_size)
    s = result["soak"]
    growth = s["rss_mib"]["end"] - s["rss_mib"]["middle"]
    result["rss_growth_mib"] = growth
    failures = []
    if s["errors"]:
        failures.append(f"{s['errors']} errors, e.g. {s['error_samples'][:1]}")
    if s["mismatches"]:
        failures.append(f"{s['mismatches']} results differ from the sequential reference")
    if growth > args.max_rss_growth_mib:
        failures.append(f"RSS grew {growth:.1f} MiB (limit {args.max_rss_growth_mib})")
    result["ok"] = not failures
    result["failures"] = failures
    atomic_write_json(args.out, result)

    rss = s["rss_mib"]
    print(
        f"{s['calls']} calls on {args.threads} threads in {s['wall_s']:.1f} s: "
        f"errors {s['errors']}, mismatches {s['mismatches']}, "
        f"p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms, "
        f"RSS start/middle/end {rss['start']:.0f}/{rss['middle']:.0f}/{rss['end']:.0f} MiB"
    )
    if "big_call" in result:
        b = result["big_call"]
        print(
            f"one call of {b['n_texts']} texts: {b['seconds']:.1f} s, RSS "
            f"{b['rss_before_mib']:.0f} -> {b['rss_after_mib']:.0f} MiB"
        )
    print(f"wrote {args.out}")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
