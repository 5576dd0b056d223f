"""The runtime is embeddable: importing it must not load torch (nor need onnx), nor the web
stack of the `serve` extra; the server itself must not load torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_CODE = """
import sys
import clf_runtime
from clf_runtime import Classifier
from clf_runtime import bench, bench_cli, predict_cli, session, batching, batcher
{extra}
heavy = sorted(m for m in {modules!r} if m in sys.modules)
print(",".join(heavy) or "none")
"""
_TRAINING = ("torch", "onnx", "transformers", "matplotlib")
# The `serve` extra: only clf_runtime.serve.app and the CLI may import it.
_WEB = (
    "starlette",
    "uvicorn",
    "prometheus_client",
    "anyio",
    "httptools",
    "uvloop",
    "httpx",
    "selenium",
)


def _run(extra: str = "", modules: tuple[str, ...] = _TRAINING + _WEB) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _CODE.format(extra=extra, modules=modules)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout.strip()


def test_import_does_not_load_torch_onnx_or_the_web_stack() -> None:
    assert _run() == "none"


def test_serve_config_and_cli_import_without_the_web_stack() -> None:
    # The CLI checks for the extra before importing it, to print an install hint.
    assert _run("from clf_runtime.serve import ServeConfig, cli") == "none"


def test_the_server_does_not_load_torch_or_onnx(tiny_export_dir: Path) -> None:
    extra = (
        "from clf_runtime.serve import create_app\n"
        f"app = create_app({str(tiny_export_dir)!r})\n"
        "import starlette, uvicorn, prometheus_client\n"
    )
    assert _run(extra, modules=_TRAINING) == "none"


def test_loading_and_predicting_does_not_load_torch_or_onnx(tiny_export_dir: Path) -> None:
    extra = (
        f"clf = Classifier.load({str(tiny_export_dir)!r}, providers='cpu', threads=1)\n"
        "assert len(clf.predict(['hello', ''])) == 2\n"
    )
    assert _run(extra) == "none"


@pytest.mark.parametrize(
    "module",
    [
        "clf_runtime",
        "clf_runtime.predict_cli",
        "clf_runtime.bench_cli",
        "clf_runtime.batcher",
        "clf_runtime.serve",
        "clf_runtime.serve.app",
        "clf_runtime.serve.cli",
    ],
)
def test_public_names_exist(module: str) -> None:
    mod = __import__(module, fromlist=["__all__"])
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name}"


@pytest.mark.parametrize(
    ("module", "missing", "hint"),
    [
        ("clf_train.cli", "torch", "pip install 'gpt-clf[train]'"),
        ("clf_export.cli", "onnx", "pip install 'gpt-clf[export]'"),
        ("clf_runtime.serve.cli", "starlette", "pip install 'gpt-clf[serve]'"),
    ],
)
def test_clis_explain_a_missing_extra(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    module: str,
    missing: str,
    hint: str,
) -> None:
    import importlib
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a)
    )
    assert importlib.import_module(module).main(["--help"]) == 2
    err = capsys.readouterr().err
    assert f"{missing}" in err and hint in err
