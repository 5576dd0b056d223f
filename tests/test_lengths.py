"""Token-length statistics per split: exact numbers, the warning, and data_report.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from clf_train.cli import main
from clf_train.lengths import CUT_WARN_FRACTION, token_length_report, token_length_stats


def words(k: int) -> str:
    """A text of exactly ``k`` GPT-2 tokens: "a" then k-1 times " a"."""
    return " ".join(["a"] * k)


def test_stats_are_exact_nearest_rank_and_capped_at_the_context() -> None:
    lengths = [1, 2, 3, 4, 5, 6, 7, 8, 9, 40]  # one longer than the context (20)
    stats = token_length_stats(lengths, max_length=5, context_length=20)
    assert stats == {
        "n": 10,
        "mean": 6.5,  # (45 + 20) / 10: the long text counts as the context length
        "p50": 5,
        "p95": 20,
        "max": 20,
        "cut": 5,  # 6, 7, 8, 9, 40 are longer than max_length 5
        "cut_fraction": 0.5,
        "longer_than_context": 1,
    }


def test_report_counts_tokens_of_real_texts_and_warns_with_the_fix() -> None:
    texts = {"train": [words(k) for k in (3, 5, 12, 30)], "val": [words(2)] * 20}
    report, warnings = token_length_report(texts, max_length=10, context_length=20)
    assert report["max_length"] == 10 and report["context_length"] == 20
    train = report["splits"]["train"]
    assert (train["p50"], train["max"], train["cut"], train["longer_than_context"]) == (5, 20, 2, 1)
    assert report["splits"]["val"]["cut"] == 0
    (warning,) = warnings  # val is not cut: only train is named
    assert "texts longer than --max-length 10 tokens are cut to their first 10 tokens" in warning
    assert "train 50% (2 of 4, p95 20 tokens)" in warning and "val" not in warning
    assert "pass --max-length up to 20 (the model's context length)" in warning


def test_no_warning_at_or_below_the_threshold_and_at_the_context_length() -> None:
    n = 100
    few = [words(12)] * int(n * CUT_WARN_FRACTION) + [words(3)] * (n - int(n * CUT_WARN_FRACTION))
    assert token_length_report({"train": few}, max_length=10, context_length=20)[1] == []
    _, (warning,) = token_length_report({"test": [words(30)]}, max_length=20, context_length=20)
    assert "20 tokens is the model's context length" in warning


def test_clf_train_reports_token_cuts_per_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "long.csv"
    with data.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for i in range(40):  # 12 or 4 tokens: the long ones are cut at --max-length 8
            w.writerow([words(12 if i % 4 else 4), "ab"[i % 2]])
    out = tmp_path / "run"
    argv = ["--data", str(data), "--model", "gpt2-tiny", "--init", "random", "--max-length", "8",
            "--epochs", "1", "--threads", "1", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "texts longer than --max-length 8 tokens are cut to their first 8 tokens" in err
    assert "pass --max-length up to 512 (the model's context length)" in err
    report = json.loads((out / "data_report.json").read_text("utf-8"))
    tokens = report["tokens"]
    assert (tokens["max_length"], tokens["context_length"]) == (8, 512)
    total = {k: sum(s[k] for s in tokens["splits"].values()) for k in ("n", "cut")}
    assert total == {"n": 40, "cut": 30}
    assert {s["max"] for s in tokens["splits"].values()} == {12}
    assert report["files"]["data"]["texts_cut_chars"] == 0  # the character cut, under its name
    assert "texts_truncated" not in report["files"]["data"]
    assert any("--max-length 8" in w for w in report["warnings"])
