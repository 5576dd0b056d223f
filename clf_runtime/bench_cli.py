"""``clf-bench``: latency (p50/p90/p99) and throughput of an exported classifier.

Examples::

    clf-bench export/ --batch-sizes 1,8,32 --seq-lens 16,64,128 --json bench.json --plot bench.png
    clf-bench export/ --precision fp32,int8 --texts messages.txt --batch-sizes 8,32
    clf-bench export/ --providers cpu,cuda --threads 2

Measurements live in :mod:`clf_runtime.bench`; this module parses flags, prints the table and
writes the JSON / PNG files (atomically).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import ClassifierError

__all__ = ["main"]


def _int_list(value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {value!r}"
        ) from None
    if not numbers or any(n < 1 for n in numbers):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {value!r}")
    return numbers


def _str_list(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clf-bench", description="Benchmark an exported gpt-clf model with onnxruntime."
    )
    parser.add_argument("model", help="export directory or .onnx file")
    parser.add_argument(
        "--providers",
        type=_str_list,
        default=("auto",),
        help="comma-separated: auto, cpu, cuda or provider names; each is measured",
    )
    parser.add_argument(
        "--precision",
        type=_str_list,
        default=None,
        help="comma-separated precisions (fp32,int8,fp16); default: every file found",
    )
    parser.add_argument("--batch-sizes", type=_int_list, default=(1, 8, 32))
    parser.add_argument("--seq-lens", type=_int_list, default=(16, 64, 128))
    parser.add_argument("--texts", help="measure full predict passes over this file instead")
    parser.add_argument("--text-col", help="column/key of the text in a .csv/.tsv/.jsonl file")
    parser.add_argument("--max-texts", type=int, default=None, help="use the first N texts")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_out", help="write results as JSON here")
    parser.add_argument("--plot", help="write a latency plot (PNG) here; needs matplotlib")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``clf-bench``; returns the exit status."""
    import itertools

    from .atomic import atomic_write_json
    from .bench import BenchConfig, format_table, plot_rows, run_bench
    from .predict_cli import read_texts

    args = build_parser().parse_args(argv)
    try:
        texts = None
        if args.texts is not None:
            with open(args.texts, encoding="utf-8", newline="") as fh:
                stream = read_texts(fh, args.texts, text_col=args.text_col)
                texts = tuple(itertools.islice(stream, args.max_texts))
        config = BenchConfig(
            model=args.model,
            providers=args.providers,
            precisions=args.precision,
            batch_sizes=args.batch_sizes,
            seq_lens=args.seq_lens,
            texts=texts,
            warmup=args.warmup,
            repeats=args.repeats,
            threads=args.threads,
            seed=args.seed,
        )
        result = run_bench(config)
        print(format_table(result["rows"]))
        for skip in result["skipped"]:
            print(
                f"skipped seq_len {skip['seq_len']} for {skip['precision']}: {skip['reason']}",
                file=sys.stderr,
            )
        if args.json_out:
            atomic_write_json(args.json_out, result)
        if args.plot:
            plot_rows(result["rows"], args.plot)
    except (ClassifierError, OSError, UnicodeDecodeError, ValueError) as e:
        print(f"clf-bench: error: {e}", file=sys.stderr)
        return 1
    return 0
