"""The ``clf-train`` command line: help, presets and overrides, resume flags, output."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from clf_train.cli import build_parser, config_from_args, main
from clf_train.config import ConfigError, TrainConfig, parse_trainable


def parse(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(list(argv)))


def test_help_documents_groups_and_preset(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for text in ("data:", "model:", "training:", "output:", "sms-demo", "--resume", "--lr"):
        assert text in out


def test_python_dash_m_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "clf_train.cli", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "usage: clf-train" in proc.stdout


def test_defaults_and_init_dependent_values() -> None:
    cfg = parse("--data", "x.csv", "--out", "o")
    assert (cfg.model, cfg.init, cfg.trainable, cfg.pooling) == (
        "gpt2", "pretrained", "last-block", "last",
    )  # fmt: skip
    assert (cfg.batch_size, cfg.weight_decay, cfg.seed, cfg.dropout) == (8, 0.1, 123, 0.0)
    assert cfg.resolved().lr == 5e-5 and cfg.resolved().epochs == 5
    rnd = parse("--data", "x.csv", "--out", "o", "--model", "gpt2-mini", "--init", "random")
    assert rnd.resolved().lr == 5e-4 and rnd.resolved().epochs == 5


def test_preset_fills_values_and_explicit_flags_win() -> None:
    cfg = parse("--preset", "sms-demo", "--out", "o", "--lr", "2e-4", "--trainable", "head")
    assert (cfg.data, cfg.balance, cfg.model, cfg.init) == ("sms-spam", True, "gpt2-mini", "random")
    assert cfg.lr == 2e-4 and cfg.trainable == "head"
    cfg.validate()


def test_resume_refuses_flags_that_change_the_run() -> None:
    assert parse("--resume", "r", "--threads", "2", "--no-progress") == TrainConfig(
        resume="r", threads=2, progress=False
    )
    with pytest.raises(ConfigError, match="drop --epochs, --lr"):
        parse("--resume", "r", "--lr", "1e-4", "--epochs", "2")


def test_parse_trainable() -> None:
    assert [parse_trainable(s) for s in ("head", "last-block", "last-3-blocks", "all")] == [
        0, 1, 3, None,
    ]  # fmt: skip
    for bad in ("last-0-blocks", "last-blocks", "everything"):
        with pytest.raises(ValueError, match="--trainable must be"):
            parse_trainable(bad)


def test_resume_of_a_non_run_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--resume", str(tmp_path)]) == 1
    assert "not an interrupted clf-train run" in capsys.readouterr().err


def test_cli_prints_epochs_warnings_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d.csv"
    with data.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["body", "kind"])
        for i in range(40):
            w.writerow([f"{'buy now cheap' if i % 2 else 'see you at lunch'} {i}", "ab"[i % 2]])
        w.writerow(["", "a"])  # skipped row -> a data warning
    argv = ["--data", str(data), "--text-col", "body", "--label-col", "kind", "--model",
            "gpt2-tiny", "--init", "random", "--trainable", "head", "--epochs", "2",
            "--threads", "1", "--no-progress", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.count("epoch ") == 2
    assert "test: n=" in captured.out and "accuracy" in captured.out
    assert "WARNING:" in captured.err
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_ctrl_c_exits_130_and_leaves_a_resumable_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d.csv"
    with data.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for i in range(30):
            w.writerow([f"{'buy now cheap' if i % 2 else 'see you at lunch'} {i}", "ab"[i % 2]])
    out = tmp_path / "run"
    argv = ["--data", str(data), "--model", "gpt2-tiny", "--init", "random", "--epochs", "2",
            "--threads", "1", "--no-progress", "--out", str(out)]  # fmt: skip

    def interrupt(record: dict) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("clf_train.cli._print_epoch", interrupt)
    assert main(argv) == 130
    assert f"clf-train --resume {out}" in capsys.readouterr().err
    assert (out / "checkpoint" / "state.json").is_file()
    monkeypatch.undo()
    assert main(["--resume", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("epoch ") == 1  # only the second epoch was left
