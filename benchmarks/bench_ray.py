"""Ray Data scoring throughput vs the single-process runtime (CPU, one machine).

The model: GPT-2 small with random seeded weights, exported by ``clf_export`` to int8, built
by ``engines.build_hf_dir`` + ``engines.build_ours`` (the builders ``bench_inference.py``
uses) in ``--work-dir``, or reused from there (a ``bench_inference.py --work-dir`` of the same
folder made it already). Texts: the SMS Spam Collection (``CLF_DATA_DIR``, default
``../shared/data/sms_spam``) replicated to ``--texts`` rows, written as one CSV file.

What is timed, one configuration after the other in one process:

- ``parse``: :func:`clf_runtime.inputs.plan_splits` over the CSV (read + parse + split plan,
  one core) and ``tokenize``: the runtime's tokenizer over all texts: the two stages that
  stay on the CPU when the model moves to a GPU;
- ``single``: ``Classifier.load(dir, threads=T).predict_proba(texts)``, the model loaded
  once outside the timing (the single-process runtime, what ``clf-predict`` does);
- ``ray AxT``: the same texts through ``clf_runtime.ray`` (``plan_inputs`` -> ``read_dataset``
  -> ``predict_dataset`` -> ``write_dataset``, Parquet out) with A actors of T threads on a
  local Ray of ``--cpus`` CPUs; job seconds from the start of the pipeline to the last file
  written (actor start-up and model loads included). Each configuration also scores a
  64-text file, and ``(N - 64) / (t_N - t_64)`` estimates its steady-state texts/s with the
  fixed costs (actor start, model load) taken out.

Timings are only meaningful on a quiet machine (``environment.load_average`` in the JSON).
Usage: ``python benchmarks/bench_ray.py --work-dir /tmp/bench/models`` (~5 min on 2 cores
once the model exists) or ``--quick`` (tiny model, a few hundred texts: checks the program).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common

SMALL = 64  # texts of the fixed-cost run


def sms_texts() -> list[str]:
    """The texts of the SMS Spam Collection (headerless ``label<TAB>text``)."""
    from clf_runtime.inputs import read_texts

    folder = Path(os.environ.get("CLF_DATA_DIR", str(common.SMS_DIR)))
    path = folder / "SMSSpamCollection"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: set CLF_DATA_DIR to a folder holding SMSSpamCollection"
        )
    return list(read_texts(path, input_format="tsv", text_col="1", no_header=True))


def ensure_model(work: Path, preset: str, seed: int) -> Path:
    """The int8 export in ``work``: reused when ``work`` says it holds this preset and seed
    (this program's stamp, or ``bench_inference.py``'s ``built.json``), else built with the
    builders ``bench_inference.py`` uses (``engines.build_hf_dir`` + ``engines.build_ours``)."""
    import engines

    export = work / "export"
    stamp = {"preset": preset, "seed": seed}
    for name in ("bench_ray_model.json", "built.json"):
        found = work / name
        if found.is_file() and (export / "model.int8.onnx").is_file():
            built = common.load_json(found).get("stamp", {})
            if {k: built.get(k) for k in stamp} == stamp:
                print(f"reusing {export} ({name})")
                return export
    print(f"building a {preset} int8 export in {work} (seed {seed}) ...")
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("hf", "run", "export"):
        shutil.rmtree(work / sub, ignore_errors=True)
    (work / "built.json").unlink(missing_ok=True)  # bench_inference's models are gone now
    engines.build_hf_dir(work / "hf", preset, seed)
    engines.build_ours(work / "hf", work / "run", export, seed, quantize=True)
    common.write_result("bench_ray_model", {"stamp": stamp}, out_dir=work)
    return export


def write_csv(path: Path, texts: Sequence[str]) -> None:
    import csv

    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text"])
        writer.writerows([i, t] for i, t in enumerate(texts))


def time_stages(csv_path: Path, texts: list[str], max_length: int) -> dict[str, Any]:
    """Reading/parsing and tokenizing throughput on one core."""
    from clf_runtime.inputs import plan_splits
    from clf_runtime.tokenizer import encode_batch

    t_parse, splits = common.timed(lambda: plan_splits(str(csv_path), rows_per_split=1024))
    t_tok, tokens = common.timed(lambda: encode_batch(texts, max_length=max_length, num_threads=1))
    n = sum(s.rows for s in splits)
    return {
        "parse_texts_per_s": round(n / t_parse, 1),
        "tokenize_texts_per_s": round(len(texts) / t_tok, 1),
        "mean_tokens": round(sum(len(t) for t in tokens) / len(tokens), 1),
    }


def time_single(model: Path, texts: list[str], threads: int, precision: str) -> dict[str, Any]:
    from clf_runtime import Classifier

    t_load, clf = common.timed(
        lambda: Classifier.load(model, providers="cpu", threads=threads, precision=precision)
    )
    clf.predict_proba(texts[:SMALL])  # warm-up
    seconds, _ = common.timed(lambda: clf.predict_proba(texts))
    return {
        "engine": "single",
        "actors": 1,
        "threads": threads,
        "n_texts": len(texts),
        "load_s": round(t_load, 3),
        "job_s": round(seconds, 3),
        "texts_per_s": round(len(texts) / seconds, 1),
    }


def time_ray(
    model: Path,
    big: Path,
    small: Path,
    out: Path,
    *,
    actors: int,
    threads: int,
    precision: str,
) -> dict[str, Any]:
    from clf_runtime.ray import plan_inputs, predict_dataset, read_dataset, write_dataset

    seconds = {}
    rows = {}
    # The first job of a Ray session also starts its worker processes: run one untimed.
    for name, path in (("warmup", small), ("small", small), ("big", big)):
        start = time.perf_counter()
        splits = plan_inputs([str(path)], rows_per_split=1024)
        ds = predict_dataset(
            read_dataset(splits),
            model,
            workers=actors,
            threads=threads,
            providers="cpu",
            precision=precision,
        )
        record = write_dataset(ds, out / f"{name}-{actors}x{threads}", overwrite=True)
        seconds[name] = time.perf_counter() - start
        rows[name] = record["rows"]
    extra = seconds["big"] - seconds["small"]
    # Too little time beyond the fixed costs to estimate a rate (tiny model or tiny input).
    steady = (rows["big"] - rows["small"]) / extra if extra > 1.0 else None
    return {
        "engine": "ray",
        "actors": actors,
        "threads": threads,
        "n_texts": rows["big"],
        "job_s": round(seconds["big"], 3),
        "texts_per_s": round(rows["big"] / seconds["big"], 1),
        "fixed_cost_s": round(seconds["small"], 3),
        "steady_texts_per_s": None if steady is None else round(steady, 1),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="tiny model, 512 texts: smoke test")
    ap.add_argument("--texts", type=int, default=4000, help="texts scored (default: 4000)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray (default: 2)")
    ap.add_argument("--precision", default="int8", help="model file (default: int8)")
    ap.add_argument("--preset", default="gpt2", help="architecture (default: gpt2 = small)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    ap.add_argument(
        "--work-dir", type=Path, default=None, help="keep/reuse the model here (default: temp)"
    )
    ap.add_argument("--out", type=Path, default=common.RESULTS_DIR, help="results directory")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    n_texts = 512 if args.quick else args.texts
    preset = "gpt2-tiny" if args.quick else args.preset
    tmp = tempfile.TemporaryDirectory(prefix="bench_ray_")
    scratch = Path(tmp.name)
    work = args.work_dir or scratch / "models"
    try:
        import ray

        from clf_runtime import Classifier

        model = ensure_model(work, preset, args.seed)
        base = sms_texts()
        texts = [base[i % len(base)] for i in range(n_texts)]
        big, small = scratch / "texts.csv", scratch / "small.csv"
        write_csv(big, texts)
        write_csv(small, texts[:SMALL])
        max_length = Classifier.load(model, providers="cpu", threads=1).metadata.max_length
        stages = time_stages(big, texts, max_length)
        print(f"stages (one core): {stages}")

        rows = []
        for threads in sorted({1, args.cpus}):
            rows.append(time_single(model, texts, threads, args.precision))
            print(f"  {rows[-1]}")
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False  # imports ray.data,
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # which sets its log level
        try:
            for actors in sorted({1, args.cpus}):
                threads = max(1, args.cpus // actors)
                rows.append(
                    time_ray(
                        model,
                        big,
                        small,
                        scratch / "out",
                        actors=actors,
                        threads=threads,
                        precision=args.precision,
                    )
                )
                print(f"  {rows[-1]}")
        finally:
            ray.shutdown()
        single_best = max(r["texts_per_s"] for r in rows if r["engine"] == "single")
        for r in rows:
            r["vs_best_single"] = common.ratio(r["texts_per_s"], single_best)
            if r.get("steady_texts_per_s") is not None:
                r["steady_vs_best_single"] = common.ratio(r["steady_texts_per_s"], single_best)
        cols = ["engine", "actors", "threads", "n_texts", "job_s", "texts_per_s"]
        cols += ["fixed_cost_s", "steady_texts_per_s", "vs_best_single", "steady_vs_best_single"]
        common.print_table(rows, cols, title=f"{preset} {args.precision}, {args.cpus} CPUs")
        payload = {
            "benchmark": "ray",
            "quick": args.quick,
            "environment": common.environment(
                cpus=args.cpus,
                preset=preset,
                precision=args.precision,
                n_texts=n_texts,
                ray_version=ray.__version__,
                rows_per_call=1024,
            ),
            "texts": {
                "source": "SMSSpamCollection, replicated",
                "n": n_texts,
                "distinct": min(n_texts, len(base)),
            },
            "stages_one_core": stages,
            "rows": rows,
        }
        path = common.write_result("ray_quick" if args.quick else "ray", payload, out_dir=args.out)
        print(f"\nwrote {path}")
    finally:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
