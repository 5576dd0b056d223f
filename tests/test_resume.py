"""Checkpoints and resume: a killed run (SIGKILL, or a crash inside a checkpoint write) resumes
to exactly the metrics of an uninterrupted run; non-finite loss and refused configs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from samples import write_topic_csv

import clf_train.checkpoint as ckpt_mod
from clf_train.api import train
from clf_train.checkpoint import load_checkpoint
from clf_train.cli import main
from clf_train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def write_csv(path: Path, n: int = 60) -> Path:
    return write_topic_csv(path, n)


def flags(data: Path, out: Path) -> list[str]:
    # dropout > 0 so that the re-seeded dropout masks matter for the exact-resume check.
    return [
        "--data", str(data), "--text-col", "message", "--label-col", "topic",
        "--model", "gpt2-tiny", "--init", "random", "--trainable", "last-block",
        "--dropout", "0.1", "--epochs", "3", "--checkpoint-every", "1", "--threads", "1",
        "--no-progress", "--out", str(out),
    ]  # fmt: skip


def config(data: Path, out: Path) -> TrainConfig:
    return TrainConfig(
        data=str(data), text_col="message", label_col="topic", model="gpt2-tiny",
        init="random", trainable="last-block", dropout=0.1, epochs=3, checkpoint_every=1,
        threads=1, progress=False, out=str(out),
    )  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(data file, metrics of the uninterrupted run)."""
    root = tmp_path_factory.mktemp("ref")
    data = write_csv(root / "data.csv")
    train(config(data, root / "run"))
    assert not (root / "run" / "checkpoint").exists()  # removed once the run completed
    return data, json.loads((root / "run" / "metrics.json").read_text())


def _step_of(state_file: Path) -> int:
    try:
        return int(json.loads(state_file.read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


def test_sigkill_mid_epoch_then_resume_gives_identical_metrics(
    reference: tuple[Path, dict], tmp_path: Path
) -> None:
    data, expected = reference
    out = tmp_path / "run"
    # --checkpoint-every 1: state.json appears after the first optimizer step; kill right then.
    proc = subprocess.Popen(
        [sys.executable, "-m", "clf_train.cli", *flags(data, out)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = out / "checkpoint" / "state.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and _step_of(state) < 1:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "metrics.json").exists()
    killed_at = json.loads(state.read_text())
    assert (killed_at["epoch"], killed_at["step"]) < (3, 0)

    assert main(["--resume", str(out), "--no-progress"]) == 0
    assert json.loads((out / "metrics.json").read_text()) == expected
    assert not (out / "checkpoint").exists()


class Boom(Exception):
    pass


def test_crash_inside_checkpoint_write_keeps_previous_checkpoint(
    reference: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, expected = reference
    out = tmp_path / "run"
    real = ckpt_mod._save_optimizer
    calls = {"n": 0}

    def crash_on_fourth(path: Path, state: dict) -> None:
        calls["n"] += 1
        if calls["n"] == 4:  # generation 4: its trainable file is already written
            raise Boom("simulated kill in the middle of a checkpoint write")
        real(path, state)

    monkeypatch.setattr(ckpt_mod, "_save_optimizer", crash_on_fourth)
    with pytest.raises(Boom):
        train(config(data, out))
    monkeypatch.setattr(ckpt_mod, "_save_optimizer", real)

    names = {p.name for p in (out / "checkpoint").iterdir()}
    assert "trainable-4.safetensors" in names  # the torn generation's first file
    loaded = load_checkpoint(out)
    assert loaded is not None and loaded.state["generation"] == 3
    assert loaded.state["step"] == 3

    result = train(TrainConfig(resume=str(out), progress=False))
    assert result.metrics == expected


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(
    reference: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = reference
    out = tmp_path / "run"
    argv = [*flags(data, out), "--trainable", "all", "--lr", "1e30"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "training loss became nan at epoch 1, step 2" in err
    assert "lower --lr" in err
    assert not (out / "metrics.json").exists()
    loaded = load_checkpoint(out)
    assert loaded is not None and (loaded.state["epoch"], loaded.state["step"]) == (0, 1)


def test_bad_config_lists_every_problem_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never"
    argv = [
        "--data", "nowhere.csv", "--lr", "-1", "--epochs", "0", "--batch-size", "0",
        "--model", "gpt2-tiny", "--trainable", "last-9-blocks", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    for line in (
        "--lr must be > 0, got -1",
        "--epochs must be >= 1, got 0",
        "--batch-size must be >= 1, got 0",
        "--model gpt2-tiny has no pretrained weights",
        "--trainable last-9-blocks: gpt2-tiny has only 2 blocks",
    ):
        assert line in err
    assert not out.exists()


def test_missing_data_file_creates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "never"
    argv = ["--data", str(tmp_path / "missing.csv"), "--model", "gpt2-tiny", "--init",
            "random", "--out", str(out)]  # fmt: skip
    assert main(argv) == 1
    assert not out.exists()


def test_existing_out_dir_is_refused(
    reference: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = reference
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(flags(data, out)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert {p.name for p in out.iterdir()} == {"keep.txt"}


def test_crash_while_writing_final_files_is_resumable(
    reference: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, expected = reference
    out = tmp_path / "run"

    def crash(*args: object, **kwargs: object) -> None:
        raise Boom("simulated kill after metrics.json, before the plots")

    monkeypatch.setattr("clf_train.api.plot_history", crash)
    with pytest.raises(Boom):
        train(config(data, out))
    monkeypatch.undo()
    assert not (out / "config.json").exists()  # not a finished run yet
    state = load_checkpoint(out)
    assert state is not None and state.state["finished"] is True
    result = train(TrainConfig(resume=str(out), progress=False))
    assert result.metrics == expected
    assert (out / "config.json").is_file() and not (out / "checkpoint").exists()


def test_run_killed_during_setup_says_to_start_again(
    reference: tuple[Path, dict],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, expected = reference
    out = tmp_path / "run"

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # the run dir and its split files exist, setup.json does not

    monkeypatch.setattr("clf_train.api.write_setup", killed)
    assert main(flags(data, out)) == 130
    err = capsys.readouterr().err
    assert (
        "interrupted during setup" in err and "run the same command again with --overwrite" in err
    )
    assert "--resume" not in err
    monkeypatch.undo()
    assert (out / "split").is_dir() and not (out / "checkpoint" / "setup.json").exists()

    assert main(["--resume", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "it is not an interrupted clf-train run" not in err
    assert "setup was interrupted, so training never reached its first checkpoint" in err
    assert f"clf-train ... --out {out} --overwrite" in err

    # The advice works: the same flags with --overwrite give the uninterrupted run's metrics.
    assert main([*flags(data, out), "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text()) == expected
