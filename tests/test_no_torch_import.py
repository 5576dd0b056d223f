"""The runtime is embeddable: importing it must not load torch (nor need onnx).

Nor any optional dependency: Ray (and the pandas/pyarrow it brings) loads only when a Ray job
runs, tqdm only when a CLI draws a progress bar, matplotlib only for ``clf-bench --plot``, the
web stack of the `serve` extra only in the server; the server itself must not load torch.
"""

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
from clf_runtime import columns, inputs, paths, progress
import clf_runtime.ray, clf_runtime.ray_job
{extra}
heavy = sorted(m for m in {modules!r} if m in sys.modules)
print(",".join(heavy) or "none")
"""
_OPTIONAL = ("torch", "onnx", "transformers", "matplotlib", "ray", "pandas", "pyarrow", "tqdm")
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


def _run(extra: str = "", modules: tuple[str, ...] = _OPTIONAL + _WEB) -> str:
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


def test_reading_texts_and_checking_paths_load_nothing_optional(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("id,Text\n1,hello\n", encoding="utf-8")
    extra = (
        f"assert inputs.count_rows({str(src)!r}, id_col='id') == 1\n"
        f"paths.check_output_path({str(tmp_path / 'out.jsonl')!r}, flag='-o')\n"
        "bench_cli.build_parser(); predict_cli.build_parser()\n"
    )
    assert _run(extra) == "none"


def test_ray_module_explains_a_missing_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import clf_runtime.ray
    from clf_runtime.errors import ClassifierError

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(ClassifierError, match=r"pip install 'gpt-clf\[ray\]'"):
        clf_runtime.ray.read_dataset([])


def test_serve_config_and_cli_import_without_the_web_stack() -> None:
    # The CLI checks for the extra before importing it, to print an install hint.
    assert _run("from clf_runtime.serve import ServeConfig, cli") == "none"


def test_the_server_does_not_load_torch_or_onnx(tiny_export_dir: Path) -> None:
    extra = (
        "from clf_runtime.serve import create_app\n"
        f"app = create_app({str(tiny_export_dir)!r})\n"
        "import starlette, uvicorn, prometheus_client\n"
    )
    assert _run(extra, modules=_OPTIONAL) == "none"


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
        "clf_runtime.ray",
        "clf_runtime.ray_job",
        "clf_runtime.inputs",
        "clf_runtime.paths",
        "clf_runtime.columns",
        "clf_runtime.progress",
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
