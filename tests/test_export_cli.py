"""``clf-export`` command line: success output, --overwrite, and every failure leaving no export.

Failure cases: a missing run dir, a run dir without weights, weights that do not fit their
config, a parity failure, an unwritable --out, invalid options. Each exits 1 with a message
that names the problem, and leaves neither --out nor a temporary directory behind.
"""

from __future__ import annotations

import json
import os
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
    assert leftovers(tmp_path) == []


def test_unwritable_out(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    fails([str(run_dir), "--out", str(blocker / "out")], "cannot write the export", capsys)
    if os.geteuid() != 0:  # root ignores permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        fails([str(run_dir), "--out", str(locked / "out")], "cannot write the export", capsys)
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
