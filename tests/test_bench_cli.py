"""clf-bench: fixed-shape and real-text modes write a self-describing JSON and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clf_runtime.bench_cli import main

ROW_KEYS = {
    "engine", "gpt_clf_version", "onnxruntime_version", "numpy_version", "cpu_model",
    "cpu_count", "platform", "provider", "precision", "threads", "mode", "batch", "seq_len",
    "p50_ms", "p90_ms", "p99_ms", "texts_per_s", "tokens_per_s", "warmup", "repeats",
}  # fmt: skip


def test_fixed_shapes_json_and_plot(tiny_export_dir: Path, tmp_path: Path, capsys) -> None:
    out, png = tmp_path / "bench.json", tmp_path / "plots" / "bench.png"
    argv = [str(tiny_export_dir), "--providers", "cpu", "--batch-sizes", "1,2"]
    argv += ["--seq-lens", "4,8,100", "--warmup", "1", "--repeats", "3", "--threads", "1"]
    assert main([*argv, "--json", str(out), "--plot", str(png)]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    # Both files of the export dir, 2 batch sizes x 2 sequence lengths (100 > max_length 64).
    assert [(r["precision"], r["seq_len"], r["batch"]) for r in rows] == [
        (p, t, b) for p in ("fp32", "int8") for t in (4, 8) for b in (1, 2)
    ]
    for r in rows:
        assert set(r) >= ROW_KEYS
        assert r["engine"] == "clf_runtime" and r["provider"] == "CPUExecutionProvider"
        assert r["threads"] == 1 and r["mode"] == "fixed" and r["repeats"] == 3
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["tokens_per_s"] == pytest.approx(r["texts_per_s"] * r["seq_len"])
    assert [s["seq_len"] for s in result["skipped"]] == [100, 100]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    captured = capsys.readouterr()
    assert "p50 ms" in captured.out and len(captured.out.splitlines()) == 2 + len(rows)
    assert "skipped seq_len 100" in captured.err


def test_texts_mode(tiny_export_dir: Path, tmp_path: Path) -> None:
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": f"message {i} " * i}) + "\n" for i in range(9)))
    out = tmp_path / "b.json"
    argv = [str(tiny_export_dir), "--providers", "cpu", "--precision", "int8", "--texts"]
    argv += [str(texts), "--max-texts", "6", "--batch-sizes", "4", "--repeats", "2"]
    assert main([*argv, "--warmup", "0", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["mode"], row["precision"], row["batch"], row["n_texts"]) == ("texts", "int8", 4, 6)
    assert row["seq_len"] is None
    assert row["tokens_per_s"] == pytest.approx(row["texts_per_s"] * row["mean_tokens"])


def test_errors(tiny_export_dir: Path, tmp_path: Path, capsys) -> None:
    assert main([str(tiny_export_dir), "--precision", "fp16", "--providers", "cpu"]) == 1
    assert "only has ['fp32', 'int8']" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tiny_export_dir), "--batch-sizes", "0"])


def test_legend_in_numeric_order() -> None:
    """Item 6: T=16 before T=64 before T=128 (not string order), fp32 before int8."""
    from clf_runtime.bench import plot_series

    rows = [
        {"provider": "CPUExecutionProvider", "precision": p, "seq_len": t, "batch": b, "p50_ms": 1}
        for p in ("int8", "fp32")
        for t in (128, 16, 64)
        for b in (8, 1)
    ]
    series = plot_series(rows)
    assert [label for label, _ in series] == [
        f"CPU {p} T={t}" for p in ("fp32", "int8") for t in (16, 64, 128)
    ]
    assert all([b for b, _ in points] == [1, 8] for _, points in series)


def test_missing_or_mixed_up_model_is_an_error(tmp_path: Path, capsys) -> None:
    """Item 8 and 12: an empty directory, a run directory or a data file is not a model."""
    from clf_runtime.contract import RUN_CONFIG_FILE, RUN_WEIGHTS_FILE

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 1
    captured = capsys.readouterr()
    assert "holds no model file" in captured.err and captured.out == ""
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_CONFIG_FILE).write_text("{}")
    (run / RUN_WEIGHTS_FILE).write_bytes(b"\0")
    assert main([str(run)]) == 1
    assert f"clf-export {run} --out DIR" in capsys.readouterr().err
    data = tmp_path / "texts.csv"
    data.write_text("text\nhi\n")
    assert main([str(data)]) == 1
    assert "pass data files with --texts" in capsys.readouterr().err


def test_output_paths_checked_before_measuring(tiny_export_dir: Path, tmp_path, capsys) -> None:
    """Item 7: a bad --json/--plot path fails at once, not after the benchmark."""
    a_file = tmp_path / "FILE"
    a_file.write_text("x")
    for flag in ("--json", "--plot"):
        assert main([str(tiny_export_dir), flag, str(a_file / "out")]) == 1
        captured = capsys.readouterr()
        assert f"{flag} " in captured.err and "is a file, not a directory" in captured.err
        assert captured.out == ""  # no table: nothing was measured


def test_nothing_measured_is_an_error(tiny_export_dir: Path, capsys) -> None:
    argv = [str(tiny_export_dir), "--providers", "cpu", "--precision", "int8", "--seq-lens", "99"]
    assert main([*argv, "--repeats", "1", "--warmup", "0"]) == 1
    assert "nothing was measured" in capsys.readouterr().err


def test_texts_without_header(tiny_export_dir: Path, tmp_path: Path) -> None:
    """Item 8: the --no-header that the error message suggests is accepted."""
    texts = tmp_path / "sms.tsv"
    texts.write_text("ham\tsee you\nspam\tWIN a prize\nham\tok\n", encoding="utf-8")
    out = tmp_path / "b.json"
    argv = [str(tiny_export_dir), "--providers", "cpu", "--precision", "int8", "--texts"]
    argv += [str(texts), "--no-header", "--text-col", "1", "--batch-sizes", "2"]
    assert main([*argv, "--repeats", "1", "--warmup", "0", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["n_texts"] == 3


def test_help_documents_every_flag_and_default() -> None:
    from clf_runtime.bench_cli import build_parser

    for action in build_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and "default" in action.help, action.dest
