"""Up-front path checks shared by the CLIs: outputs that cannot be written, model mix-ups."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clf_runtime.contract import CHECKPOINT_DIR, MODEL_FILES, RUN_CONFIG_FILE, RUN_WEIGHTS_FILE
from clf_runtime.errors import ModelLoadError
from clf_runtime.paths import OutputPathError, check_model_path, check_output_path


def test_output_file_checks(tmp_path: Path) -> None:
    a_file = tmp_path / "FILE"
    a_file.write_text("x")
    assert check_output_path(tmp_path / "new" / "deeper" / "out.jsonl", flag="-o").name == (
        "out.jsonl"
    )
    assert check_output_path(a_file, flag="-o") == a_file  # replaced atomically by the writer
    cases = [
        (a_file / "out.jsonl", {}, "'FILE' is a file, not a directory"),
        (a_file / "sub" / "out.jsonl", {}, "is a file, not a directory"),
        (tmp_path, {}, "is a directory, but -o needs a file name"),
        (a_file, {"overwrite": False}, "already exists. Pass --overwrite"),
        ("", {}, "-o is empty"),
    ]
    for path, kwargs, message in cases:
        with pytest.raises(OutputPathError) as info:
            check_output_path(path, flag="-o", **kwargs)
        assert message.replace("'FILE'", repr(str(a_file))) in str(info.value), str(info.value)
    assert not (a_file.parent / "new").exists()  # checking creates nothing


def test_output_dir_checks(tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "f").write_text("x")
    assert check_output_path(tmp_path / "empty", flag="--out", kind="dir", overwrite=False)
    assert check_output_path(full, flag="--out", kind="dir", overwrite=True)
    with pytest.raises(OutputPathError, match=r"not empty\. Pass --force to replace it"):
        check_output_path(full, flag="--out", kind="dir", overwrite=False, overwrite_flag="--force")
    with pytest.raises(OutputPathError, match="is a file, but --out needs a directory"):
        check_output_path(tmp_path / "f", flag="--out", kind="dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_output_in_read_only_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OutputPathError, match="is not writable"):
        check_output_path(locked / "out.json", flag="--json")


def test_model_path_mix_ups(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_CONFIG_FILE).write_text("{}")
    (run / RUN_WEIGHTS_FILE).write_bytes(b"x")
    resumable = tmp_path / "resumable"
    (resumable / CHECKPOINT_DIR).mkdir(parents=True)
    (resumable / RUN_CONFIG_FILE).write_text("{}")
    data = tmp_path / "data.csv"
    data.write_text("text\nhello\n")
    text_model = tmp_path / "notes"
    text_model.write_text("just some text\n")
    cases = [
        (run, "is a clf-train run directory, not an exported model: export it with `clf-export"),
        (resumable, "clf-train run directory"),
        (tmp_path / "empty", "holds no model file"),
        (data, "looks like a data file, not a model. The first argument is the model"),
        (text_model, "looks like a data file"),
        (tmp_path / "missing", "does not exist. The first argument is the model"),
    ]
    (tmp_path / "empty").mkdir()
    for path, message in cases:
        with pytest.raises(ModelLoadError) as info:
            check_model_path(path)
        assert message in str(info.value)
    export = tmp_path / "export"
    export.mkdir()
    (export / MODEL_FILES["int8"]).write_bytes(b"\x08\x07")
    assert check_model_path(export) == export
    onnx_like = tmp_path / "model.bin"
    onnx_like.write_bytes(b"\x08\x07\x12\x07pytorch")  # protobuf, not text: left to the loader
    assert check_model_path(onnx_like) == onnx_like
