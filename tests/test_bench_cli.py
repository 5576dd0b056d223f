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
