"""Training data files: read labeled CSV/TSV/JSONL files and clean their labels.

Splitting and balancing live in :mod:`clf_train.splits` (``prepare_data``).

File formats, by extension:

- ``.csv``: comma separated, read with the ``csv`` module (quoted fields may hold commas,
  quotes and newlines).
- ``.tsv`` / ``.tab``: tab separated with quoting disabled (a ``"`` is an ordinary character;
  the SMS Spam Collection has unbalanced quotes). If the text is the last column, tabs beyond
  the expected count belong to the text.
- ``.jsonl`` / ``.ndjson``: one JSON object per line. Non-string labels (ints, bools, floats)
  become strings as JSON writes them (``1``, ``true``, ``0.5``).
- anything else (e.g. ``SMSSpamCollection``): a first line starting with ``{`` means JSONL,
  one containing a tab means TSV, otherwise CSV.

Files are strict UTF-8 (a leading BOM is fine). Blank lines are ignored.

Header rule (CSV/TSV; for JSONL "columns" are the keys of the first object):

1. If ``text_col`` or ``label_col`` is given, the first row is a header and must contain that
   name (exact, else a unique case-insensitive match). The column not named is found as in 2,
   or is the other column of a 2-column file.
2. Otherwise the first row is a header if it names a text column (``text``, ``sentence``,
   ``message``, ``content``, ``sms``) and a label column (``label``, ``labels``, ``class``,
   ``category``, ``target``), case-insensitively; one of them is enough in a 2-column file.
3. Otherwise a 2-column file is headerless: ``label, text`` if the first field of the first row
   looks like a short label (1-50 characters, at most 3 words), else ``text, label`` if the
   second does. Anything else is a ``DataError`` listing the columns found.

Row policy: a row whose text is empty or whitespace-only, or whose label is empty, is skipped
and counted (with its first line numbers) in the report and in a warning; so is a row with too
few fields. Texts are kept exactly as given; texts over 1,000,000 characters are cut to that
length (memory guard) and counted as ``texts_cut_chars`` (the cut at ``--max-length`` tokens
is reported per split by :mod:`clf_train.lengths`). Labels are stripped of
surrounding whitespace, and spellings that differ only in case are merged into the most
frequent spelling (ties: the lexicographically smallest).

The name ``sms-spam`` always means the named source (see ``clf_train.sms_spam``; a file of that
name is ``./sms-spam``); it is always read as headerless ``label<TAB>text``, whatever the
extension of the file found.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clf_runtime.columns import TEXT_COLUMNS, find_column, find_common_column

from .errors import DataError

__all__ = [
    "MAX_TEXT_CHARS",
    "DataError",
    "LabeledData",
    "PreparedData",
    "load_labeled_file",
]

MAX_TEXT_CHARS = 1_000_000
LABEL_COLUMNS = ("label", "labels", "class", "category", "target")
FIRST_LINES = 5  # line numbers kept per skip reason
N_EXAMPLES = 5  # duplicate texts quoted in the report
_EXT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass
class LabeledData:
    """Texts and their label names (normalized), in file order."""

    texts: list[str]
    labels: list[str]
    lines: list[int] | None = field(default=None, compare=False, repr=False)
    """Line number in the source file of each row, as read; None once rows are resampled."""

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        if self.lines is not None and len(self.lines) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {len(self.lines)} line numbers")

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class PreparedData:
    """The three splits, the label list (sorted: logit order), a JSON report and warnings."""

    train: LabeledData
    val: LabeledData
    test: LabeledData
    label_names: list[str]
    report: dict[str, Any]
    warnings: list[str]


# ----------------------------------------------------------------------------- reading


def _decode(path: Path) -> tuple[str, str]:
    """Return (text, sha256 of the bytes); DataError if missing, unreadable or not UTF-8."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise DataError(
            f"Data file {str(path)!r} does not exist. Check the path (relative paths are from "
            f"{Path.cwd()}), or use --data sms-spam for the built-in example data set."
        ) from e
    except OSError as e:
        raise DataError(f"Cannot read data file {str(path)!r}: {e}. Pass a readable file.") from e
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        text = raw[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = skip + e.start
        line = raw.count(b"\n", 0, offset) + 1
        raise DataError(
            f"{path}: line {line} is not valid UTF-8 (byte 0x{raw[offset]:02x} at byte offset "
            f"{offset}: {e.reason}). Data files must be UTF-8; re-encode the file, e.g. "
            f"`iconv -f latin1 -t utf-8 {path} > fixed{path.suffix}` if it is Latin-1."
        ) from e
    if not text.strip():
        raise DataError(f"{path} is empty. Pass a file with a header row and labeled rows.")
    return text, hashlib.sha256(raw).hexdigest()


def _detect_format(path: Path, text: str) -> str:
    fmt = _EXT_FORMATS.get(path.suffix.lower())
    if fmt is not None:
        return fmt
    body = text.lstrip()
    first = body.split("\n", 1)[0]
    if body.startswith("{"):
        return "jsonl"
    if body.startswith("["):
        raise DataError(
            f"{path} looks like a JSON array; only JSON Lines is read (one object per line, "
            f'e.g. {{"text": "...", "label": "spam"}}). Convert it and name it .jsonl.'
        )
    return "tsv" if "\t" in first else "csv"


def _delimited_rows(text: str, fmt: str, path: Path) -> list[tuple[int, list[str]]]:
    """(first line number, fields) of each non-blank row."""
    rows: list[tuple[int, list[str]]] = []
    if fmt == "tsv":  # quoting disabled: split lines on tabs
        for lineno, line in enumerate(text.split("\n"), 1):
            line = line.removesuffix("\r")
            if line.strip():
                rows.append((lineno, line.split("\t")))
        return rows
    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, len(text) + 1))  # long texts are cut later, not refused
    reader = csv.reader(io.StringIO(text, newline=""))
    prev = 0
    try:
        for fields in reader:
            start, prev = prev + 1, reader.line_num
            if any(f.strip() for f in fields):
                rows.append((start, fields))
    except csv.Error as e:
        raise DataError(
            f"{path}: line {reader.line_num} is not valid CSV ({e}). Check the quoting near that "
            f"line (a quoted field must end with a closing quote; double a quote inside it)."
        ) from e
    finally:
        csv.field_size_limit(old_limit)
    return rows


def _jsonl_rows(text: str, path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}: line {lineno} is not valid JSON ({e.msg} at column {e.colno}). Each "
                f'line of a JSONL file must be one JSON object, e.g. {{"text": "...", '
                f'"label": "spam"}}.'
            ) from e
        if not isinstance(obj, dict):
            raise DataError(
                f"{path}: line {lineno} holds a JSON {type(obj).__name__}, expected an object "
                f'such as {{"text": "...", "label": "spam"}}.'
            )
        rows.append((lineno, obj))
    return rows


def _looks_like_label(field: str) -> bool:
    s = field.strip()
    return 0 < len(s) <= 50 and len(s.split()) <= 3


def _choose_columns(
    names: list[str],
    text_col: str | None,
    label_col: str | None,
    path: Path,
    *,
    can_headerless: bool,
) -> tuple[bool, int, int]:
    """Return (has_header, text index, label index) by the module's header rule."""
    names = [n.strip() for n in names]
    found = f"Columns found: {names}."
    idx: dict[str, int | None] = {}
    for role, given, flag, cands in (
        ("text", text_col, "--text-col", TEXT_COLUMNS),
        ("label", label_col, "--label-col", LABEL_COLUMNS),
    ):
        if given is not None:
            idx[role] = find_column(names, given)
            if idx[role] is None:
                raise DataError(
                    f"{path}: no column named {given!r} ({flag}). {found} Pass {flag} with one "
                    f"of these names (the file must have a header row)."
                )
        else:
            idx[role] = find_common_column(names, cands)
    t, lab = idx["text"], idx["label"]
    explicit = text_col is not None or label_col is not None
    if (t is not None or lab is not None) and len(names) == 2:  # the other of two columns
        t = 1 - lab if t is None and lab is not None else t
        lab = 1 - t if lab is None and t is not None else lab
    if t is not None and lab is not None and t != lab:
        return True, t, lab
    if not explicit and t is None and lab is None and can_headerless and len(names) == 2:
        if _looks_like_label(names[0]):
            return False, 1, 0
        if _looks_like_label(names[1]):
            return False, 0, 1
    missing = "--text-col" if t is None or t == lab else "--label-col"
    raise DataError(
        f"{path}: cannot tell which columns hold the text and the label. {found} Expected a "
        f"header naming a text column ({', '.join(TEXT_COLUMNS)}) and a label column "
        f"({', '.join(LABEL_COLUMNS)}), or a headerless 2-column file `label, text`. Pass "
        f"{missing} (and the other flag if needed) with the column names."
    )


def _json_str(value: Any, what: str, path: Path, lineno: int) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)  # true / 1 / 0.5 as the file spells them
    raise DataError(
        f"{path}: line {lineno}: the {what} is a JSON {type(value).__name__}, expected a string "
        f"or a number. Fix that line or choose another column."
    )


def _skip_note(skipped: dict[str, dict[str, Any]], reason: str, lineno: int) -> None:
    entry = skipped.setdefault(reason, {"count": 0, "first_lines": []})
    entry["count"] += 1
    if len(entry["first_lines"]) < FIRST_LINES:
        entry["first_lines"].append(lineno)


def _first_lines(entry: dict[str, Any]) -> str:
    more = ", ..." if entry["count"] > len(entry["first_lines"]) else ""
    return ", ".join(map(str, entry["first_lines"])) + more


def _merge_labels(raw: list[str]) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """Strip labels and merge case variants; return (labels, normalizations, merge notes)."""
    stripped = Counter(s.strip() for s in raw)
    groups: dict[str, list[str]] = defaultdict(list)
    for spelling in stripped:
        groups[spelling.casefold()].append(spelling)
    canon = {}
    notes = []
    for spellings in groups.values():
        best = min(spellings, key=lambda s: (-stripped[s], s))
        canon.update(dict.fromkeys(spellings, best))
        if len(spellings) > 1:
            variants = ", ".join(f"{s!r} ({stripped[s]})" for s in sorted(spellings) if s != best)
            notes.append(f"{variants} -> {best!r} ({stripped[best]})")
    labels = [canon[s.strip()] for s in raw]
    norms = [
        {"from": r, "to": canon[r.strip()], "count": n}
        for r, n in sorted(Counter(raw).items())
        if r != canon[r.strip()]
    ]
    return labels, norms, notes


def load_labeled_file(
    path: str | Path,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    label_tab_text: bool = False,
) -> tuple[LabeledData, dict[str, Any]]:
    """Read a labeled CSV/TSV/JSONL file (see the module docstring for the rules).

    Returns the data (labels stripped and case-merged, ``lines`` set) and a JSON-serializable
    report: path, sha256, format, header and columns used, rows read/kept, rows skipped by
    reason with their first line numbers, texts cut at MAX_TEXT_CHARS (``texts_cut_chars``),
    label normalizations, label counts and warning sentences. ``label_tab_text`` reads the
    file as headerless ``label<TAB>text`` whatever its extension (the layout of the SMS Spam
    Collection). Raises ``DataError`` for a missing/empty/non-UTF-8 file, bad JSON, or
    unknown columns.
    """
    path = Path(path)
    text, sha = _decode(path)
    fmt = "tsv" if label_tab_text else _detect_format(path, text)
    report: dict[str, Any] = {"path": str(path), "sha256": sha, "format": fmt}
    cells: list[tuple[int, str, str]] = []  # (line, text, raw label)
    skipped: dict[str, dict[str, Any]] = {}
    if fmt == "jsonl":
        objs = _jsonl_rows(text, path)
        names = list(objs[0][1]) if objs else []
        _, t, lab = _choose_columns(names, text_col, label_col, path, can_headerless=False)
        tkey, lkey = names[t], names[lab]
        report.update(header=True, columns=names, text_column=tkey, label_column=lkey)
        for lineno, obj in objs:
            if tkey not in obj or lkey not in obj:
                _skip_note(skipped, "missing_field", lineno)
                continue
            tv, lv = obj[tkey], obj[lkey]
            cells.append(
                (lineno, _json_str(tv, "text", path, lineno), _json_str(lv, "label", path, lineno))
            )
        n_rows = len(objs)
    else:
        rows = _delimited_rows(text, fmt, path)
        if not rows:
            raise DataError(f"{path} holds only empty fields. Pass a file with labeled rows.")
        if label_tab_text:
            header, t, lab = False, 1, 0
        else:
            header, t, lab = _choose_columns(
                rows[0][1], text_col, label_col, path, can_headerless=True
            )
        names = [n.strip() for n in rows[0][1]]
        report.update(
            header=header,
            columns=names if header else None,
            text_column=names[t] if header else t,
            label_column=names[lab] if header else lab,
        )
        data_rows = rows[1:] if header else rows
        width = 2 if label_tab_text else len(names)
        delim = "\t" if fmt == "tsv" else ","
        joined = 0
        for lineno, fields in data_rows:
            if len(fields) > width and t == width - 1:  # extra delimiters belong to the text
                fields = [*fields[: width - 1], delim.join(fields[width - 1 :])]
                joined += 1
            if len(fields) <= max(t, lab):
                _skip_note(skipped, "missing_fields", lineno)
                continue
            cells.append((lineno, fields[t], fields[lab]))
        report["rows_with_delimiters_in_text"] = joined
        n_rows = len(data_rows)
    if n_rows == 0:
        raise DataError(f"{path} has a header but no data rows. Add labeled rows.")

    texts, raw_labels, lines = [], [], []
    cut_chars = 0
    for lineno, txt, lab_raw in cells:
        if not txt.strip():
            _skip_note(skipped, "empty_text", lineno)
        elif not lab_raw.strip():
            _skip_note(skipped, "empty_label", lineno)
        else:
            if len(txt) > MAX_TEXT_CHARS:
                txt, cut_chars = txt[:MAX_TEXT_CHARS], cut_chars + 1
            texts.append(txt)
            raw_labels.append(lab_raw)
            lines.append(lineno)
    labels, norms, notes = _merge_labels(raw_labels)
    warnings = []
    if skipped:
        why = "; ".join(
            f"{v['count']} with {k.replace('_', ' ')} (line {_first_lines(v)})"
            for k, v in skipped.items()
        )
        warnings.append(f"{path}: skipped {sum(v['count'] for v in skipped.values())} rows: {why}.")
    if notes:
        warnings.append(f"{path}: merged labels that differ only in case: {'; '.join(notes)}.")
    if cut_chars:
        warnings.append(f"{path}: cut {cut_chars} texts longer than {MAX_TEXT_CHARS:,} characters.")
    report.update(
        rows_read=n_rows,
        rows_kept=len(texts),
        skipped=skipped,
        texts_cut_chars=cut_chars,
        label_normalizations=norms,
        label_counts=dict(sorted(Counter(labels).items())),
        warnings=warnings,
    )
    if not texts:
        raise DataError(
            f"{path}: no usable rows: all {n_rows} rows were skipped ({warnings[0]}). Check that "
            f"the text and label columns are the right ones."
        )
    return LabeledData(texts, labels, lines), report
