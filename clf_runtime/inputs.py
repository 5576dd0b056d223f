"""Read the texts to classify from files or streams: lines, CSV, TSV, JSONL, Parquet.

One reader for every consumer (``clf-predict`` with either engine, ``clf-bench --texts``), so a
file reads the same everywhere and a bad file gets the same message: which file, which line,
what is wrong and how to fix it.

Formats (``input_format="auto"`` picks one by the file suffix; stdin is read as lines):

- ``lines`` (``.txt`` and anything unknown): one text per line; an empty line is an empty text;
- ``csv`` (``.csv``): header row, standard quoting; ``tsv`` (``.tsv``, ``.tab``): header row,
  no quoting (tabs separate, quotes are ordinary characters). Blank lines are skipped;
- ``jsonl`` (``.jsonl``, ``.ndjson``): one JSON object per line; blank lines are skipped;
- ``parquet`` (``.parquet``): needs ``pyarrow`` (``pip install 'gpt-clf[ray]'``).

The text column is found by :mod:`clf_runtime.columns` (the rule ``clf-train`` uses): the
column named by ``text_col`` (exact, else unique case-insensitive match), otherwise the first
header among ``text, sentence, message, content, sms`` (any case). With ``no_header``, a
CSV/TSV file has no header row and ``text_col`` (and ``id_col``) are 0-based column numbers.
Files are strict UTF-8 (a leading byte-order mark is fine). A source with no texts is an error.

Each row is yielded as ``(id, text)``: ``id`` is the value of ``id_col`` when one is named
(the input's own row id: strings for CSV/TSV, the JSON or Parquet value otherwise), else None.

:func:`plan_splits` cuts a file into :class:`Split` s of a fixed number of rows (byte offsets
found by one pass of the same parser, which also checks every row), and :func:`read_split`
reads one of them from its offset: this is how ``clf-predict --engine ray`` spreads one big
file over many workers while keeping each row's position in its file.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .columns import find_column, resolve_text_column
from .errors import ClassifierError

__all__ = [
    "FORMATS",
    "SUFFIX_FORMATS",
    "InputError",
    "Split",
    "count_rows",
    "detect_format",
    "iter_rows",
    "plan_splits",
    "read_split",
    "read_texts",
]

FORMATS = ("auto", "lines", "jsonl", "csv", "tsv", "parquet")
"""Values of ``--format``."""
SUFFIX_FORMATS = {
    ".txt": "lines",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
}
"""Format of each known file suffix (``input_format="auto"``); other suffixes read as lines."""

Row = tuple[Any, str]
"""``(id, text)``; ``id`` is None unless an id column was named."""


class InputError(ClassifierError, ValueError):
    """An input file or stream cannot be read as texts: the message names file, line and fix."""


def detect_format(name: str, input_format: str = "auto") -> str:
    """The format ``input_format`` means for a source called ``name`` (``auto``: by suffix)."""
    if input_format not in FORMATS:
        raise InputError(f"input format must be one of {FORMATS}, got {input_format!r}")
    if input_format != "auto":
        return input_format
    return SUFFIX_FORMATS.get(Path(name).suffix.lower(), "lines")


# ----------------------------------------------------------------------------- decoding


class _Lines:
    """Lines of a stream with their line ends, decoded as strict UTF-8 (binary streams).

    ``lineno`` is the number of the last line returned; ``offset`` the bytes consumed so far
    (so after a complete row, where the next row starts). A byte that is not UTF-8 raises
    :class:`InputError` naming the line and the byte offset.
    """

    def __init__(self, stream: IO[Any], name: str, *, lineno: int = 0, offset: int = 0) -> None:
        self._stream = stream
        self.name = name
        self.lineno = lineno
        self.offset = offset
        self._text = isinstance(stream, io.TextIOBase) or isinstance(stream.read(0), str)

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        raw = next(self._stream)  # StopIteration ends the lines
        self.lineno += 1
        start = self.offset
        self.offset += len(raw)
        if self._text:
            return raw.removeprefix("\ufeff") if start == 0 else raw
        skip = len(codecs.BOM_UTF8) if start == 0 and raw.startswith(codecs.BOM_UTF8) else 0
        try:
            return raw[skip:].decode("utf-8")
        except UnicodeDecodeError as e:
            at = skip + e.start
            suffix = Path(self.name).suffix or ".txt"
            raise InputError(
                f"{self.name}: line {self.lineno} is not valid UTF-8 (byte 0x{raw[at]:02x} at "
                f"byte offset {start + at}: {e.reason}). Input files must be UTF-8 text; if "
                "this is a text file in another encoding, re-encode it, e.g. `iconv -f latin1 "
                f"-t utf-8 {self.name} > fixed{suffix}` if it is Latin-1; if it is not a text "
                "file, pass the right file."
            ) from e


def _strip_newline(line: str) -> str:
    if line.endswith("\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith("\n") else line


# ----------------------------------------------------------------------------- formats


@dataclass
class _Columns:
    """Where text and id are: column numbers (CSV/TSV), keys (JSONL) or names (Parquet)."""

    text: Any = None
    id: Any = None
    names: list[str] | None = None  # the header, for messages
    body: tuple[int, int] = (0, 0)  # (byte offset, lines before it) where the rows start


def _lines_rows(lines: _Lines, id_col: str | None) -> Iterator[Row]:
    if id_col is not None:
        raise InputError(
            f"{lines.name} is read as plain lines (one text per line), which have no columns, "
            "so --id-col cannot be used. Use a .csv/.tsv/.jsonl/.parquet file, or drop --id-col "
            "(each line's 0-based number is its index)."
        )
    for line in lines:
        yield None, _strip_newline(line)


def _column_number(value: str, flag: str) -> int:
    if not value.isdigit():
        raise InputError(f"with --no-header, {flag} must be a 0-based column number, got {value!r}")
    return int(value)


def _table_columns(
    reader: Any, name: str, kind: str, text_col: str | None, id_col: str | None, no_header: bool
) -> _Columns:
    """Read the header row (unless ``no_header``) and find the text and id columns."""
    if no_header:
        if text_col is None:
            raise InputError(
                f"{name}: with --no-header, pass --text-col with the 0-based number of the "
                "column holding the text."
            )
        text_index = _column_number(text_col, "--text-col")
        id_index = None if id_col is None else _column_number(id_col, "--id-col")
        return _Columns(text_index, id_index, None)
    header = next(reader, None)
    while header is not None and not header:
        header = next(reader, None)  # blank lines before the header
    if header is None:
        raise InputError(
            f"{name} is empty: no header row and no texts. Pass a {kind} file with a header "
            "row naming the text column, then one text per row."
        )
    text_index = resolve_text_column(header, text_col, source=name)
    id_index = None
    if id_col is not None:
        id_index = find_column([h.strip() for h in header], id_col)
        if id_index is None:
            raise InputError(
                f"{name} has no column named {id_col!r} (--id-col). Columns found: {header}. "
                "Pass --id-col with one of these names."
            )
    return _Columns(text_index, id_index, header)


def _table_rows(
    lines: _Lines,
    *,
    tsv: bool,
    text_col: str | None,
    id_col: str | None,
    no_header: bool,
    cols: _Columns | None = None,
    found: _Columns | None = None,
) -> Iterator[Row]:
    """Rows of a CSV/TSV stream. ``cols``: columns already known (a split that starts after
    the header); ``found`` receives the columns found in the header."""
    # TSV: quoting off, so a quote is an ordinary character (SMSSpamCollection has stray ones).
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE) if tsv else csv.reader(lines)
    kind = "TSV" if tsv else "CSV"
    try:
        if cols is None:
            cols = _table_columns(reader, lines.name, kind, text_col, id_col, no_header)
            cols.body = (lines.offset, lines.lineno)
        if found is not None:
            found.text, found.id, found.names, found.body = (
                cols.text,
                cols.id,
                cols.names,
                cols.body,
            )
        need = max(cols.text, -1 if cols.id is None else cols.id)
        for row in reader:
            if not row:
                continue  # a blank line
            if need >= len(row):
                missing = cols.text if cols.text >= len(row) else cols.id
                what = cols.names[missing] if cols.names else f"number {missing}"
                raise InputError(
                    f"{lines.name} line {lines.lineno} has {len(row)} fields; column {what!r} "
                    f"is missing. Fix that row (every row needs {need + 1} fields or more)."
                )
            yield (None if cols.id is None else row[cols.id]), row[cols.text]
    except csv.Error as e:
        raise InputError(
            f"{lines.name}: line {lines.lineno} is not valid {kind} ({e}). Check the quoting "
            "near that line (a quoted field must end with a closing quote; double a quote "
            "inside it)."
        ) from e


def _jsonl_rows(
    lines: _Lines,
    *,
    text_col: str | None,
    id_col: str | None,
    cols: _Columns | None = None,
    found: _Columns | None = None,
) -> Iterator[Row]:
    name = lines.name
    for line in lines:
        if not line.strip():
            continue
        lineno = lines.lineno
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(
                f"{name} line {lineno} is not JSON ({e.msg} at column {e.colno}). Each line of a "
                'JSONL file must be one JSON object, e.g. {"text": "..."}.'
            ) from e
        if not isinstance(obj, dict):
            raise InputError(
                f"{name} line {lineno} holds a JSON {type(obj).__name__}, expected an object "
                'such as {"text": "..."}.'
            )
        if cols is None:  # the first object's keys decide, as a header row does
            keys = list(obj)
            cols = _Columns(
                keys[resolve_text_column(keys, text_col, source=f"{name} line {lineno}")]
            )
            cols.names = keys
            if id_col is not None:
                index = find_column(keys, id_col)
                if index is None:
                    raise InputError(
                        f"{name} line {lineno} has no key {id_col!r} (--id-col). Keys found: "
                        f"{keys}. Pass --id-col with one of these names."
                    )
                cols.id = keys[index]
            if found is not None:
                found.text, found.id, found.names = cols.text, cols.id, cols.names
        for key, flag in ((cols.text, "--text-col"), (cols.id, "--id-col")):
            if key is not None and key not in obj:
                raise InputError(
                    f"{name} line {lineno} has no key {key!r}, which earlier lines have "
                    f"({flag}). Add it to that line, or pass {flag} with a key every line has."
                )
        value = obj[cols.text]
        if not isinstance(value, str):
            raise InputError(
                f"{name} line {lineno}: {cols.text!r} is {type(value).__name__}, expected a "
                "string. Fix that line (every text must be a JSON string)."
            )
        yield (None if cols.id is None else obj[cols.id]), value


def _parquet_file(path: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise InputError(
            f"reading Parquet ({path}) needs pyarrow: pip install 'gpt-clf[ray]' (or pip "
            "install pyarrow)."
        ) from e
    try:
        return pq.ParquetFile(path)
    except FileNotFoundError as e:
        raise InputError(f"input file {path!r} does not exist.") from e
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ...: all mean "unreadable"
        raise InputError(
            f"{path} is not a readable Parquet file ({e}). Pass a Parquet file."
        ) from e


def _parquet_columns(file: Any, path: str, text_col: str | None, id_col: str | None) -> _Columns:
    names = list(file.schema_arrow.names)
    cols = _Columns(names[resolve_text_column(names, text_col, source=path)], None, names)
    if id_col is not None:
        index = find_column(names, id_col)
        if index is None:
            raise InputError(
                f"{path} has no column named {id_col!r} (--id-col). Columns found: {names}. "
                "Pass --id-col with one of these names."
            )
        cols.id = names[index]
    kind = file.schema_arrow.field(cols.text).type
    if str(kind) not in ("string", "large_string", "string_view"):
        raise InputError(
            f"{path}: column {cols.text!r} holds {kind}, expected strings. Pass --text-col with "
            "the column that holds the texts."
        )
    return cols


def _parquet_rows(
    file: Any, path: str, cols: _Columns, row_groups: list[int] | None = None, first: int = 0
) -> Iterator[Row]:
    columns = [cols.text] if cols.id is None else [cols.text, cols.id]
    row = first
    for batch in file.iter_batches(batch_size=4096, columns=columns, row_groups=row_groups):
        texts = batch.column(cols.text).to_pylist()
        ids = batch.column(cols.id).to_pylist() if cols.id is not None else [None] * len(texts)
        for offset, text in enumerate(texts):
            if text is None:
                raise InputError(
                    f"{path}: row {row + offset} of column {cols.text!r} is null. Fill or drop "
                    "rows without text first."
                )
        yield from zip(ids, texts, strict=True)
        row += len(texts)


def _stream_rows(
    lines: _Lines,
    fmt: str,
    text_col: str | None,
    id_col: str | None,
    no_header: bool,
    *,
    cols: _Columns | None = None,
    found: _Columns | None = None,
) -> Iterator[Row]:
    if fmt == "jsonl":
        return _jsonl_rows(lines, text_col=text_col, id_col=id_col, cols=cols, found=found)
    if fmt in ("csv", "tsv"):
        return _table_rows(
            lines,
            tsv=fmt == "tsv",
            text_col=text_col,
            id_col=id_col,
            no_header=no_header,
            cols=cols,
            found=found,
        )
    return _lines_rows(lines, id_col)


def _open_binary(path: str) -> IO[bytes]:
    if os.path.isdir(path):
        raise InputError(f"{path} is a directory; pass a file (or, with --engine ray, a folder).")
    try:
        return open(path, "rb")
    except FileNotFoundError as e:
        raise InputError(
            f"input file {path!r} does not exist. Check the path (relative paths are from "
            f"{Path.cwd()})."
        ) from e
    except OSError as e:
        raise InputError(f"cannot read input file {path!r}: {e}") from e


def _closing(stream: IO[Any], rows: Iterator[Row]) -> Iterator[Row]:
    with stream:
        yield from rows


def _require_rows(rows: Iterator[Row], name: str, fmt: str) -> Iterator[Row]:
    count = 0
    for row in rows:
        count += 1
        yield row
    if count == 0:
        what = "has a header row but no texts" if fmt in ("csv", "tsv", "parquet") else "is empty"
        raise InputError(f"{name} {what}: nothing to classify. Pass a file with texts in it.")


# ----------------------------------------------------------------------------- public API


def iter_rows(
    source: str | os.PathLike[str] | IO[Any],
    name: str | None = None,
    *,
    input_format: str = "auto",
    text_col: str | None = None,
    id_col: str | None = None,
    no_header: bool = False,
) -> Iterator[Row]:
    """Yield ``(id, text)`` for every row of ``source``: a path, or an open stream (binary or
    text) called ``name`` in messages. See the module docstring for formats and rules.

    Raises :class:`InputError` (a missing file, bad bytes, a missing column, no texts ...); a
    missing file or an unknown format fails at the call, the rest while iterating.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        name = name or path
        fmt = detect_format(path, input_format)
        if fmt == "parquet":
            file = _parquet_file(path)
            rows = _parquet_rows(file, path, _parquet_columns(file, path, text_col, id_col))
        else:
            stream = _open_binary(path)
            lines = _Lines(stream, name)
            rows = _closing(stream, _stream_rows(lines, fmt, text_col, id_col, no_header))
    else:
        name = name or getattr(source, "name", None) or "stream"
        fmt = detect_format(name, input_format)
        if fmt == "parquet":
            raise InputError(f"{name}: Parquet can only be read from a file path, not a stream.")
        rows = _stream_rows(_Lines(source, name), fmt, text_col, id_col, no_header)
    return _require_rows(rows, name, fmt)


def read_texts(
    source: str | os.PathLike[str] | IO[Any],
    name: str | None = None,
    *,
    input_format: str = "auto",
    text_col: str | None = None,
    no_header: bool = False,
) -> Iterator[str]:
    """Texts of ``source`` (:func:`iter_rows` without the ids)."""
    for _, text in iter_rows(
        source, name, input_format=input_format, text_col=text_col, no_header=no_header
    ):
        yield text


def count_rows(
    path: str | os.PathLike[str],
    *,
    input_format: str = "auto",
    text_col: str | None = None,
    id_col: str | None = None,
    no_header: bool = False,
) -> int:
    """Number of texts in the file at ``path``, by a full pass of the same parser.

    Also checks the whole file, so a bad row fails before any text is classified.
    """
    rows = iter_rows(
        path, input_format=input_format, text_col=text_col, id_col=id_col, no_header=no_header
    )
    return sum(1 for _ in rows)


# ----------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Split:
    """``rows`` consecutive rows of one file, readable on their own by :func:`read_split`."""

    path: str
    format: str
    index: int
    """0-based position (among the file's texts) of the first row."""
    rows: int
    offset: int
    """Byte offset where the split starts (text formats); row group number (Parquet)."""
    lineno: int
    """Lines before ``offset`` (text formats), for messages."""
    text: Any = None
    """Text column: number (CSV/TSV), key (JSONL) or name (Parquet); None for lines."""
    id: Any = None
    """Id column, or None."""


def plan_splits(
    path: str,
    *,
    rows_per_split: int,
    input_format: str = "auto",
    text_col: str | None = None,
    id_col: str | None = None,
    no_header: bool = False,
) -> list[Split]:
    """Cut the file at ``path`` into splits of ``rows_per_split`` rows (Parquet: one per row
    group), by one full pass of the parser: every row is checked on the way (same errors as
    :func:`iter_rows`), and the sum of ``Split.rows`` is the file's number of texts."""
    fmt = detect_format(path, input_format)
    splits: list[Split] = []
    if fmt == "parquet":
        file = _parquet_file(path)
        cols = _parquet_columns(file, path, text_col, id_col)
        index = 0
        for group in range(file.metadata.num_row_groups):
            rows = file.metadata.row_group(group).num_rows
            if rows:
                splits.append(Split(path, fmt, index, rows, group, 0, cols.text, cols.id))
                index += rows
        if not splits:
            raise InputError(f"{path} has a header row but no texts: nothing to classify.")
        return splits
    found = _Columns()
    bounds: list[tuple[int, int, int, int]] = []  # (index, rows, offset, lineno)
    with _open_binary(path) as stream:
        lines = _Lines(stream, path)
        rows = _stream_rows(lines, fmt, text_col, id_col, no_header, found=found)
        start: tuple[int, int] | None = None  # where the current split starts
        count = 0
        for count, _ in enumerate(_require_rows(rows, path, fmt), start=1):
            if start is None:  # the first row: the header (CSV/TSV) is behind us
                start = found.body
            if count % rows_per_split == 0:  # a split ends after this row
                bounds.append((count - rows_per_split, rows_per_split, *start))
                start = (lines.offset, lines.lineno)
        if count % rows_per_split and start is not None:
            bounds.append((count - count % rows_per_split, count % rows_per_split, *start))
    return [Split(path, fmt, *bound, found.text, found.id) for bound in bounds]


def read_split(split: Split) -> list[Row]:
    """The rows of ``split``, planned by :func:`plan_splits`."""
    if split.format == "parquet":
        file = _parquet_file(split.path)
        cols = _Columns(split.text, split.id)
        rows = list(_parquet_rows(file, split.path, cols, [split.offset], split.index))
    else:
        with _open_binary(split.path) as stream:
            stream.seek(split.offset)
            lines = _Lines(stream, split.path, lineno=split.lineno, offset=split.offset)
            cols = _Columns(split.text, split.id)
            it = _stream_rows(lines, split.format, None, None, False, cols=cols)
            rows = list(itertools.islice(it, split.rows))
    if len(rows) != split.rows:
        raise InputError(
            f"{split.path} changed while it was being read: expected {split.rows} rows from row "
            f"{split.index}, found {len(rows)}. Do not modify input files during a job."
        )
    return rows
