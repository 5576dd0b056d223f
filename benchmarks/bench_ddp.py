"""Data-parallel training step time: 1 vs N processes (DDP), GPT-2 small shape, random init.

What is timed is the trainer's own optimizer step (``clf_train.trainer.step_gradients`` +
AdamW, exactly what ``clf-train`` runs per step): each rank runs forward/backward of the
trainable top on the texts it owns of a global length-bucketed batch, DDP sums the
gradients, every rank updates. Texts: the balanced SMS training split (its real length mix),
the first ``--texts`` of them; the frozen prefix is cached per rank before timing (its time is
reported too: each rank caches only its own texts). Each configuration runs as a fresh set of
processes started like ``clf-train --devices N`` does (torchrun's environment variables,
MASTER_ADDR=127.0.0.1); rank 0 reports.

Also measured, without training: the all-reduce of a buffer the size of the trainable
parameters (the communication a step adds), and from the SMS lengths alone, how evenly
the fixed owner assignment splits length-bucketed batches (``balance``: mean over steps of
mean-rank work / max-rank work, work = texts x longest text of the rank's share; 1.0 is
perfect).

Usage (CPU, gloo): ``python benchmarks/bench_ddp.py`` (runs ``1x2,1x1,2x1``: processes x
threads each, so 1x2 and 2x1 use the same 2 cores). GPU (NCCL, one process per GPU):
``bash benchmarks/bench_ddp_cuda.sh``. Smoke: ``--preset gpt2-tiny --texts 48 --steps 3``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common

WORKER_TIMEOUT_S = 1800


# ----------------------------------------------------------------------------- data


def sms_train(limit: int | None) -> tuple[list[str], list[int]]:
    """The balanced SMS training split (texts, label ids), its first ``limit`` texts."""
    os.environ.setdefault("CLF_DATA_DIR", str(common.SMS_DIR))
    from clf_train.splits import prepare_data

    data = prepare_data("sms-spam", balance=True, seed=123)
    names = list(data.label_names)
    texts, labels = list(data.train.texts), [names.index(y) for y in data.train.labels]
    n = len(texts) if limit is None else min(limit, len(texts))
    return texts[:n], labels[:n]


def balance(
    lengths: Sequence[int], batch: int, world: int, *, epochs: int = 3, seed: int = 123
) -> dict[str, Any]:
    """How evenly the fixed owners split the epochs' global batches across ``world`` ranks."""
    from clf_train.batches import epoch_batches
    from clf_train.distributed import text_owners

    owners = text_owners(lengths, world)
    ratios, empty = [], 0
    for epoch in range(epochs):
        for idx in epoch_batches(lengths, batch, seed=seed, epoch=epoch):
            work = []
            for r in range(world):
                mine = [lengths[i] for i in idx if owners[i] == r]
                work.append(len(mine) * max(mine, default=0))
                empty += not mine
            ratios.append(statistics.fmean(work) / max(work))
    return {
        "global_batch": batch,
        "world": world,
        "balance": round(statistics.fmean(ratios), 3),
        "steps": len(ratios),
        "empty_shares": empty,
    }


# ----------------------------------------------------------------------------- worker


def worker(args: argparse.Namespace) -> None:
    """One rank: build, cache, time steps; rank 0 writes ``args.result``."""
    import torch
    import torch.distributed as dist

    from clf_runtime.tokenizer import encode_batch
    from clf_train.batches import epoch_batches
    from clf_train.config import parse_trainable
    from clf_train.distributed import ReplicatedTop, init_world
    from clf_train.frozen_cache import apply_trainable, build_store
    from clf_train.model import PRESETS, GPTClassifier, init_weights
    from clf_train.trainer import step_gradients

    torch.set_num_threads(args.threads)
    world = init_world(torch.device(args.device), timeout_s=600)
    cfg = PRESETS[args.preset]
    model = GPTClassifier(cfg, 2)
    init_weights(model, seed=args.seed, n_layer=cfg.n_layer)
    spec = apply_trainable(model, parse_trainable(args.trainable))
    model.to(world.device)
    texts, labels = sms_train(args.texts)
    ids = encode_batch(texts, max_length=256)
    lengths = [len(x) for x in ids]
    targets = torch.as_tensor(labels, device=world.device)

    sync = torch.cuda.synchronize if world.device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    held = {"train": world.held(lengths)}
    store = build_store(model, spec, {"train": ids}, device=world.device, held=held)["train"]
    sync()
    cache_s = time.perf_counter() - t0
    top = ReplicatedTop(model, spec, world)
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.1, fused=True)
    model.train()

    steps: dict[str, Any] = {}
    for batch in args.batch:
        groups = [[b] for b in epoch_batches(lengths, batch, seed=args.seed, epoch=0)]
        times = []
        for i in range(args.warmup + args.steps):
            group = groups[i % len(groups)]
            sync()
            t = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            step_gradients(top, store, targets, group, world=world, where=f"step {i}")
            optimizer.step()
            sync()
            if i >= args.warmup:
                times.append(time.perf_counter() - t)
        stats = common.percentiles(times)
        steps[str(batch)] = {**stats, "texts_per_s": round(batch / (stats["p50_ms"] / 1e3), 2)}

    allreduce = None
    if world.size > 1:
        buf = torch.zeros(n_trainable, device=world.device)
        times = []
        for i in range(args.warmup + args.steps):
            sync()
            t = time.perf_counter()
            dist.all_reduce(buf)
            sync()
            if i >= args.warmup:
                times.append(time.perf_counter() - t)
        allreduce = {**common.percentiles(times), "megabytes": round(buf.numel() * 4 / 1e6, 1)}

    per_rank = [{"rank": world.rank, "held_texts": len(store.held), "cache_s": round(cache_s, 2)}]
    if world.size > 1:
        gathered: list[Any] = [None] * world.size
        dist.all_gather_object(gathered, per_rank[0])
        per_rank = gathered
    if world.is_main:
        payload = {
            "procs": world.size,
            "threads_per_proc": args.threads,
            "device": str(world.device),
            "backend": world.backend,
            "trainable_parameters": n_trainable,
            "texts": len(texts),
            "ranks": per_rank,
            "steps": steps,
            "allreduce_trainable": allreduce,
        }
        Path(args.result).write_text(json.dumps(payload, indent=2))
    world.close()


# ----------------------------------------------------------------------------- parent


def run_config(procs: int, threads: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Start ``procs`` worker processes like ``clf-train --devices`` does; rank 0's result."""
    from clf_train.launch import LaunchConfig, child_env, free_port

    result = work / f"ddp_{procs}x{threads}.json"
    cmd = [
        sys.executable, __file__, "--worker", "--result", str(result),
        "--preset", args.preset, "--trainable", args.trainable, "--device", args.device,
        "--texts", str(args.texts), "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--seed", str(args.seed),
        "--threads", str(threads), "--batch", ",".join(map(str, args.batch)),
    ]  # fmt: skip
    launch = LaunchConfig(devices=procs, threads_per_process=threads)
    port = free_port(launch.master_addr)
    base = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    base["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(common.REPO_ROOT), os.environ.get("PYTHONPATH")) if p
    )
    print(f"{procs} process(es) x {threads} thread(s) ...", flush=True)
    t0 = time.perf_counter()
    ranks = [
        subprocess.Popen(cmd, env=child_env(base, rank=r, config=launch, port=port))
        for r in range(procs)
    ]
    codes = [p.wait(timeout=WORKER_TIMEOUT_S) for p in ranks]
    if any(codes):
        raise RuntimeError(f"workers {procs}x{threads} exited with {codes}")
    out = json.loads(result.read_text())
    out["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = common.arg_parser(
        __doc__,
        "ddp[_smoke]",
        preset_help="model shape, random init (gpt2 = GPT-2 small)",
        work_dir_help="keep the workers' result files here (default: temp)",
        seed_default=123,
        seed_help="seed of the random init and of the batch order",
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument(
        "--runs",
        default=None,
        help="PxT,...: P processes with T threads each (default CPU 1x2,1x1,2x1; cuda 1x1,2x1)",
    )
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--trainable", default="last-block", help="as clf-train --trainable")
    ap.add_argument(
        "--batch", type=common.int_list, default=[8, 32], help="global batch sizes, e.g. 8,32"
    )
    ap.add_argument("--texts", type=int, default=256, help="SMS training texts to cache")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per batch size")
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)
    if args.runs is None:
        args.runs = "1x1,2x1" if args.device == "cuda" else "1x2,1x1,2x1"
    return args


def measure(args: argparse.Namespace, work: Path) -> tuple[str, dict[str, Any]]:
    """Every configuration of ``--runs``, and the owner balance; (default name, payload)."""
    from clf_runtime.tokenizer import encode_batch

    runs = [tuple(int(x) for x in r.split("x")) for r in args.runs.split(",")]
    smoke = args.preset != "gpt2" or args.steps < 10
    texts, _ = sms_train(None)
    all_lengths = [len(x) for x in encode_batch(texts, max_length=256)]
    balances = [balance(all_lengths, b, w, seed=args.seed) for b in (8, 32, 256) for w in (2, 4, 8)]
    results = [run_config(p, t, args, work) for p, t in runs]

    base: dict[str, float | None] = {str(b): None for b in args.batch}
    for r in results:  # the 1-process run on the same cores is the reference
        if r["procs"] == 1 and r["threads_per_proc"] == max(t for _, t in runs):
            base = {b: s["p50_ms"] for b, s in r["steps"].items()}
    rows = []
    for r in results:
        for b, s in r["steps"].items():
            rows.append(
                {
                    "procs x threads": f"{r['procs']}x{r['threads_per_proc']}",
                    "global batch": int(b),
                    "step p50 ms": s["p50_ms"],
                    "p90 ms": s["p90_ms"],
                    "texts/s": s["texts_per_s"],
                    "speed-up": common.ratio(base.get(b), s["p50_ms"]),
                    "cache s (max rank)": max(x["cache_s"] for x in r["ranks"]),
                    "all-reduce ms": (r["allreduce_trainable"] or {}).get("p50_ms"),
                }
            )
    common.print_table(
        rows,
        list(rows[0]),
        title=f"DDP step time, {args.preset}, --trainable {args.trainable}, {args.device} "
        "(speed-up vs the 1-process run with the most threads)",
    )
    common.print_table(
        balances,
        ["global_batch", "world", "balance", "steps", "empty_shares"],
        title="owner balance on the SMS training split (1.0 = every rank equal work each step)",
    )
    payload = {
        "benchmark": "ddp",
        "smoke": smoke,
        "environment": common.environment(
            preset=args.preset,
            trainable=args.trainable,
            device=args.device,
            runs=args.runs,
            batch=args.batch,
            texts=args.texts,
            steps=args.steps,
            warmup=args.warmup,
            seed=args.seed,
        ),
        "results": results,
        "balance": balances,
    }
    return ("ddp_smoke" if smoke else "ddp"), payload


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    return common.run_program(args, measure, prefix="bench_ddp_")


if __name__ == "__main__":
    sys.exit(main())
