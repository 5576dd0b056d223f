"""Input files of clf-predict / clf-bench: formats, the shared column rule, errors, splits."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from clf_runtime.columns import TEXT_COLUMNS, find_column, resolve_text_column
from clf_runtime.errors import ClassifierError
from clf_runtime.inputs import InputError, count_rows, iter_rows, plan_splits, read_split

# Texts that break naive readers: quotes, commas, tabs, newlines inside a CSV field, unicode.
TRICKY = ['he said "hi"', "a, b", "line one\nline two", "café 😀", "", "  spaced  ", "x" * 300]


def _write_csv(path: Path, header: list[str], rows: list[list[str]], newline: str = "\n") -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator=newline)
        writer.writerow(header)
        writer.writerows(rows)


def test_column_rule_is_shared_with_training() -> None:
    from clf_train import data

    assert data.TEXT_COLUMNS is TEXT_COLUMNS
    assert data.find_column is find_column
    assert find_column(["id", "Message"], "message") == 1  # unique case-insensitive match
    assert find_column(["Text", "TEXT"], "text") is None  # ambiguous: neither
    assert find_column(["Text", "text"], "text") == 1  # exact wins
    assert resolve_text_column(["id", " SMS "], None, source="f") == 1
    with pytest.raises(ClassifierError, match=r"Columns found: \['a', 'b'\].*--text-col"):
        resolve_text_column(["a", "b"], None, source="f")


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_csv_round_trip_and_detection(tmp_path: Path, newline: str) -> None:
    path = tmp_path / "in.csv"
    _write_csv(path, ["ID", "Content"], [[f"r{i}", t] for i, t in enumerate(TRICKY)], newline)
    rows = list(iter_rows(path, id_col="id"))  # id column found case-insensitively too
    assert rows == [(f"r{i}", t) for i, t in enumerate(TRICKY)]
    assert count_rows(path) == len(TRICKY)


def test_tsv_jsonl_lines_and_bom(tmp_path: Path) -> None:
    tsv = tmp_path / "in.tsv"
    tsv.write_bytes(b'\xef\xbb\xbftext\tlabel\nhe said "hi\tham\n\nok\tspam\n')
    assert [t for _, t in iter_rows(tsv)] == ['he said "hi', "ok"]  # BOM, stray quote, blank
    jsonl = tmp_path / "in.jsonl"
    objs = [{"Sentence": t, "n": i} for i, t in enumerate(TRICKY)]
    jsonl.write_text("\n".join(json.dumps(o) for o in objs) + "\n\n", encoding="utf-8")
    assert list(iter_rows(jsonl, id_col="n")) == list(enumerate(TRICKY))
    txt = tmp_path / "in.txt"
    txt.write_text("a\r\n\nb", encoding="utf-8")
    assert [t for _, t in iter_rows(txt)] == ["a", "", "b"]  # an empty line is an empty text
    assert [t for _, t in iter_rows(io.BytesIO(b"x\ny\n"), "stdin")] == ["x", "y"]


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "message"),
    [
        ("bin.csv", b"text\nok\n\xd0\xd0\xff\n", {}, "bin.csv: line 3 is not valid UTF-8"),
        ("bin.txt", b"ok\n\xff\n", {}, "iconv -f latin1 -t utf-8"),
        ("empty.csv", b"", {}, "empty.csv is empty: no header row"),
        ("empty.csv", b"", {"text_col": "x"}, "empty.csv is empty"),
        ("head.csv", b"text,id\n", {}, "has a header row but no texts"),
        ("empty.txt", b"", {}, "empty.txt is empty: nothing to classify"),
        ("cols.csv", b"a,b\n1,2\n", {}, "cannot tell which column holds the text"),
        ("cols.csv", b"a,b\n1,2\n", {"text_col": "c"}, "no column named 'c'"),
        ("short.csv", b"id,text\n1,x\n2\n", {}, "line 3 has 1 fields"),
        ("cr.csv", b"text\na\rb\n", {}, "cr.csv: line 2 is not valid CSV"),
        ("bad.jsonl", b'{"text": "x"}\n{oops\n', {}, "line 2 is not JSON"),
        ("num.jsonl", b'{"text": "x"}\n{"text": 3}\n', {}, "line 2: 'text' is int"),
        ("key.jsonl", b'{"text": "x"}\n{"other": "y"}\n', {}, "line 2 has no key 'text'"),
        ("lines.txt", b"a\n", {"id_col": "id"}, "--id-col cannot be used"),
        ("nh.csv", b"1,a\n", {"no_header": True}, "with --no-header, pass --text-col"),
    ],
)
def test_bad_input_names_file_line_and_fix(tmp_path, name, content, kwargs, message) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ClassifierError) as info:  # InputError, or the column rule's error
        count_rows(path, **kwargs)
    assert message in str(info.value)
    assert str(tmp_path) in str(info.value) or name in str(info.value)


def test_missing_file_fails_at_the_call(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        iter_rows(tmp_path / "nope.csv")


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "lines"])
@pytest.mark.parametrize("rows_per_split", [1, 3, 7, 100])
def test_splits_read_back_every_row_once(tmp_path: Path, fmt: str, rows_per_split: int) -> None:
    texts = [t for t in TRICKY if "\n" not in t or fmt == "csv"] * 3
    if fmt == "lines":
        texts = [t.replace("\n", " ") for t in texts]
    path = tmp_path / f"in.{'txt' if fmt == 'lines' else fmt}"
    if fmt == "csv":
        _write_csv(path, ["id", "text"], [[str(i), t] for i, t in enumerate(texts)], "\r\n")
    elif fmt == "tsv":
        lines = ["id\ttext"] + [f"{i}\t{t}" for i, t in enumerate(texts)]
        path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n\n")
    elif fmt == "jsonl":
        path.write_text(
            "".join(json.dumps({"text": t, "id": i}) + "\n\n" for i, t in enumerate(texts))
        )
    else:
        path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    id_col = None if fmt == "lines" else "id"
    splits = plan_splits(str(path), rows_per_split=rows_per_split, id_col=id_col)
    assert [s.index for s in splits] == list(range(0, len(texts), rows_per_split))
    assert sum(s.rows for s in splits) == len(texts)
    got = [row for s in splits for row in read_split(s)]
    assert got == list(iter_rows(path, id_col=id_col))
    assert [t for _, t in got] == texts


def test_parquet_rows_and_splits(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "in.parquet"
    table = pa.table({"key": list(range(10)), "TEXT": [f"t{i}" for i in range(10)]})
    pq.write_table(table, path, row_group_size=4)
    assert list(iter_rows(path, id_col="key")) == [(i, f"t{i}") for i in range(10)]
    splits = plan_splits(str(path), rows_per_split=1024, id_col="key")
    assert [(s.index, s.rows) for s in splits] == [(0, 4), (4, 4), (8, 2)]
    assert [row for s in splits for row in read_split(s)] == [(i, f"t{i}") for i in range(10)]
    bad = tmp_path / "nums.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), bad)
    with pytest.raises(InputError, match="holds int64, expected strings"):
        count_rows(bad)
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"text": ["a", None]}), nulls)
    with pytest.raises(InputError, match="row 1 of column 'text' is null"):
        count_rows(nulls)


def test_split_of_a_changed_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("a\nb\nc\n", encoding="utf-8")
    (first, second) = plan_splits(str(path), rows_per_split=2)
    path.write_text("a\nb\n", encoding="utf-8")
    assert read_split(first) == [(None, "a"), (None, "b")]
    with pytest.raises(InputError, match="changed while it was being read"):
        read_split(second)
