"""clf-predict: texts from arguments, files (lines, csv, tsv, jsonl) and stdin; JSONL output."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from clf_runtime import Classifier
from clf_runtime.predict_cli import main

TEXTS = ["Free entry to win a prize", "ok see you", "", "I'll call you later"]


@pytest.fixture(scope="module")
def fp32_path(tiny_export_dir: Path) -> Path:
    return tiny_export_dir / "model.onnx"


@pytest.fixture(scope="module")
def expected(fp32_path: Path) -> np.ndarray:
    return Classifier.load(fp32_path, providers="cpu", threads=1).predict_proba(TEXTS)


def _rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def _check(rows: list[dict], expected: np.ndarray, texts: list[str] | None = None) -> None:
    labels = ["negative", "neutral", "positive"]
    assert [r["index"] for r in rows] == list(range(len(expected)))
    for row, probs in zip(rows, expected, strict=True):
        assert list(row["probs"]) == labels
        np.testing.assert_allclose(list(row["probs"].values()), probs, atol=1e-6)
        assert row["label"] == labels[int(probs.argmax())]
        assert row["score"] == max(row["probs"].values())
    if texts is None:
        assert all("text" not in r for r in rows)
    else:
        assert [r["text"] for r in rows] == texts


def test_texts_from_arguments(fp32_path, expected, capsys) -> None:
    assert main([str(fp32_path), *TEXTS, "--providers", "cpu", "--threads", "1"]) == 0
    _check(_rows(capsys.readouterr().out), expected)


def test_plain_file_to_output_with_text(fp32_path, expected, tmp_path, capsys) -> None:
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "out" / "pred.jsonl"
    io_args = ["--input", str(src), "--output", str(out), "--include-text", "--quiet"]
    opts = ["--providers", "cpu", "--chunk-size", "3", "--batch-size", "2"]
    code = main([str(fp32_path), *io_args, *opts])
    assert code == 0
    assert capsys.readouterr().out == ""
    _check(_rows(out.read_text(encoding="utf-8")), expected, TEXTS)
    assert sorted(p.name for p in out.parent.iterdir()) == ["pred.jsonl"]  # no temp file left


def test_stdin(fp32_path, expected, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("\r\n".join(TEXTS) + "\r\n"))
    assert main([str(fp32_path), "--providers", "cpu", "--include-text"]) == 0
    _check(_rows(capsys.readouterr().out), expected, TEXTS)


def test_stdin_utf8_bytes(fp32_path, monkeypatch, capsys) -> None:
    raw = io.TextIOWrapper(io.BytesIO("café 😀\n".encode()), encoding="latin-1")
    monkeypatch.setattr(sys, "stdin", raw)
    assert main([str(fp32_path), "--providers", "cpu", "--include-text"]) == 0
    assert _rows(capsys.readouterr().out)[0]["text"] == "café 😀"


def test_csv_tsv_and_jsonl(fp32_path, expected, tmp_path, capsys) -> None:
    csv_file = tmp_path / "in.csv"
    lines = ["id,message"] + [f'{i},"{t}"' for i, t in enumerate(TEXTS)]
    csv_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert (
        main([str(fp32_path), "-i", str(csv_file), "--text-col", "message", "--providers", "cpu"])
        == 0
    )
    _check(_rows(capsys.readouterr().out), expected)

    tsv_file = tmp_path / "in.tsv"  # headerless, unbalanced quotes like SMSSpamCollection
    quoted = ['he said "hi', *TEXTS[1:]]
    tsv_file.write_text("".join(f"ham\t{t}\n" for t in quoted), encoding="utf-8")
    args = ["-i", str(tsv_file), "--text-col", "1", "--no-header", "--include-text"]
    assert main([str(fp32_path), *args, "--providers", "cpu"]) == 0
    assert [r["text"] for r in _rows(capsys.readouterr().out)] == quoted

    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "y": 1}) + "\n" for t in TEXTS), "utf-8")
    assert main([str(fp32_path), "-i", str(jsonl), "--providers", "cpu"]) == 0
    _check(_rows(capsys.readouterr().out), expected)


def test_lone_surrogate_text_is_escaped_in_output(fp32_path, capsys) -> None:
    assert main([str(fp32_path), "a\ud800b", "--include-text", "--providers", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "\\ud800" in out
    assert _rows(out)[0]["text"] == "a\ud800b"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "{tmp}/missing.txt"], "missing.txt"),
        (["--input", "{tmp}/in.csv", "--text-col", "nope"], "no column 'nope'"),
        (["--input", "{tmp}/in.csv"], "--text-col"),
        (["--input", "{tmp}/bad.jsonl"], "line 2 is not JSON"),
        (["--input", "{tmp}/in.csv", "extra text"], "not both"),
    ],
)
def test_errors_exit_non_zero(fp32_path, tmp_path, capsys, args, message) -> None:
    (tmp_path / "in.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    (tmp_path / "bad.jsonl").write_text('{"text": "x"}\n{oops\n', encoding="utf-8")
    argv = [str(fp32_path), *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    assert main([*argv, "--providers", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("clf-predict: error:") and message in err


def test_bad_model_and_failed_output_leave_nothing(fp32_path, tmp_path, capsys) -> None:
    assert main([str(tmp_path / "none"), "hi"]) == 1
    assert "does not exist" in capsys.readouterr().err
    # The error comes after the first chunk was written: the atomic output must not appear.
    bad = tmp_path / "in.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 3}\n', encoding="utf-8")
    out_dir = tmp_path / "out"
    argv = [str(fp32_path), "-i", str(bad), "-o", str(out_dir / "p.jsonl"), "--chunk-size", "1"]
    assert main([*argv, "--providers", "cpu"]) == 1
    assert "line 2: 'text' is int" in capsys.readouterr().err
    assert list(out_dir.iterdir()) == []
