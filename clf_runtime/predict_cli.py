"""``clf-predict``: classify texts from arguments, a file or stdin; write JSON lines.

Examples::

    clf-predict export/ "WINNER!! Claim your prize" "see you at 5"
    clf-predict export/ --input messages.txt --output predictions.jsonl
    clf-predict export/ --input data.csv --text-col message --include-text
    cat messages.txt | clf-predict export/model.int8.onnx --quiet

Input formats (by file suffix): ``.jsonl`` (one JSON object per line, text in ``--text-col``,
default ``text``), ``.csv`` (header row, standard quoting), ``.tsv`` (header row, no quoting:
tabs separate, quotes are ordinary characters), anything else: one text per line. With
``--no-header``, ``--text-col`` of a .csv/.tsv file is a 0-based column number.

Each output line: ``{"index": i, ["text": ...,] "label": ..., "score": ..., "probs": {...}}``.
Input is read and classified in chunks, so memory stays bounded for any input size; --output
is written atomically (a crash never leaves a partial file).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .batching import CHUNK_SIZE
from .contract import PRECISIONS
from .errors import ClassifierError

__all__ = ["PredictConfig", "main", "read_texts", "run_predict"]


@dataclass(frozen=True)
class PredictConfig:
    """Everything ``clf-predict`` does, as parsed from its command line."""

    model: str
    """Export directory or .onnx file (MODEL)."""
    texts: tuple[str, ...] = ()
    """Texts given as arguments (TEXT ...)."""
    input: str | None = None
    """File to read texts from (--input); ``-`` is stdin."""
    output: str | None = None
    """JSONL file to write (--output); stdout when None."""
    text_col: str | None = None
    """Column of .csv/.tsv/.jsonl input holding the text (--text-col)."""
    input_format: str = "auto"
    """auto (by file suffix; stdin: lines), lines, jsonl, csv or tsv (--format)."""
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
    """No progress bar (--quiet)."""


def _open_text(path: str) -> IO[str]:
    return open(path, encoding="utf-8", newline="")  # closed by the caller


def _lines(stream: IO[str]) -> Iterator[str]:
    for line in stream:
        yield line[:-2] if line.endswith("\r\n") else line[:-1] if line.endswith("\n") else line


def _jsonl_texts(stream: IO[str], col: str, name: str) -> Iterator[str]:
    for lineno, line in enumerate(_lines(stream), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ClassifierError(f"{name} line {lineno} is not JSON: {e}") from e
        if not isinstance(obj, dict) or col not in obj:
            raise ClassifierError(
                f"{name} line {lineno} has no key {col!r}; pass --text-col with the key "
                "holding the text"
            )
        value = obj[col]
        if not isinstance(value, str):
            raise ClassifierError(
                f"{name} line {lineno}: {col!r} is {type(value).__name__}, expected a string"
            )
        yield value


def _table_texts(
    stream: IO[str], col: str | None, name: str, *, tsv: bool, no_header: bool
) -> Iterator[str]:
    if tsv:
        reader = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(stream)
    if col is None:
        raise ClassifierError(
            f"{name} is a table: pass --text-col NAME (or a number with --no-header)"
        )
    if no_header:
        if not col.isdigit():
            raise ClassifierError(
                f"with --no-header, --text-col must be a column number, got {col!r}"
            )
        index = int(col)
    else:
        header = next(reader, None)
        if header is None:
            return
        if col not in header:
            raise ClassifierError(
                f"{name} has no column {col!r}; its header is {header}. Pass --text-col with one "
                "of those (or --no-header and a column number)"
            )
        index = header.index(col)
    for row in reader:
        if not row:
            continue
        if index >= len(row):
            raise ClassifierError(
                f"{name} line {reader.line_num} has {len(row)} columns; column {col!r} "
                f"(number {index}) is missing"
            )
        yield row[index]


FORMATS = ("auto", "lines", "jsonl", "csv", "tsv")


def read_texts(
    stream: IO[str],
    name: str,
    *,
    input_format: str = "auto",
    text_col: str | None = None,
    no_header: bool = False,
) -> Iterator[str]:
    """Texts of ``stream``; ``input_format="auto"`` picks the parser by the suffix of ``name``."""
    fmt = input_format
    if fmt == "auto":
        fmt = {".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv"}.get(
            Path(name).suffix.lower(), "lines"
        )
    if fmt == "jsonl":
        return _jsonl_texts(stream, text_col or "text", name)
    if fmt in ("csv", "tsv"):
        return _table_texts(stream, text_col, name, tsv=fmt == "tsv", no_header=no_header)
    if fmt != "lines":
        raise ClassifierError(f"input format must be one of {FORMATS}, got {input_format!r}")
    return _lines(stream)


def _json_line(obj: dict[str, Any]) -> str:
    line = json.dumps(obj, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in the text: escape it (still valid JSON)
        line = json.dumps(obj)
    return line + "\n"


def run_predict(config: PredictConfig, stdin: IO[str], stdout: IO[str], stderr: IO[str]) -> int:
    """Classify every input text and write JSON lines; return the number of texts."""
    from tqdm import tqdm

    from .classifier import Classifier

    if config.texts and config.input is not None:
        raise ClassifierError("give texts as arguments or --input FILE, not both")
    clf = Classifier.load(
        config.model, providers=config.providers, threads=config.threads, precision=config.precision
    )
    with contextlib.ExitStack() as stack:
        if config.texts:
            texts: Iterator[str] = iter(config.texts)
        else:
            if config.input is None or config.input == "-":
                source, name = stdin, "stdin"
            else:
                source, name = stack.enter_context(_open_text(config.input)), config.input
            texts = read_texts(
                source,
                name,
                input_format=config.input_format,
                text_col=config.text_col,
                no_header=config.no_header,
            )
        if config.output is None:
            out = stdout
        else:
            from .atomic import atomic_path

            tmp = stack.enter_context(atomic_path(config.output))
            out = stack.enter_context(open(tmp, "w", encoding="utf-8"))
        show = not config.quiet and hasattr(stderr, "isatty") and stderr.isatty()
        bar = stack.enter_context(tqdm(unit="text", file=stderr, disable=not show))
        count = 0
        while True:
            chunk = list(itertools.islice(texts, config.chunk_size))
            if not chunk:
                break
            probs = clf.predict_proba(
                chunk, batch_size=config.batch_size, max_batch_tokens=config.max_batch_tokens
            )
            for offset, pred in enumerate(clf.to_predictions(probs)):
                row: dict[str, Any] = {"index": count + offset}
                if config.include_text:
                    row["text"] = chunk[offset]
                row.update(label=pred.label, score=pred.score, probs=pred.probs)
                out.write(_json_line(row))
            count += len(chunk)
            bar.update(len(chunk))
        out.flush()
    return count


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clf-predict",
        description="Classify texts with an exported gpt-clf model; write JSON lines.",
    )
    parser.add_argument("model", help="export directory or .onnx file")
    parser.add_argument("texts", nargs="*", help="texts to classify (else --input or stdin)")
    parser.add_argument(
        "--input", "-i", help="file of texts: .jsonl, .csv, .tsv or one per line; - is stdin"
    )
    parser.add_argument("--output", "-o", help="JSONL file to write (atomically); default stdout")
    parser.add_argument("--text-col", help="column/key holding the text (.csv/.tsv/.jsonl)")
    parser.add_argument(
        "--format", choices=FORMATS, default="auto", help="input format (auto: by file suffix)"
    )
    parser.add_argument(
        "--no-header", action="store_true", help=".csv/.tsv input has no header row"
    )
    parser.add_argument("--include-text", action="store_true", help="copy each text into its line")
    parser.add_argument(
        "--batch-size", type=_positive_int, default=32, help="most texts per model call (32)"
    )
    parser.add_argument(
        "--max-batch-tokens",
        type=_positive_int,
        default=8192,
        help="most padded tokens (rows x longest) per model call (8192)",
    )
    parser.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=CHUNK_SIZE,
        help=f"texts read, sorted by length and scored together; bounds memory ({CHUNK_SIZE})",
    )
    parser.add_argument(
        "--providers", default="auto", help="auto, cpu, cuda or provider names, comma separated"
    )
    parser.add_argument(
        "--threads", type=_positive_int, default=None, help="onnxruntime threads (all CPUs)"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="model file of an export directory (default: fp16 on CUDA, int8 on CPU, else fp32)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``clf-predict``; returns the exit status."""
    args = build_parser().parse_intermixed_args(argv)
    config = PredictConfig(
        model=args.model,
        texts=tuple(args.texts),
        input=args.input,
        output=args.output,
        text_col=args.text_col,
        input_format=args.format,
        no_header=args.no_header,
        include_text=args.include_text,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
        chunk_size=args.chunk_size,
        providers=args.providers,
        threads=args.threads,
        precision=args.precision,
        quiet=args.quiet,
    )
    stdin: IO[str] = sys.stdin
    wrapper = None
    buffer = getattr(sys.stdin, "buffer", None)
    if not config.texts and config.input in (None, "-") and buffer is not None:
        # Read stdin as UTF-8 whatever the locale says.
        wrapper = io.TextIOWrapper(buffer, encoding="utf-8", newline="")
        stdin = wrapper
    try:
        run_predict(config, stdin, sys.stdout, sys.stderr)
    except (ClassifierError, OSError, UnicodeDecodeError, csv.Error) as e:
        print(f"clf-predict: error: {e}", file=sys.stderr)
        return 1
    finally:
        if wrapper is not None:
            wrapper.detach()  # leave sys.stdin's buffer open
    return 0
