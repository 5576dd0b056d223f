"""The ``clf-train`` command line: help, presets and overrides, resume flags, output."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

from clf_train.cli import build_parser, config_from_args, main
from clf_train.config import ConfigError, TrainConfig, parse_trainable


def parse(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(list(argv)))


def write_csv(path: Path, n: int, header: tuple[str, str], *extra: tuple[str, str]) -> Path:
    """``n`` rows of labels a (lunch talk) / b (spam-like) under ``header``, then ``extra``."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for i in range(n):
            w.writerow([f"{'buy now cheap' if i % 2 else 'see you at lunch'} {i}", "ab"[i % 2]])
        w.writerows(extra)
    return path


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
    assert (cfg.model, cfg.init, cfg.trainable, cfg.pooling) == ("gpt2", "pretrained", None, "last")
    assert (cfg.batch_size, cfg.weight_decay, cfg.seed, cfg.dropout) == (8, 0.1, 123, 0.0)
    res = cfg.resolved()
    assert (res.trainable, res.lr, res.epochs) == ("last-block", 5e-5, 5)
    rnd = parse("--data", "x.csv", "--out", "o", "--model", "gpt2-mini", "--init", "random")
    res = rnd.resolved()
    assert (res.trainable, res.lr, res.epochs) == ("all", 5e-4, 5)  # the default follows --init
    assert rnd.advice() == []
    explicit = parse("--data", "x.csv", "--out", "o", "--trainable", "head", "--init", "random")
    assert explicit.resolved().trainable == "head"  # an explicit flag always wins


@pytest.mark.parametrize("trainable", ["head", "last-block", "last-2-blocks"])
def test_random_init_with_a_frozen_part_is_advised_against(trainable: str) -> None:
    cfg = parse("--data", "x.csv", "--out", "o", "--init", "random", "--trainable", trainable)
    (tip,) = cfg.advice()
    assert f"--init random with --trainable {trainable} keeps part of a randomly" in tip
    assert "Pass --trainable all" in tip
    assert parse("--data", "x.csv", "--out", "o", "--trainable", trainable).advice() == []


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
    # The last row has no text: it is skipped, which makes a data warning.
    data = write_csv(tmp_path / "d.csv", 40, ("body", "kind"), ("", "a"))
    argv = ["--data", str(data), "--text-col", "body", "--label-col", "kind", "--model",
            "gpt2-tiny", "--init", "random", "--trainable", "head", "--epochs", "2",
            "--threads", "1", "--no-progress", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.count("epoch ") == 2
    assert "test: n=" in captured.out and "accuracy" in captured.out
    assert "WARNING:" in captured.err
    assert "--init random with --trainable head" in captured.err  # the fix is named too
    assert "Pass --trainable all" in captured.err
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_ctrl_c_exits_130_and_leaves_a_resumable_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_csv(tmp_path / "d.csv", 30, ("text", "label"))
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


def test_resume_refuses_a_preset_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match=r"saved when it started; drop --preset \(only"):
        parse("--resume", "r", "--preset", "sms-demo")
    run = tmp_path / "run"
    assert main(["--resume", str(run), "--preset", "sms-demo"]) == 2
    assert "drop --preset" in capsys.readouterr().err
    assert not run.exists()


def _option_flags() -> list[str]:
    return [
        a.option_strings[0]
        for a in build_parser()._actions
        if a.option_strings and a.option_strings[0] not in ("-h", "--resume")
    ]


def test_help_names_exactly_the_flags_resume_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    accepted = set()
    for flag in _option_flags():
        action = build_parser()._option_string_actions[flag]
        value = [] if action.nargs == 0 else [action.choices[0] if action.choices else "1"]
        if flag == "--out":
            value = ["r"]  # the same directory as --resume
        try:
            parse("--resume", "r", flag, *value)
        except ConfigError as e:
            assert f"drop {flag} " in str(e)
        else:
            accepted.add(flag)
    assert accepted == {
        "--device", "--threads", "--no-progress", "--out", "--devices", "--dist-timeout",
    }  # fmt: skip

    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # undo the line wrapping
    resume_part = help_text.split("resume:", 1)[1].split("examples:", 1)[0]
    named = {f for f in _option_flags() if f"{f} " in resume_part or f"{f}," in resume_part}
    assert named - {"--checkpoint-every"} == accepted  # the paragraph also explains checkpoints


def test_help_lists_every_model_name(capsys: pytest.CaptureFixture[str]) -> None:
    from clf_train.presets import MODELS

    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    model_help = help_text.split("model: --model NAME", 1)[1].split("--weights", 1)[0]
    words = model_help.replace(",", " ").replace(";", " ").replace(")", " ").split()
    assert [m for m in MODELS if m in words] == list(MODELS)
    with pytest.raises(SystemExit):
        parse("--model", "gpt3", "--data", "x.csv", "--out", "o")
    assert "invalid choice: 'gpt3'" in capsys.readouterr().err


def test_every_train_error_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from clf_train.errors import TrainError

    def fail(config: TrainConfig, **kwargs: object) -> None:
        raise TrainError("a failure of a kind the CLI has never heard of")

    monkeypatch.setattr("clf_train.api.train", fail)
    assert main(["--data", "x.csv", "--out", "o"]) == 1
    assert "clf-train: error: a failure of a kind" in capsys.readouterr().err


def test_resume_of_a_finished_run_says_there_is_nothing_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("config.json", "model.safetensors", "metrics.json"):
        (tmp_path / name).write_text("{}")
    assert main(["--resume", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "holds a finished clf-train run" in err and "nothing to resume" in err
    assert f"--out {tmp_path} --overwrite" in err


def test_out_paths_that_cannot_be_directories_fail_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 14: ``--out FILE/run`` was a NotADirectoryError traceback after loading the data."""
    blocker = tmp_path / "FILE"
    blocker.write_text("a file")
    missing_data = str(tmp_path / "no-such.csv")  # never read: the path check comes first
    for out, message in (
        (blocker / "run", f"{str(blocker)!r} is a file, not a directory"),
        (blocker / "a" / "b", f"{str(blocker)!r} is a file, not a directory"),
        (blocker, "is a file, but --out needs a directory"),
    ):
        assert main(["--data", missing_data, "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("clf-train: error: --out ") and message in err, err
        assert "Traceback" not in err and "no-such.csv" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]


def test_help_and_readme_quote_the_same_sms_demo_results(capsys: pytest.CaptureFixture) -> None:
    """Issue 14: the --help epilog and the README must not disagree about the main job."""
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    quoted = re.findall(r"(0\.\d{4}) \(n=(\d+)\)", help_text)
    assert len(quoted) == 2  # one per data source
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")
    for accuracy, n in quoted:
        assert f"`test: n={n} accuracy {accuracy}`" in readme
    for seconds in re.search(r"(\d+)-(\d+) s on 2 quiet CPU cores", help_text).groups():
        assert f"| {seconds} s |" in readme
