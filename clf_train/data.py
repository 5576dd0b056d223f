"""Training data: read labeled files, clean labels, balance, split (stratified, seeded).

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
length (memory guard; the trainer truncates tokens anyway) and counted. Labels are stripped of
surrounding whitespace, and spellings that differ only in case are merged into the most
frequent spelling (ties: the lexicographically smallest).

Splitting (``prepare_data``): with ``balance`` every class is first undersampled to the size of
the smallest (seeded). Split sizes follow the reference recipe: train = floor(N * train_frac),
val = floor(N * val_frac), test = the rest (1,494 -> 1,045 / 149 / 300). Each split is then
shared out over the classes in proportion to what is left of each class (largest remainder),
with at least one example of every class in every non-empty split; a class with fewer examples
than non-empty splits is a ``DataError``. With ``val_data`` and ``test_data`` the main file is all
training data; with only one of them, the main file is split into train and the other split,
the two fractions rescaled to sum to 1 (70/10/20 with a test file: 87.5 % / 12.5 %). Val/test
labels must occur in the training data (case-insensitive match to the training spelling).
With ``balance`` and val/test files, only the main file is balanced.
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
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_TEXT_CHARS",
    "DataError",
    "LabeledData",
    "PreparedData",
    "load_labeled_file",
    "prepare_data",
]

MAX_TEXT_CHARS = 1_000_000
TEXT_COLUMNS = ("text", "sentence", "message", "content", "sms")
LABEL_COLUMNS = ("label", "labels", "class", "category", "target")
FIRST_LINES = 5  # line numbers kept per skip reason
N_EXAMPLES = 5  # duplicate texts quoted in the report
_EXT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """Bad training data. The message is one paragraph: what was wrong, where (file, line), how
    to fix."""


@dataclass
class LabeledData:
    """Texts and their label names (normalized), in file order."""

    texts: list[str]
    labels: list[str]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

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


def _find(names: list[str], wanted: str) -> int | None:
    if wanted in names:
        return names.index(wanted)
    folded = [i for i, n in enumerate(names) if n.casefold() == wanted.casefold()]
    return folded[0] if len(folded) == 1 else None


def _common(names: list[str], candidates: tuple[str, ...]) -> int | None:
    folded = [n.strip().casefold() for n in names]
    for cand in candidates:
        if cand in folded:
            return folded.index(cand)
    return None


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
            idx[role] = _find(names, given)
            if idx[role] is None:
                raise DataError(
                    f"{path}: no column named {given!r} ({flag}). {found} Pass {flag} with one "
                    f"of these names (the file must have a header row)."
                )
        else:
            idx[role] = _common(names, cands)
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


def _load(
    path: Path, text_col: str | None, label_col: str | None, *, label_tab_text: bool = False
) -> tuple[LabeledData, dict[str, Any], list[int]]:
    """Read one file; also return the line number of every kept row."""
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
    truncated = 0
    for lineno, txt, lab_raw in cells:
        if not txt.strip():
            _skip_note(skipped, "empty_text", lineno)
        elif not lab_raw.strip():
            _skip_note(skipped, "empty_label", lineno)
        else:
            if len(txt) > MAX_TEXT_CHARS:
                txt, truncated = txt[:MAX_TEXT_CHARS], truncated + 1
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
    if truncated:
        warnings.append(f"{path}: cut {truncated} texts longer than {MAX_TEXT_CHARS:,} characters.")
    report.update(
        rows_read=n_rows,
        rows_kept=len(texts),
        skipped=skipped,
        texts_truncated=truncated,
        label_normalizations=norms,
        label_counts=dict(sorted(Counter(labels).items())),
        warnings=warnings,
    )
    if not texts:
        raise DataError(
            f"{path}: no usable rows: all {n_rows} rows were skipped ({warnings[0]}). Check that "
            f"the text and label columns are the right ones."
        )
    return LabeledData(texts, labels), report, lines


def load_labeled_file(
    path: str | Path, *, text_col: str | None = None, label_col: str | None = None
) -> tuple[LabeledData, dict[str, Any]]:
    """Read a labeled CSV/TSV/JSONL file (see the module docstring for the rules).

    Returns the data (labels stripped and case-merged) and a JSON-serializable report: path,
    sha256, format, header and columns used, rows read/kept, rows skipped by reason with their
    first line numbers, label normalizations, label counts and warning sentences.
    Raises ``DataError`` for a missing/empty/non-UTF-8 file, bad JSON, or unknown columns.
    """
    data, report, _ = _load(Path(path), text_col, label_col)
    return data, report


# ----------------------------------------------------------------------------- splitting


def _check_split(split: Any) -> tuple[float, float, float]:
    try:
        fr = tuple(float(x) for x in split)
    except (TypeError, ValueError) as e:
        raise DataError(f"--split must be three numbers (train val test), got {split!r}.") from e
    if (
        len(fr) != 3
        or not all(math.isfinite(x) and x >= 0 for x in fr)
        or fr[0] <= 0
        or abs(sum(fr) - 1) > 1e-6
    ):
        raise DataError(
            f"--split got {split!r}; expected three non-negative fractions train, val, test "
            f"that sum to 1, with train > 0, e.g. 0.7 0.1 0.2."
        )
    return fr[0], fr[1], fr[2]


def _apportion(
    total: int, weights: dict[str, int], lo: dict[str, int], hi: dict[str, int]
) -> dict[str, int]:
    """Share ``total`` over classes in proportion to ``weights`` (largest remainder), within
    [lo, hi] per class; ties go to the larger weight, then the smaller label."""
    wsum = sum(weights.values())
    ideal = {c: total * w / wsum if wsum else 0.0 for c, w in weights.items()}
    out = {c: min(max(math.floor(ideal[c] + 1e-9), lo[c]), hi[c]) for c in weights}
    step_order = sorted(
        weights, key=lambda c: (-(ideal[c] - math.floor(ideal[c] + 1e-9)), -weights[c], c)
    )
    while (rest := total - sum(out.values())) != 0:
        step = 1 if rest > 0 else -1
        order = step_order if step > 0 else step_order[::-1]
        movable = [c for c in order if (out[c] < hi[c] if step > 0 else out[c] > lo[c])]
        if not movable:
            break  # bounds win over the total (tiny classes)
        for c in movable[: abs(rest)]:
            out[c] += step
    return out


def _split_counts(
    counts: dict[str, int], fractions: tuple[float, float, float], source: str
) -> dict[str, list[int]]:
    """Per class, how many examples go to (train, val, test)."""
    active = [i for i, f in enumerate(fractions) if f > 0]
    short = {c: n for c, n in counts.items() if n < len(active)}
    if short:
        need = len(active)
        raise DataError(
            f"{source}: too few examples for a stratified split: "
            f"{', '.join(f'{c!r} has {n}' for c, n in sorted(short.items()))}, but each label "
            f"needs at least {need} (one per split: {'/'.join(_SPLITS[i] for i in active)}). "
            f"Add examples of these labels, remove them from the file, or give --val-data and "
            f"--test-data files."
        )
    n = sum(counts.values())
    # Reference recipe: floor for every split but the last non-empty one, which takes the rest.
    totals = [math.floor(n * f + 1e-9) for f in fractions]
    totals[active[-1]] = n - sum(totals[i] for i in active[:-1])
    left = dict(counts)
    out = {c: [0, 0, 0] for c in counts}
    for k, i in enumerate(active):
        later = len(active) - k - 1  # each later split still needs one of every class
        if later == 0:
            got = dict(left)
        else:
            got = _apportion(
                totals[i],
                left,
                dict.fromkeys(left, 1),
                {c: m - later for c, m in left.items()},
            )
        for c in counts:
            out[c][i] = got[c]
            left[c] -= got[c]
    return out


def _subset(data: LabeledData, idx: list[int]) -> LabeledData:
    return LabeledData([data.texts[i] for i in idx], [data.labels[i] for i in idx])


def _stratified(
    data: LabeledData, fractions: tuple[float, float, float], rng: random.Random, source: str
) -> tuple[list[int], list[int], list[int]]:
    order = list(range(len(data)))
    rng.shuffle(order)
    by_class: dict[str, list[int]] = defaultdict(list)
    for i in order:
        by_class[data.labels[i]].append(i)
    sizes = _split_counts({c: len(v) for c, v in by_class.items()}, fractions, source)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for c in sorted(by_class):
        idx, (a, b, _) = by_class[c], sizes[c]
        parts[0].extend(idx[:a])
        parts[1].extend(idx[a : a + b])
        parts[2].extend(idx[a + b :])
    pos = {i: p for p, i in enumerate(order)}
    for part in parts:  # classes interleaved, in shuffled order
        part.sort(key=pos.__getitem__)
    return parts


def _balance(data: LabeledData, rng: random.Random) -> tuple[LabeledData, dict[str, Any]]:
    """Undersample every class to the smallest class's size (seeded), keeping file order."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, y in enumerate(data.labels):
        by_class[y].append(i)
    m = min(len(v) for v in by_class.values())
    keep = sorted(i for c in sorted(by_class) for i in rng.sample(by_class[c], m))
    before = {c: len(by_class[c]) for c in sorted(by_class)}
    return _subset(data, keep), {
        "enabled": True,
        "before": before,
        "after": dict.fromkeys(before, m),
    }


def _align_labels(
    data: LabeledData, lines: list[int], train_labels: list[str], path: Path, flag: str
) -> tuple[LabeledData, list[dict[str, Any]]]:
    """Map a val/test file's labels onto the training spellings; refuse unknown labels."""
    known = set(train_labels)
    fold = {y.casefold(): y for y in train_labels}
    unknown: dict[str, list[int]] = defaultdict(list)
    mapped, changes = [], Counter()
    for y, line in zip(data.labels, lines, strict=True):
        target = y if y in known else fold.get(y.casefold())
        if target is None:
            unknown[y].append(line)
        else:
            if target != y:
                changes[(y, target)] += 1
            mapped.append(target)
    if unknown:
        listed = "; ".join(
            f"{y!r} ({len(ls)} rows, first at line {ls[0]})" for y, ls in sorted(unknown.items())
        )
        raise DataError(
            f"{path} ({flag}) has labels that the training data lacks: {listed}. The training "
            f"labels are {sorted(known)}. A model cannot predict a label it never saw: fix those "
            f"rows, or add examples of these labels to the training data."
        )
    norms = [{"from": a, "to": b, "count": n} for (a, b), n in sorted(changes.items())]
    return LabeledData(data.texts, mapped), norms


def _duplicates(splits: dict[str, LabeledData]) -> dict[str, Any]:
    seen: dict[str, set[str]] = defaultdict(set)
    for name, part in splits.items():
        for t in part.texts:
            seen[t].add(name)
    dups = [t for t, names in seen.items() if len(names) > 1]
    return {
        "count": len(dups),
        "examples": [
            {"text": t[:200], "splits": [s for s in _SPLITS if s in seen[t]]}
            for t in dups[:N_EXAMPLES]
        ],
    }


def prepare_data(
    data: str,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    val_data: str | None = None,
    test_data: str | None = None,
    balance: bool = False,
    seed: int = 123,
    split: tuple[float, float, float] = (0.7, 0.1, 0.2),
) -> PreparedData:
    """Load, clean, optionally balance and split the training data (see the module docstring).

    ``data`` is a file path or ``"sms-spam"``. ``val_data`` / ``test_data`` replace the split of
    that name. Deterministic for a given input and ``seed``. Raises ``DataError``.
    """
    fractions = _check_split(split)
    rng = random.Random(seed)
    report: dict[str, Any] = {
        "seed": seed,
        "split_fractions": dict(zip(_SPLITS, fractions, strict=True)),
    }
    warnings: list[str] = []

    if data == "sms-spam":
        from .sms_spam import PACKAGE_NAME, PACKAGE_ROWS, find_sms_spam

        if text_col is not None or label_col is not None:
            raise DataError(
                "--text-col/--label-col do not apply to --data sms-spam (a headerless "
                "label<TAB>text file). Drop those flags, or pass a file path to --data."
            )
        path, origin = find_sms_spam()
        pool, file_report, lines = _load(path, None, None, label_tab_text=True)
        subset = origin == PACKAGE_NAME
        report["source"] = {
            "name": "sms-spam",
            "origin": origin,
            "path": str(path),
            "subset": subset,
        }
        if subset:
            note = (
                f"Using the {PACKAGE_ROWS:,}-message subset of the SMS Spam Collection shipped by "
                f"{PACKAGE_NAME} (the full set has 5,574); set CLF_DATA_DIR to use the full file."
            )
            report["source"]["note"] = note
            warnings.append(note)
    else:
        path = Path(data)
        pool, file_report, lines = _load(path, text_col, label_col)
        report["source"] = {"name": None, "origin": "file", "path": str(path), "subset": False}
    report["files"] = {"data": file_report}
    warnings.extend(file_report["warnings"])

    distinct = sorted(set(pool.labels))
    if len(distinct) < 2:
        raise DataError(
            f"{path}: need at least 2 labels, found only {distinct[0]!r} ({len(pool)} usable "
            f"rows). Check that the label column ({file_report['label_column']!r}) is the right "
            f"one, or add examples of the other labels."
        )
    report["class_counts"] = dict(Counter(pool.labels).most_common())
    report["balance"] = {"enabled": False}
    if balance:
        pool, report["balance"] = _balance(pool, rng)

    # Which splits come from the main file, and with which (rescaled) fractions.
    frac = list(fractions)
    for i, given in ((1, val_data), (2, test_data)):
        if given is not None:
            frac[i] = 0.0
    total = sum(frac)
    frac = [f / total for f in frac]
    where = str(path)
    if not file_report["header"] and lines[0] == 1 and pool.labels.count(pool.labels[0]) == 1:
        where += (
            f" (is line 1, label {pool.labels[0]!r}, a header? then pass --text-col/--label-col)"
        )
    parts = _stratified(pool, (frac[0], frac[1], frac[2]), rng, where)
    splits = {name: _subset(pool, idx) for name, idx in zip(_SPLITS, parts, strict=True)}
    label_names = sorted(set(splits["train"].labels))
    report["split_method"] = {
        name: ("file" if given is not None else "stratified")
        for name, given in zip(_SPLITS, (None, val_data, test_data), strict=True)
    }
    report["split_fractions_used"] = dict(zip(_SPLITS, frac, strict=True))

    for name, given, flag in (("val", val_data, "--val-data"), ("test", test_data, "--test-data")):
        if given is None:
            continue
        extra_path = Path(given)
        part, extra_report, extra_lines = _load(extra_path, text_col, label_col)
        part, norms = _align_labels(part, extra_lines, label_names, extra_path, flag)
        extra_report["aligned_to_training_labels"] = norms
        report["files"][f"{name}_data"] = extra_report
        warnings.extend(extra_report["warnings"])
        if norms:
            warnings.append(
                f"{extra_path}: renamed labels to the training spelling: "
                + ", ".join(f"{n['from']!r} -> {n['to']!r} ({n['count']})" for n in norms)
                + "."
            )
        missing = sorted(set(label_names) - set(part.labels))
        if missing:
            warnings.append(f"{extra_path} ({flag}) has no examples of {missing}.")
        splits[name] = part

    report["label_names"] = label_names
    report["splits"] = {
        name: {
            "n": len(part),
            "per_label": {y: c for y, c in sorted(Counter(part.labels).items())},
        }
        for name, part in splits.items()
    }
    dup = _duplicates(splits)
    report["duplicates_across_splits"] = dup
    if dup["count"]:
        shown = "; ".join(
            f"{e['text'][:60]!r} ({'/'.join(e['splits'])})" for e in dup["examples"][:3]
        )
        warnings.append(
            f"{dup['count']} distinct texts occur in more than one split (e.g. {shown}); "
            f"scores on val/test are slightly optimistic for them."
        )
    report["warnings"] = warnings
    return PreparedData(
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        label_names=label_names,
        report=report,
        warnings=warnings,
    )
