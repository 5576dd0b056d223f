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
    captured = capsys.readouterr()
    _check(_rows(captured.out), expected)
    # Item 5: stderr says which file, precision and provider ran (not with --quiet).
    assert f"model {fp32_path} (fp32) on CPUExecutionProvider, 1 threads" in captured.err
    assert main([str(fp32_path), "hi", "--providers", "cpu", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


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
        (["--input", "{tmp}/in.csv", "--text-col", "nope"], "no column named 'nope'"),
        (["--input", "{tmp}/in.csv"], "cannot tell which column holds the text"),
        (["--input", "{tmp}/bad.jsonl"], "line 2 is not JSON"),
        (["--input", "{tmp}/in.csv", "extra text"], "not both"),
    ],
)
def test_errors_exit_non_zero(fp32_path, tmp_path, capsys, args, message) -> None:
    (tmp_path / "in.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    (tmp_path / "bad.jsonl").write_text('{"text": "x"}\n{oops\n', encoding="utf-8")
    argv = [str(fp32_path), *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    assert main([*argv, "--providers", "cpu"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("clf-predict: error:") and message in captured.err
    assert captured.out == ""  # input is checked before the model runs: nothing written


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
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_text_column_found_like_clf_train(fp32_path, expected, tmp_path, capsys) -> None:
    """Item 10: no --text-col needed for a `text`-like column; names match case-insensitively."""
    src = tmp_path / "in.csv"
    lines = ["ID,Message"] + [f'{i},"{t}"' for i, t in enumerate(TEXTS)]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main([str(fp32_path), "-i", str(src), "--providers", "cpu", "--id-col", "id"]) == 0
    rows = _rows(capsys.readouterr().out)
    _check([{k: v for k, v in r.items() if k != "id"} for r in rows], expected)
    assert [r["id"] for r in rows] == [str(i) for i in range(len(TEXTS))]
    assert (
        main([str(fp32_path), "-i", str(src), "--providers", "cpu", "--text-col", "MESSAGE"]) == 0
    )
    _check(_rows(capsys.readouterr().out), expected)


@pytest.mark.parametrize(
    ("name", "content", "args", "message"),
    [
        # Item 9: a binary file names the file, the line and the fix.
        ("bin.csv", b"text\nok\n\xd0\x9f\xd0\n", [], "bin.csv: line 3 is not valid UTF-8"),
        ("bin.txt", b"\x89PNG\r\n\x1a\n\x00\xff", [], "iconv -f latin1 -t utf-8"),
        # Item 9: an empty file is "empty", not "a table"; with --text-col too.
        ("empty.csv", b"", [], "empty.csv is empty: no header row and no texts"),
        ("empty.csv", b"", ["--text-col", "x"], "empty.csv is empty"),
        ("head.csv", b"text\n", [], "head.csv has a header row but no texts"),
        ("empty.txt", b"", [], "empty.txt is empty: nothing to classify"),
    ],
)
def test_input_errors_name_file_and_fix(fp32_path, tmp_path, capsys, name, content, args, message):
    src = tmp_path / name
    src.write_bytes(content)
    out = tmp_path / "out.jsonl"
    assert main([str(fp32_path), "-i", str(src), "-o", str(out), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("clf-predict: error:") and message in err, err
    assert "a table" not in err and not out.exists()


def test_output_path_checked_up_front(fp32_path, tmp_path, capsys) -> None:
    """Item 7: `-o FILE/out.jsonl` is one clear message, before any work."""
    a_file = tmp_path / "FILE"
    a_file.write_text("keep me")
    assert main([str(fp32_path), "hi", "-o", str(a_file / "out.jsonl")]) == 1
    err = capsys.readouterr().err
    assert f"{str(a_file)!r} is a file, not a directory" in err and "Errno" not in err
    assert main([str(fp32_path), "hi", "-o", str(tmp_path)]) == 1
    assert "is a directory, but --output needs a file name" in capsys.readouterr().err
    assert a_file.read_text() == "keep me"


def test_model_argument_mix_ups(tmp_path, capsys) -> None:
    """Item 12: a run directory, or a data file where the model belongs."""
    from clf_runtime.contract import RUN_CONFIG_FILE, RUN_WEIGHTS_FILE

    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_CONFIG_FILE).write_text("{}")
    (run / RUN_WEIGHTS_FILE).write_bytes(b"\0")
    assert main([str(run), "hello"]) == 1
    err = capsys.readouterr().err
    assert "is a clf-train run directory" in err and f"clf-export {run} --out DIR" in err
    data = tmp_path / "data.csv"
    data.write_text("text\nhello\n")
    assert main([str(data), "hello"]) == 1
    err = capsys.readouterr().err
    assert "looks like a data file, not a model. The first argument is the model" in err
    assert "corrupt" not in err


class _Recorder:
    """Stands in for the progress bar: remembers its total and every update."""

    def __init__(self, total: int | None) -> None:
        self.total, self.updates = total, []

    def update(self, n: int) -> None:
        self.updates.append(n)

    def __enter__(self) -> _Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_progress_has_a_total_and_moves_per_batch(fp32_path, tmp_path, monkeypatch) -> None:
    """Item 5: a file input gives the bar its total; the bar moves after every model call."""
    import clf_runtime.progress
    from clf_runtime.predict_cli import PredictConfig, run_predict

    bars: list[_Recorder] = []

    def fake_bar(*, total, unit, file, disable):
        bars.append(_Recorder(total))
        return bars[-1]

    monkeypatch.setattr(clf_runtime.progress, "progress_bar", fake_bar)
    src = tmp_path / "in.txt"
    texts = [f"message number {i} " * (1 + i % 5) for i in range(50)]
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    config = PredictConfig(
        model=str(fp32_path), input=str(src), batch_size=4, chunk_size=20, providers="cpu"
    )
    out, err = io.StringIO(), io.StringIO()
    assert run_predict(config, io.BytesIO(), out, err) == 50
    (bar,) = bars
    assert bar.total == 50
    assert sum(bar.updates) == 50 and max(bar.updates) <= 4
    assert len(bar.updates) >= 50 // 4  # per batch, not per 20-text chunk


def test_plain_progress_without_tqdm(monkeypatch) -> None:
    """Item 14: the runtime does not need tqdm; without it the bar is a plain counter."""
    from clf_runtime.progress import PlainProgress, progress_bar

    monkeypatch.setitem(sys.modules, "tqdm", None)  # `import tqdm` now raises ImportError
    stream = io.StringIO()
    with progress_bar(total=10, unit="text", file=stream, disable=False) as bar:
        assert isinstance(bar, PlainProgress)
        bar._interval = 0.0
        bar.update(4)
        bar.update(6)
    drawn = stream.getvalue().split("\r")
    assert drawn[1].startswith("4/10 texts (40 %), ") and "/s, ETA " in drawn[1]
    assert drawn[-1].startswith("10/10 texts (100 %), ") and drawn[-1].endswith("/s\n")


def test_help_documents_every_flag_and_default(capsys) -> None:
    from clf_runtime.predict_cli import build_parser

    for action in build_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.dest
            assert "default" in action.help, action.dest


def test_ray_flags_need_the_ray_engine(fp32_path, capsys) -> None:
    assert main([str(fp32_path), "hi", "--workers", "2"]) == 1
    assert "--workers only apply with --engine ray" in capsys.readouterr().err
    assert main([str(fp32_path), "hi", "--engine", "ray"]) == 1
    err = capsys.readouterr().err
    assert "texts given as arguments" in err and "--output" in err
