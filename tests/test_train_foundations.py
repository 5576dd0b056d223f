"""What every part of clf_train stands on: a torch-free config, one error root, one offline
rule for everything that could download."""

from __future__ import annotations

import importlib
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from clf_train import errors, sms_spam
from clf_train.config import TrainConfig
from clf_train.errors import DataError, PretrainedError, TrainError
from clf_train.offline import OFFLINE_VARS, offline_reason

REPO = Path(__file__).resolve().parents[1]

_LIGHT_IMPORTS = """
import sys
import clf_train, clf_train.config, clf_train.presets, clf_train.errors, clf_train.offline
import clf_train.launch  # the --devices launcher's parent never trains: no torch
from clf_train import PRESETS, GPTConfig, TrainConfig, TrainError
from clf_train.cli import build_parser, config_from_args

cfg = config_from_args(build_parser().parse_args(["--preset", "sms-demo", "--out", "o"]))
cfg.validate().resolved()
assert isinstance(cfg, TrainConfig) and PRESETS[cfg.model].n_layer == 4
print(",".join(m for m in ("torch", "safetensors", "matplotlib") if m in sys.modules) or "none")
"""


def test_config_presets_and_the_cli_parser_do_not_load_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _LIGHT_IMPORTS],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert result.stdout.strip() == "none"


@pytest.mark.parametrize(
    ("module", "name", "builtin_base"),
    [
        ("clf_train.config", "ConfigError", ValueError),
        ("clf_train.data", "DataError", ValueError),
        ("clf_train.pretrained", "PretrainedError", None),
        ("clf_train.trainer", "TrainingError", RuntimeError),
        ("clf_train.checkpoint", "CheckpointError", None),
        ("clf_train.run_dir", "RunDirError", None),
    ],
)
def test_every_error_has_the_one_root_and_keeps_its_import_path_and_base(
    module: str, name: str, builtin_base: type[Exception] | None
) -> None:
    cls = getattr(importlib.import_module(module), name)
    assert cls is getattr(errors, name)  # the old path re-exports the one definition
    assert issubclass(cls, TrainError) and cls is not TrainError
    if builtin_base is not None:
        assert issubclass(cls, builtin_base)  # `except ValueError` callers keep working


def test_real_failures_are_caught_as_train_error(tmp_path: Path) -> None:
    from clf_train.data import load_labeled_file
    from clf_train.pretrained import load_pretrained
    from clf_train.run_dir import load_run

    with pytest.raises(TrainError, match="--lr must be > 0") as e:
        TrainConfig(data="x.csv", out="o", lr=-1).validate()
    assert isinstance(e.value, ValueError)
    with pytest.raises(TrainError, match="does not exist"):
        load_labeled_file(tmp_path / "missing.csv")
    with pytest.raises(TrainError, match="unknown model 'gpt3'"):
        load_pretrained(model="gpt3")
    with pytest.raises(TrainError, match="does not exist"):
        load_run(tmp_path / "no_run")


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize("var", OFFLINE_VARS)
@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_any_offline_variable_with_a_true_value_means_offline(
    online: pytest.MonkeyPatch, var: str, value: str
) -> None:
    assert offline_reason() is None
    online.setenv(var, value)
    assert offline_reason() == f"{var}={value}"


@pytest.mark.parametrize("value", ["", "0", "false", "no", "off", "2"])
def test_other_values_mean_online(online: pytest.MonkeyPatch, value: str) -> None:
    for var in OFFLINE_VARS:
        online.setenv(var, value)
    assert offline_reason() is None


@pytest.mark.parametrize("var", OFFLINE_VARS)
def test_both_downloads_follow_the_one_rule(
    online: pytest.MonkeyPatch, tmp_path: Path, var: str
) -> None:
    """The sms-spam source and pretrained weights by name: each variable stops both."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    online.setenv(var, "1")
    online.delenv("CLF_DATA_DIR", raising=False)
    online.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    online.setenv("HF_HOME", str(tmp_path / "hf_home"))
    online.delenv("HF_HUB_CACHE", raising=False)
    online.delenv("HUGGINGFACE_HUB_CACHE", raising=False)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a download was attempted although {var}=1")

    online.setattr(urllib.request, "urlopen", no_network)
    online.setattr(huggingface_hub, "snapshot_download", no_network)
    online.setattr(sms_spam, "_from_package", lambda: None)

    with pytest.raises(DataError, match=rf"the download was not done \({var}=1\)"):
        sms_spam.find_sms_spam()
    from clf_train.pretrained import load_pretrained

    with pytest.raises(PretrainedError, match=rf"could not be downloaded \(offline: {var}=1\)"):
        load_pretrained(model="gpt2")
