"""``clf-bench``: latency (p50/p90/p99) and throughput of an exported classifier.

Examples::

    clf-bench export/ --batch-sizes 1,8,32 --seq-lens 16,64,128 --json bench.json --plot bench.png
    clf-bench export/ --precision fp32,int8 --texts messages.txt --batch-sizes 8,32
    clf-bench export/ --providers cpu,cuda --threads 2

Measurements live in :mod:`clf_runtime.bench`; this module parses flags, checks every path up
front, prints the table and writes the JSON / PNG files (atomically).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from .cli_types import int_at_least
from .errors import ClassifierError

__all__ = ["build_parser", "main"]


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
    """The ``clf-bench`` argument parser (every flag documented with its default)."""
    from .inputs import FORMATS

    parser = argparse.ArgumentParser(
        prog="clf-bench",
        description=(
            "Benchmark an exported gpt-clf model with onnxruntime: p50/p90/p99 latency and "
            "throughput per provider, precision, batch size and sequence length (random token "
            "ids), or full predict passes over a file of real texts (--texts)."
        ),
    )
    parser.add_argument(
        "model", help="export directory (from clf-export) or one of its .onnx files"
    )
    parser.add_argument(
        "--providers",
        type=_str_list,
        default=("auto",),
        help="comma-separated: auto, cpu, cuda or provider names; each is measured (default: auto)",
    )
    parser.add_argument(
        "--precision",
        type=_str_list,
        default=None,
        help="comma-separated precisions (fp32,int8,fp16) (default: every model file found)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=_int_list,
        default=(1, 8, 32),
        help="comma-separated batch sizes (default: 1,8,32)",
    )
    parser.add_argument(
        "--seq-lens",
        type=_int_list,
        default=(16, 64, 128),
        help="comma-separated token counts per text of the fixed-shape mode; values above the "
        "model's max_length are skipped (default: 16,64,128)",
    )
    parser.add_argument(
        "--texts",
        help="measure full predict passes (tokenizing, batching included) over this file of "
        "texts instead of fixed shapes (.txt one per line, .csv, .tsv, .jsonl, .parquet) "
        "(default: fixed shapes)",
    )
    parser.add_argument(
        "--text-col",
        help="column/key of the text in --texts; a 0-based number with --no-header (default: "
        "the first of text, sentence, message, content, sms, any case)",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="auto", help="format of --texts (default: by suffix)"
    )
    parser.add_argument(
        "--no-header",
        action="store_true",
        help="--texts .csv/.tsv has no header row (default: off)",
    )
    parser.add_argument(
        "--max-texts",
        type=int_at_least(1),
        default=None,
        help="use the first N texts of --texts (default: all)",
    )
    parser.add_argument(
        "--warmup",
        type=int_at_least(0),
        default=3,
        help="untimed calls before each measurement (default: 3)",
    )
    parser.add_argument(
        "--repeats",
        type=int_at_least(1),
        default=20,
        help="timed calls per measurement (default: 20)",
    )
    parser.add_argument(
        "--threads",
        type=int_at_least(1),
        default=None,
        help="onnxruntime intra-op threads (default: every CPU)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random token ids (default: 0)"
    )
    parser.add_argument(
        "--json", dest="json_out", help="write the results as JSON to this file (default: none)"
    )
    parser.add_argument(
        "--plot",
        help="write a PNG plot of p50 latency vs batch size to this file; needs matplotlib "
        "(default: none)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``clf-bench``; returns the exit status."""
    import itertools

    from .atomic import atomic_write_json
    from .bench import BenchConfig, format_table, plot_rows, run_bench
    from .inputs import read_texts
    from .paths import check_model_path, check_output_path

    args = build_parser().parse_args(argv)
    try:
        check_model_path(args.model, data_flag="--texts")
        for flag, path in (("--json", args.json_out), ("--plot", args.plot)):
            if path is not None:
                check_output_path(path, flag=flag, kind="file")
        if args.plot and importlib.util.find_spec("matplotlib") is None:
            raise ClassifierError(
                "--plot needs matplotlib: pip install 'gpt-clf[plot]' (or pip install "
                "matplotlib), or drop --plot"
            )
        texts = None
        if args.texts is not None:
            stream = read_texts(
                args.texts,
                input_format=args.format,
                text_col=args.text_col,
                no_header=args.no_header,
            )
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
    except (ClassifierError, OSError) as e:
        print(f"clf-bench: error: {e}", file=sys.stderr)
        return 1
    return 0
