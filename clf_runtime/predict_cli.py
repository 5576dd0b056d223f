"""``clf-predict``: classify texts from arguments, a file or stdin; or files at scale with Ray.

Examples::

    clf-predict export/ "WINNER!! Claim your prize" "see you at 5"
    clf-predict export/ --input messages.txt --output predictions.jsonl
    clf-predict export/ --input data.csv --include-text          # finds the `text` column
    cat messages.txt | clf-predict export/model.int8.onnx --quiet
    clf-predict export/ --engine ray --input 'data/*.parquet' --output scores/ --workers 4

Input formats and the text-column rule: :mod:`clf_runtime.inputs` (``.txt``/other: one text
per line; ``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``; the text column is ``--text-col``, else
the first of text/sentence/message/content/sms in the header, any case, as in ``clf-train``).

Local engine (default): each output line is ``{"index": i, ["id": ...,] ["text": ...,]
"label": ..., "score": ..., "probs": {...}}``; input is read and classified in chunks, so
memory stays bounded; ``--output`` is written atomically. A file input is read once up front
to count (and check) its rows, so the progress bar has a total.

Ray engine (``--engine ray``, :mod:`clf_runtime.ray_job`): files, folders and globs in, a
directory of Parquet or JSONL files out, one row per text with ``file``, ``index``, ``id``
(with ``--id-col``), ``label`` and one ``prob_<label>`` column per label.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from .batching import CHUNK_SIZE
from .cli_types import non_negative_float, positive_int
from .contract import PRECISIONS
from .errors import ClassifierError
from .inputs import FORMATS, count_rows, iter_rows, read_texts

__all__ = ["PredictConfig", "build_parser", "main", "read_texts", "run_predict"]

ENGINES = ("local", "ray")
RAY_CHUNK_SIZE = 1024  # rows per actor call: small enough to spread 10k rows over actors


@dataclass(frozen=True)
class PredictConfig:
    """Everything ``clf-predict`` (local engine) does, as parsed from its command line."""

    model: str
    """Export directory or .onnx file (MODEL)."""
    texts: tuple[str, ...] = ()
    """Texts given as arguments (TEXT ...)."""
    input: str | None = None
    """File to read texts from (--input); ``-`` is stdin."""
    output: str | None = None
    """JSONL file to write (--output); stdout when None."""
    text_col: str | None = None
    """Column of the input holding the text (--text-col); default: the shared column rule."""
    id_col: str | None = None
    """Column of the input copied into each output line as ``id`` (--id-col)."""
    input_format: str = "auto"
    """auto (by file suffix; stdin: lines), lines, jsonl, csv, tsv or parquet (--format)."""
    no_header: bool = False
    """.csv/.tsv input has no header row (--no-header)."""
    include_text: bool = False
    """Copy each text into its output line (--include-text)."""
    batch_size: int = 32
    """Most texts per model call (--batch-size)."""
    max_batch_tokens: int = 8192
    """Most padded tokens per model call (--max-batch-tokens)."""
    chunk_size: int = CHUNK_SIZE
    """Texts read and classified at a time (--chunk-size): bounds memory."""
    providers: str = "auto"
    """onnxruntime providers, comma separated, or auto / cpu / cuda (--providers)."""
    threads: int | None = None
    """Intra-op threads (--threads)."""
    precision: str | None = None
    """fp32 / int8 / fp16 file of an export directory (--precision)."""
    quiet: bool = False
    """No progress bar, no model line on stderr (--quiet)."""


def _json_line(obj: dict[str, Any]) -> str:
    line = json.dumps(obj, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in the text: escape it (still valid JSON)
        line = json.dumps(obj)
    return line + "\n"


def _is_tty(stream: IO[str]) -> bool:
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def run_predict(config: PredictConfig, stdin: IO[Any], stdout: IO[str], stderr: IO[str]) -> int:
    """Classify every input text and write JSON lines; return the number of texts.

    ``stdin`` may be a binary or a text stream (binary is decoded as strict UTF-8).
    """
    from .classifier import Classifier
    from .paths import check_model_path, check_output_path
    from .progress import progress_bar

    if config.texts and config.input is not None:
        raise ClassifierError(
            "give texts as arguments or --input FILE, not both (the first argument is the model)"
        )
    if config.texts and config.id_col is not None:
        raise ClassifierError("--id-col needs --input (texts given as arguments have no ids)")
    check_model_path(config.model)
    if config.output is not None:
        check_output_path(config.output, flag="--output", kind="file")
    read = {
        "input_format": config.input_format,
        "text_col": config.text_col,
        "id_col": config.id_col,
        "no_header": config.no_header,
    }
    total: int | None = None
    from_file = not config.texts and config.input not in (None, "-")
    if config.texts:
        total = len(config.texts)
    elif from_file:
        total = count_rows(config.input, **read)  # also checks every row before any work
    clf = Classifier.load(
        config.model, providers=config.providers, threads=config.threads, precision=config.precision
    )
    if not config.quiet:
        threads = config.threads or "all"
        stderr.write(
            f"clf-predict: model {clf.model_path} ({clf.metadata.precision}) on {clf.provider}, "
            f"{threads} threads\n"
        )
    with contextlib.ExitStack() as stack:
        if config.texts:
            rows: Iterator[tuple[Any, str]] = ((None, t) for t in config.texts)
        elif from_file:
            rows = iter_rows(config.input, **read)
        else:
            rows = iter_rows(stdin, "stdin", **read)
        if config.output is None:
            out = stdout
        else:
            from .atomic import atomic_path

            tmp = stack.enter_context(atomic_path(config.output))
            out = stack.enter_context(open(tmp, "w", encoding="utf-8"))
        show = not config.quiet and _is_tty(stderr)
        bar = stack.enter_context(
            progress_bar(total=total, unit="text", file=stderr, disable=not show)
        )
        count = 0
        while True:
            chunk = list(itertools.islice(rows, config.chunk_size))
            if not chunk:
                break
            texts = [text for _, text in chunk]
            (probs,) = clf.iter_proba(
                texts,
                batch_size=config.batch_size,
                max_batch_tokens=config.max_batch_tokens,
                chunk_size=len(texts),
                on_batch=bar.update,
            )
            for offset, pred in enumerate(clf.to_predictions(probs)):
                row: dict[str, Any] = {"index": count + offset}
                if config.id_col is not None:
                    row["id"] = chunk[offset][0]
                if config.include_text:
                    row["text"] = texts[offset]
                row.update(label=pred.label, score=pred.score, probs=pred.probs)
                out.write(_json_line(row))
            count += len(chunk)
        out.flush()
    return count


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The ``clf-predict`` argument parser (every flag documented with its default)."""
    parser = argparse.ArgumentParser(
        prog="clf-predict",
        description=(
            "Classify texts with an exported gpt-clf model. The first argument is always the\n"
            "model; texts come as arguments, from --input, or from stdin. Writes JSON lines\n"
            "(local engine) or a directory of Parquet/JSONL files (--engine ray)."
        ),
        epilog=(
            "examples:\n"
            '  clf-predict export/ "WINNER!! Claim your prize" "see you at 5"\n'
            "  clf-predict export/ --input data.csv --output predictions.jsonl\n"
            "  clf-predict export/ --engine ray --input 'data/*.parquet' --output scores/"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model", help="export directory (from clf-export) or one of its .onnx files"
    )
    parser.add_argument("texts", nargs="*", help="texts to classify (else --input, else stdin)")
    io_ = parser.add_argument_group("input and output")
    io_.add_argument(
        "--input",
        "-i",
        action="append",
        help="file of texts (.txt: one per line, .csv, .tsv, .jsonl, .parquet); - is stdin. "
        "With --engine ray: files, folders or quoted globs, repeatable (default: stdin)",
    )
    io_.add_argument(
        "--output",
        "-o",
        help="local engine: JSONL file, written atomically (default: stdout); "
        "--engine ray: directory to create (required)",
    )
    io_.add_argument(
        "--text-col",
        help="column/key holding the text; a 0-based number with --no-header (default: the "
        "first of text, sentence, message, content, sms in the header, any case)",
    )
    io_.add_argument(
        "--id-col",
        help="column/key copied into the output as `id`, to join results back (default: none; "
        "every row also gets `index`, its 0-based position in its file)",
    )
    io_.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="input format (default: auto, by file suffix; stdin is read as lines)",
    )
    io_.add_argument(
        "--no-header", action="store_true", help=".csv/.tsv input has no header row (default: off)"
    )
    io_.add_argument(
        "--include-text",
        action="store_true",
        help="copy each text into its output row (default: off)",
    )
    model = parser.add_argument_group("model and speed")
    model.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        help="most texts per model call (default: 32)",
    )
    model.add_argument(
        "--max-batch-tokens",
        type=positive_int,
        default=8192,
        help="most padded tokens (rows x longest) per model call (default: 8192)",
    )
    model.add_argument(
        "--chunk-size",
        type=positive_int,
        default=None,
        help="texts read, sorted by length and scored together; bounds memory (default: "
        f"{CHUNK_SIZE}; with --engine ray, rows per actor call: {RAY_CHUNK_SIZE})",
    )
    model.add_argument(
        "--providers",
        default="auto",
        help="auto, cpu, cuda or onnxruntime provider names, comma separated (default: auto, "
        "CUDA when it works, else CPU)",
    )
    model.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="onnxruntime threads (default: every CPU; with --engine ray, threads = CPUs "
        "reserved per worker, default CPUs / workers)",
    )
    model.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="model file of an export directory (default: fp16 on CUDA, int8 on CPU, else fp32)",
    )
    model.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="no progress bar and no model line on stderr (default: off)",
    )
    ray = parser.add_argument_group("scaling out (--engine ray; pip install 'gpt-clf[ray]')")
    ray.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local: this process; ray: Ray Data actors, locally or on a cluster (default: local)",
    )
    ray.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="actors, each loading the model once (default: 1 on a local Ray, one per node on "
        "a cluster)",
    )
    ray.add_argument(
        "--address",
        help="address of a running Ray cluster, e.g. ray://head:10001 or auto (default: start "
        "a local Ray on this machine's CPUs)",
    )
    ray.add_argument(
        "--output-format",
        choices=("parquet", "jsonl"),
        default="parquet",
        help="files written into --output (default: parquet)",
    )
    ray.add_argument(
        "--gpus-per-worker",
        type=non_negative_float,
        default=0.0,
        help="GPUs reserved per actor, e.g. 1 (default: 0)",
    )
    ray.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --output directory once the new one is complete (default: off)",
    )
    return parser


_RAY_ONLY = ("workers", "address", "gpus_per_worker", "overwrite")


def _run_ray(args: argparse.Namespace) -> int:
    from .ray_job import RayPredictConfig, run_ray_predict

    problems = []
    if args.texts:
        problems.append("texts given as arguments (pass files with --input)")
    if not args.input or "-" in args.input:
        problems.append("no --input files (stdin cannot be spread over workers)")
    if not args.output:
        problems.append("no --output directory")
    if problems:
        raise ClassifierError(
            "--engine ray scores files into a directory: " + "; ".join(problems) + ". Example: "
            "clf-predict MODEL --engine ray --input 'data/*.csv' --output scores/"
        )
    config = RayPredictConfig(
        model=args.model,
        inputs=tuple(args.input),
        output=args.output,
        output_format=args.output_format,
        overwrite=args.overwrite,
        text_col=args.text_col,
        id_col=args.id_col,
        input_format=args.format,
        no_header=args.no_header,
        include_text=args.include_text,
        workers=args.workers,
        threads=args.threads,
        gpus_per_worker=args.gpus_per_worker,
        address=args.address,
        rows_per_call=args.chunk_size or RAY_CHUNK_SIZE,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
        providers=args.providers,
        precision=args.precision,
        quiet=args.quiet,
    )

    def log(message: str) -> None:
        print(f"clf-predict: {message}", file=sys.stderr)

    # This process owns the Ray it may start: no usage reports leave the machine (unless the
    # user's environment says otherwise), and --quiet also quiets Ray Data's progress log.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with contextlib.suppress(ImportError):  # run_ray_predict says how to install Ray
        import ray.data  # noqa: F401 -- configures Ray Data's logger, which is adjusted below
    ray_data_log = logging.getLogger("ray.data")
    level = ray_data_log.level
    if args.quiet:
        ray_data_log.setLevel(logging.WARNING)
    try:
        run_ray_predict(config, log=None if args.quiet else log)
    finally:
        ray_data_log.setLevel(level)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``clf-predict``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    try:
        if args.engine == "ray":
            return _run_ray(args)
        used = [
            "--" + name.replace("_", "-")
            for name in _RAY_ONLY
            if getattr(args, name) not in (None, False, 0.0)
        ]
        if args.output_format != "parquet":
            used.append("--output-format")
        if used:
            raise ClassifierError(f"{', '.join(used)} only apply with --engine ray")
        inputs = args.input or []
        if len(inputs) > 1:
            raise ClassifierError(
                "the local engine reads one --input; for several files, folders or globs use "
                "--engine ray"
            )
        config = PredictConfig(
            model=args.model,
            texts=tuple(args.texts),
            input=inputs[0] if inputs else None,
            output=args.output,
            text_col=args.text_col,
            id_col=args.id_col,
            input_format=args.format,
            no_header=args.no_header,
            include_text=args.include_text,
            batch_size=args.batch_size,
            max_batch_tokens=args.max_batch_tokens,
            chunk_size=args.chunk_size or CHUNK_SIZE,
            providers=args.providers,
            threads=args.threads,
            precision=args.precision,
            quiet=args.quiet,
        )
        # Read stdin as bytes: decoded as strict UTF-8 whatever the locale says, and a bad
        # byte is reported with its line.
        stdin = getattr(sys.stdin, "buffer", None) or sys.stdin
        run_predict(config, stdin, sys.stdout, sys.stderr)
    except (ClassifierError, OSError) as e:
        print(f"clf-predict: error: {e}", file=sys.stderr)
        return 1
    return 0
