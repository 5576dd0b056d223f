"""Serving benchmark: ``clf-serve`` with dynamic batching on vs off, vs offline predict_proba.

GPT-2 small (seeded random weights, built as in ``bench_inference.py``), int8, N intra-op
threads (default 2: the machine's cores), SMS texts (the balanced test split, 300 texts, real
length mix). Four servers run side by side, each in its own process on 127.0.0.1:

- ``on``: ``clf-serve`` as shipped (dynamic batching, ``--max-wait-ms`` 0 by default);
- ``on-spin``: the same with ``--spin`` (onnxruntime's threads busy-wait between calls, as
  its default does): what spinning buys on a machine the server has to itself;
- ``off-serial``: ``clf-serve --max-batch-requests 1``: one model call per text, one at a time;
- ``off-threadpool``: the server most people write first (``serve_naive.py``): Starlette on
  uvicorn, one ``Classifier.predict_proba`` per request in the thread pool, so concurrent
  requests run concurrent model calls.

For 1 / 8 / 64 closed-loop clients (one keep-alive connection each, one text per request) every
server gets a pass of ``--seconds`` (after 1 s of unmeasured warm-up); passes are interleaved
server by server, round by round (order reversed every other round), and the medians over
rounds are quoted. Each round also times, in this process, offline ``predict_proba`` on the 300
texts (one call, the runtime batches them) and single-text ``predict_proba([text])`` calls
(the "direct" latency), with clf-serve's session settings (``spin=False``). Every answer is
checked against offline ``predict_proba`` (max |prob diff|, label agreement). Outputs:
``results/serve.json`` and ``results/serve.png`` (latency and throughput vs load).

Targets: at 64 clients, ``on`` >= 3x the texts/s of batching off and >= 80 % of offline
throughput; at 1 client, ``on`` p50 within 1.5 ms of the direct call.

Usage: ``python benchmarks/bench_serve.py --work-dir /tmp/bench/models`` (~11 min on 2 cores;
``--quick`` for a smoke run). Loopback only; every pass is bounded and the program stops by
itself (servers are stopped with SIGTERM at the end, or on error).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common
import numpy as np
from bench_coldstart import ensure_export
from loadgen import PassResult, ServerProcess, batch_stats, load_pass

BENCH_DIR = Path(__file__).resolve().parent
MODES = ("on", "on-spin", "off-serial", "off-threadpool")


def server_commands(
    export: Path, threads: int, precision: str, max_wait_ms: float
) -> dict[str, list[str]]:
    """The command line of each server (all on port 0, same threads and model file)."""
    ours = [sys.executable, "-m", "clf_runtime.serve", str(export), "--port", "0"]
    common_flags = ["--threads", str(threads), "--precision", precision]
    return {
        "on": [*ours, *common_flags, "--max-wait-ms", str(max_wait_ms)],
        "on-spin": [*ours, *common_flags, "--max-wait-ms", str(max_wait_ms), "--spin"],
        "off-serial": [*ours, *common_flags, "--max-batch-requests", "1"],
        "off-threadpool": [
            sys.executable,
            str(BENCH_DIR / "serve_naive.py"),
            str(export),
            "--port",
            "0",
            *common_flags,
        ],
    }


def check_answers(res: PassResult, expected: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Max |prob diff| and top-label agreement of the answers with offline predict_proba."""
    if not res.answers:
        return {"checked": 0}
    idx = sorted(res.answers)
    got = np.array(
        [[{d["label"]: d["score"] for d in res.answers[i]}[k] for k in labels] for i in idx]
    )
    top = [res.answers[i][0]["label"] for i in idx]
    want = [labels[k] for k in expected[idx].argmax(1)]
    return {
        "checked": len(idx),
        "max_abs_prob_diff": float(np.abs(got - expected[idx]).max()),
        "label_agreement": float(np.mean([a == b for a, b in zip(top, want, strict=True)])),
    }


def offline_padding(clf: Any, texts: Sequence[str]) -> float:
    """Padded tokens per text of offline ``predict_proba(texts)`` (its own batch plan)."""
    from clf_runtime.batching import plan_batches
    from clf_runtime.tokenizer import encode_batch

    tokens = encode_batch(list(texts), max_length=clf.metadata.max_length)
    lengths = np.array([len(t) for t in tokens])
    calls = plan_batches(lengths, batch_size=32, max_batch_tokens=8192)
    return round(sum(len(c) * int(lengths[c].max()) for c in calls) / len(texts), 2)


def median_of(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def plot(payload: dict[str, Any], out_png: Path) -> Path:
    """Latency (p50, p99) and throughput against the number of clients, one line per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = payload["summary"]
    levels = payload["settings"]["clients"]
    colors = {
        "on": "tab:green",
        "on-spin": "tab:olive",
        "off-serial": "tab:blue",
        "off-threadpool": "tab:red",
    }
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode in MODES:
        rows = [summary[mode][str(c)] for c in levels]
        lat.plot(levels, [r["p50_ms"] for r in rows], "o-", color=colors[mode], label=f"{mode} p50")
        lat.plot(
            levels,
            [r["p99_ms"] for r in rows],
            "o--",
            color=colors[mode],
            alpha=0.6,
            label=f"{mode} p99",
        )
        thr.plot(levels, [r["texts_per_s"] for r in rows], "o-", color=colors[mode], label=mode)
    offline = payload["offline"]["median_texts_per_s"]
    thr.axhline(offline, color="black", linestyle=":", label="offline predict_proba")
    direct = payload["direct"]["median_p50_ms"]
    lat.axhline(direct, color="black", linestyle=":", label="direct call p50 (1 text)")
    for ax in (lat, thr):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent clients (one text per request)")
        ax.grid(True, which="both", alpha=0.3)
    lat.set_yscale("log")
    lat.set_ylabel("latency per request, ms")
    thr.set_ylabel("texts / s")
    lat.legend(fontsize=7, ncol=2)
    thr.legend(fontsize=8)
    env = payload["environment"]
    start = payload["settings"].get("load_average_at_start") or [float("nan")]
    end = env.get("load_average") or [float("nan")]
    fig.suptitle(
        f"clf-serve, GPT-2 small {payload['settings']['precision']}, "
        f"{payload['settings']['threads']} threads, {env['cpu']['model']} "
        f"(1-min load average {start[0]:.1f} at the start, {end[0]:.1f} at the end)",
        fontsize=10,
    )
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def targets(summary: dict[str, Any], offline: float, direct_p50: float) -> dict[str, Any]:
    top = str(max(int(c) for c in summary["on"]))
    on = summary["on"]
    checks = {
        f"{top} clients: on / off-serial texts/s >= 3": (
            common.ratio(on[top]["texts_per_s"], summary["off-serial"][top]["texts_per_s"]),
            3.0,
            ">=",
        ),
        f"{top} clients: on / off-threadpool texts/s >= 3": (
            common.ratio(on[top]["texts_per_s"], summary["off-threadpool"][top]["texts_per_s"]),
            3.0,
            ">=",
        ),
        f"{top} clients: on / offline predict_proba texts/s >= 0.8": (
            common.ratio(on[top]["texts_per_s"], offline),
            0.8,
            ">=",
        ),
    }
    if "1" in on:
        checks["1 client: on p50 - direct call p50 <= 1.5 ms"] = (
            round(on["1"]["p50_ms"] - direct_p50, 3),
            1.5,
            "<=",
        )
    return common.judge_targets(checks)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round of 2 s passes")
    ap.add_argument("--preset", default="gpt2", choices=["gpt2", "gpt2-mini", "gpt2-tiny"])
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    ap.add_argument("--model-dir", type=Path, default=None, help="serve this export instead")
    ap.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of every server")
    ap.add_argument("--clients", default="1,8,64", help="concurrency levels, comma separated")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per pass")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--max-wait-ms", type=float, default=0.0, help="the 'on' server's wait")
    ap.add_argument("--direct-texts", type=int, default=100, help="texts timed one by one")
    ap.add_argument("--work-dir", type=Path, default=None, help="build/reuse the export here")
    ap.add_argument("--out", type=Path, default=common.RESULTS_DIR, help="results directory")
    ap.add_argument("--name", default=None, help="result file stem (default: serve[_quick])")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.direct_texts = 1, 2.0, 20
    levels = [int(c) for c in args.clients.split(",")]
    load_at_start = list(os.getloadavg())  # other programs on the machine skew every timing
    tmp = None
    servers: dict[str, ServerProcess] = {}
    try:
        if args.model_dir is not None:
            export = args.model_dir
        else:
            work = args.work_dir
            if work is None:
                tmp = tempfile.TemporaryDirectory(prefix="bench_serve_")
                work = Path(tmp.name)
            export = ensure_export(work, args.preset, args.seed)
        texts, _, _ = common.sms_test_split()
        from clf_runtime import Classifier

        # The same session settings as clf-serve (spin=False), so that "direct" and "offline"
        # differ from the server only by what serving adds.
        clf = Classifier.load(
            export, providers="cpu", threads=args.threads, precision=args.precision, spin=False
        )
        labels = list(clf.labels)
        expected = clf.predict_proba(texts)
        for name, command in server_commands(
            export, args.threads, args.precision, args.max_wait_ms
        ).items():
            print(f"starting {name}: {' '.join(command[1:])}")
            servers[name] = ServerProcess(name, command)

        passes: list[dict[str, Any]] = []
        offline_runs: list[float] = []
        direct_p50: list[float] = []
        offline_cpu: list[float] = []
        for rnd in range(args.rounds):
            cpu = time.process_time()
            dt, _ = common.timed(lambda: clf.predict_proba(texts))
            offline_cpu.append(1e3 * (time.process_time() - cpu) / len(texts))
            offline_runs.append(len(texts) / dt)
            lat = [
                common.timed(lambda t=t: clf.predict_proba([t]))[0]
                for t in texts[: args.direct_texts]
            ]
            direct_p50.append(common.percentiles(lat)["p50_ms"])
            print(
                f"round {rnd + 1}: offline {offline_runs[-1]:.1f} texts/s, direct p50 "
                f"{direct_p50[-1]:.2f} ms"
            )
            order = MODES if rnd % 2 == 0 else tuple(reversed(MODES))
            for clients in levels:
                for mode in order:
                    srv = servers[mode]
                    before = srv.metrics() if mode != "off-threadpool" else {}
                    cpu = srv.cpu_seconds()
                    res = load_pass(srv.url, texts, clients, args.seconds)
                    cpu = srv.cpu_seconds() - cpu
                    after = srv.metrics() if mode != "off-threadpool" else {}
                    row = {
                        "round": rnd + 1,
                        "mode": mode,
                        **res.summary(),
                        "server_cpu_ms_per_text": round(1e3 * cpu / max(1, res.answered), 2),
                        "batches": batch_stats(before, after) if after else None,
                        "answers": check_answers(res, expected, labels),
                    }
                    passes.append(row)
                    print(
                        f"  {mode:<15} {clients:>3} clients: {row['texts_per_s']:>7.1f} texts/s "
                        f"p50 {row.get('p50_ms', float('nan')):>8.2f} ms  p99 "
                        f"{row.get('p99_ms', float('nan')):>8.2f} ms  errors {row['errors']}"
                    )
        memory = {name: srv.memory_mb() for name, srv in servers.items()}
        summary: dict[str, dict[str, Any]] = {}
        for mode in MODES:
            summary[mode] = {}
            for clients in levels:
                rows = [p for p in passes if p["mode"] == mode and p["clients"] == clients]
                batches = [
                    p["batches"] for p in rows if p["batches"] and p["batches"]["model_calls"]
                ]
                summary[mode][str(clients)] = {
                    "texts_per_s": median_of(rows, "texts_per_s"),
                    "p50_ms": median_of(rows, "p50_ms"),
                    "p99_ms": median_of(rows, "p99_ms"),
                    "errors": sum(p["errors"] for p in rows),
                    "max_abs_prob_diff": max(
                        (p["answers"].get("max_abs_prob_diff", 0.0) for p in rows), default=None
                    ),
                    "label_agreement": min(
                        (p["answers"].get("label_agreement", 1.0) for p in rows), default=None
                    ),
                    "server_cpu_ms_per_text": median_of(rows, "server_cpu_ms_per_text"),
                    "padded_tokens_per_text": median_of(batches, "padded_tokens_per_text"),
                    "mean_texts_per_call": median_of(batches, "mean_texts_per_call"),
                    "mean_requests_per_call": median_of(batches, "mean_requests_per_call"),
                }
        offline = round(statistics.median(offline_runs), 2)
        direct = round(statistics.median(direct_p50), 3)
        goals = targets(summary, offline, direct)

        table = [
            {"server": mode, "clients": c, **summary[mode][str(c)]}
            for c in levels
            for mode in MODES
        ]
        common.print_table(
            table,
            [
                "server",
                "clients",
                "texts_per_s",
                "p50_ms",
                "p99_ms",
                "server_cpu_ms_per_text",
                "padded_tokens_per_text",
                "mean_texts_per_call",
                "mean_requests_per_call",
                "errors",
                "max_abs_prob_diff",
            ],
            title=f"medians over {args.rounds} rounds (offline {offline} texts/s, direct p50 "
            f"{direct} ms)",
        )
        common.print_table(
            [{"server": k, **v} for k, v in memory.items()],
            ["server", "VmRSS", "VmHWM"],
            title="server memory after the run, MB",
        )
        common.print_targets(goals)
        payload = {
            "benchmark": "serve",
            "quick": args.quick,
            "environment": common.environment(
                threads=args.threads,
                precision=args.precision,
                preset=args.preset,
                seed=args.seed,
                clients=levels,
                seconds_per_pass=args.seconds,
                rounds=args.rounds,
                max_wait_ms=args.max_wait_ms,
                servers={
                    k: " ".join(v[1:])
                    for k, v in server_commands(
                        export, args.threads, args.precision, args.max_wait_ms
                    ).items()
                },
            ),
            "settings": {
                "threads": args.threads,
                "precision": args.precision,
                "clients": levels,
                "seconds": args.seconds,
                "rounds": args.rounds,
                "load_average_at_start": load_at_start,
                "texts": "prepare_data('sms-spam', balance=True, seed=123).test (300 texts)",
            },
            "offline": {
                "texts_per_s": offline_runs,
                "median_texts_per_s": offline,
                "cpu_ms_per_text": offline_cpu,
                "padded_tokens_per_text": offline_padding(clf, texts),
            },
            "direct": {"p50_ms": direct_p50, "median_p50_ms": direct, "texts": args.direct_texts},
            "summary": summary,
            "server_memory_mb": memory,
            "targets": goals,
            "passes": passes,
        }
        name = args.name or ("serve_quick" if args.quick else "serve")
        path = common.write_result(name, payload, out_dir=args.out)
        png = plot(payload, args.out / f"{name}.png")
        print(f"\nwrote {path}\nwrote {png}")
    finally:
        for srv in servers.values():
            srv.stop()
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
