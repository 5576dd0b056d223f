"""Packaging: pyproject metadata without deprecation warnings, the runtime's exact
dependencies, and the README's CPU-only install line kept in step with them (issue 14)."""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
GPU_WHEEL, CPU_WHEEL = "onnxruntime-gpu", "onnxruntime"


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]


def name_of(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]


def test_setuptools_reads_pyproject_without_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    monkeypatch.chdir(ROOT)  # readme and package discovery are relative to the project
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert [str(w.message).splitlines()[0] for w in caught] == []
    assert project()["license"] == "MIT"  # an SPDX expression, not a {text = ...} table
    assert dist.metadata.name == "gpt-clf"


def test_runtime_dependencies_are_exactly_the_documented_three() -> None:
    """`pip install .` is the runtime: onnxruntime (one of its two wheels), numpy, tiktoken."""
    deps = project()["dependencies"]
    assert sorted({name_of(d) for d in deps}) == sorted(["numpy", GPU_WHEEL, CPU_WHEEL, "tiktoken"])
    # The two onnxruntime wheels have complementary markers: never both in one environment.
    gpu = next(d for d in deps if name_of(d) == GPU_WHEEL)
    cpu = next(d for d in deps if name_of(d) == CPU_WHEEL)
    assert "platform_system == 'Linux' and platform_machine == 'x86_64'" in gpu
    assert "platform_system != 'Linux' or platform_machine != 'x86_64'" in cpu


def test_readme_cpu_only_install_matches_the_runtime_dependencies() -> None:
    """The README's one-liner installs the runtime's requirements with the CPU wheel."""
    readme = (ROOT / "README.md").read_text("utf-8")
    (line,) = [ln for ln in readme.splitlines() if ln.startswith("pip install --no-deps ")]
    first, second = line.split(" && ")
    assert shlex.split(first)[:3] == ["pip", "install", "--no-deps"]
    assert shlex.split(second)[:2] == ["pip", "install"]
    documented = set(shlex.split(second)[2:])
    wanted = {
        d.split(";")[0].strip().replace(f"{GPU_WHEEL}>=", f"{CPU_WHEEL}>=")
        for d in project()["dependencies"]
    }
    assert documented == wanted
