"""``clf-export`` command line: success output, --overwrite, and every failure leaving no export.

Failure cases: a missing run dir, a run dir without weights, weights that do not fit their
config, a parity failure, an unwritable --out, invalid options. Each exits 1 with a message
that names the problem, and leaves neither --out nor a temporary directory behind.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from test_export import MAX_LENGTH, make_run_dir

from clf_export.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("cli") / "run")


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".export-" in p.name or p.name == "out")


def fails(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``clf-export argv``: it must exit 1 with ``message`` on stderr; return stderr."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err
    return err


def test_export_overwrite_and_stale_files(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.int8.onnx").write_bytes(b"old")  # an older export's files
    (out / "report.json").write_text("{}")
    (out / "notes.txt").write_text("mine")  # not an export file: kept

    argv = [str(run_dir), "--out", str(out), "--threads", "1"]
    err = fails(argv, "already holds an export (model.int8.onnx, report.json)", capsys)
    assert "--overwrite" in err
    assert (out / "model.int8.onnx").read_bytes() == b"old"

    assert main([*argv, "--overwrite"]) == 0
    stdout = capsys.readouterr().out
    assert "parity vs torch: max |logit diff|" in stdout
    assert "accuracy on 40 held-out texts" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "notes.txt", "report.json"]
    report = json.loads((out / "report.json").read_text("utf-8"))
    assert [m["file"] for m in report["models"]] == ["model.onnx"]
    assert report["max_length"] == MAX_LENGTH
    assert leftovers(tmp_path) == ["out"]


def test_stages_are_reported_on_stderr_with_seconds(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(run_dir), "--out", str(tmp_path / "out"), "--quantize", "--fp16", "--threads", "1"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    done = re.findall(r"^clf-export: (\w+): done in \d+\.\d s$", captured.err, flags=re.M)
    assert done == ["load", "trace", "parity", "int8", "fp16", "evaluation", "write"]
    started = re.findall(r"^clf-export: (\w+): .* \.\.\.$", captured.err, flags=re.M)
    assert started == done  # each stage says what it does before it starts
    assert "accuracy of fp32, int8, fp16 on 40 held-out texts" in captured.err
    assert "clf-export:" not in captured.out  # stdout keeps only the summary


def test_missing_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails([str(tmp_path / "nope"), "--out", str(tmp_path / "out")], "does not exist", capsys)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("weights", "model_changes", "message"),
    [
        (False, {}, "lacks model.safetensors"),
        (True, {"d_model": 64}, "does not match its config"),  # the weights have 128
    ],
)
def test_broken_run_dir(
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    weights: bool,
    model_changes: dict[str, int],
    message: str,
) -> None:
    broken = tmp_path / "run"
    broken.mkdir()
    cfg = json.loads((run_dir / "config.json").read_text("utf-8"))
    cfg["model"].update(model_changes)
    (broken / "config.json").write_text(json.dumps(cfg))
    if weights:
        (broken / "model.safetensors").write_bytes((run_dir / "model.safetensors").read_bytes())
    fails([str(broken), "--out", str(tmp_path / "out")], message, capsys)
    assert leftovers(tmp_path) == []


def test_invalid_options_are_reported_together(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(run_dir), "--out", str(tmp_path / "out"), "--threads", "0", "--opset", "0"]
    argv += ["--eval-split", "dev"]
    err = fails(argv, "invalid export options (3 problems)", capsys)
    assert "--threads must be a positive integer, got 0" in err
    assert "--opset must be a positive integer, got 0" in err
    assert "--eval-split must be one of train, val, test, got 'dev'" in err
    assert leftovers(tmp_path) == []


def test_parity_failure(
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import clf_export.parity as parity

    # Tolerance 0 would pass a bit-exact graph; a real difference is forced instead: the
    # torch reference gets shifted logits.
    real = parity.torch_logits
    monkeypatch.setattr(parity, "torch_logits", lambda *a: real(*a) + 1e-3)
    argv = [str(run_dir), "--out", str(tmp_path / "out"), "--quantize", "--threads", "1"]
    err = fails(argv, "disagrees with the torch model", capsys)
    assert "tolerance 0.0001" in err
    assert "clf-export: parity: comparing" in err and "parity: done" not in err  # where it failed
    assert leftovers(tmp_path) == []


def test_unwritable_out(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = str(blocker / "out")
    err = fails([str(run_dir), "--out", out], f"--out {out!r} cannot be created", capsys)
    assert f"{str(blocker)!r} is a file, not a directory" in err and "Errno" not in err
    # Checked up front: before the run dir is even read (this one does not exist).
    err = fails([str(tmp_path / "no-run"), "--out", out], "is a file, not a directory", capsys)
    assert "no-run" not in err
    err = fails(
        [str(run_dir), "--out", str(blocker)], "is a file, but --out needs a directory", capsys
    )
    if os.geteuid() != 0:  # root ignores permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        fails([str(run_dir), "--out", str(locked / "out")], "is not writable", capsys)
        assert list(locked.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) in (["file"], ["file", "locked"])


def test_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "out")])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["--state-dict", "x.pth", "--out", str(tmp_path / "out")])  # no --labels
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["run", "--labels", "a,b", "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    assert list(tmp_path.iterdir()) == []


def test_state_dict_head_mismatch(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    from test_export import chapter6_state_dict

    from clf_train.run_dir import load_run

    pth = tmp_path / "review_classifier.pth"
    torch.save(chapter6_state_dict(load_run(run_dir)[0]), pth)
    argv = ["--state-dict", str(pth), "--labels", "neg,neu,pos", "--out", str(tmp_path / "out")]
    fails(argv, "a 2-class head (out_head with 2 outputs) but --labels names 3", capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["review_classifier.pth"]


def test_state_dict_of_a_small_preset_exports_with_model_name(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 14: ``--model gpt2-tiny`` names a shape; it must not ask for --init random."""
    import torch
    from safetensors.torch import save_file
    from test_export import chapter6_state_dict

    from clf_train.run_dir import load_run

    sd = chapter6_state_dict(load_run(run_dir)[0])
    pth = tmp_path / "ch06.pth"
    torch.save(sd, pth)
    argv = ["--state-dict", str(pth), "--labels", "ham,spam", "--threads", "1"]
    assert main([*argv, "--model", "gpt2-tiny", "--out", str(tmp_path / "tiny")]) == 0
    report = json.loads((tmp_path / "tiny" / "report.json").read_text("utf-8"))
    assert report["source"]["model"] == "gpt2-tiny"
    assert report["parity"]["max_abs_logit_diff"] <= 1e-4
    assert "--init" not in capsys.readouterr().err

    # The wrong shape is refused naming clf-export's own flag, not clf-train's --weights.
    err = fails([*argv, "--model", "gpt2-mini", "--out", str(tmp_path / "x")], "disagree", capsys)
    assert "--model gpt2-mini and --state-dict" in err and "--weights" not in err
    missing = ["--state-dict", str(tmp_path / "nowhere.pth"), "--labels", "ham,spam"]
    err = fails([*missing, "--out", str(tmp_path / "x")], "--state-dict", capsys)
    assert "does not exist" in err and "--weights" not in err
    assert not (tmp_path / "x").exists()

    # A config.json beside a safetensors copy still gives the shape, without --model.
    st = tmp_path / "st" / "ch06.safetensors"
    st.parent.mkdir()
    save_file({k: v for k, v in sd.items() if not k.endswith(".mask")}, str(st))
    cfg = load_run(run_dir)[0].cfg
    hf = {"model_type": "gpt2", "n_embd": cfg.d_model, "n_head": cfg.n_head,
          "n_layer": cfg.n_layer, "n_positions": cfg.context_length,
          "vocab_size": cfg.vocab_size}  # fmt: skip
    (st.parent / "config.json").write_text(json.dumps(hf))
    st_argv = ["--state-dict", str(st), "--labels", "ham,spam", "--threads", "1"]
    assert main([*st_argv, "--out", str(tmp_path / "st-out")]) == 0
