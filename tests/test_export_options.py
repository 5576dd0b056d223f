"""ExportOptions: every bad value reported at once, each naming its flag; the CLI builds it."""

from __future__ import annotations

from pathlib import Path

import pytest

from clf_export import ExportError, ExportOptions
from clf_export.cli import _options, build_parser
from clf_export.options import resolve_options


def test_defaults_are_valid() -> None:
    assert ExportOptions().problems() == []
    assert ExportOptions().validate() == ExportOptions()


def test_every_problem_at_once_naming_the_flag() -> None:
    bad = ExportOptions(
        opset=0,
        max_length=0,
        eval_split="dev",
        eval_data="held_out.jsonl",
        int8_format="s8s8",
        threads=0,
        parity_tolerance=float("nan"),
        external_data_threshold=-1,
    )
    assert bad.problems() == [
        "--opset must be a positive integer, got 0",
        "--max-length must be a positive integer, got 0",
        "--eval-split must be one of train, val, test, got 'dev'",
        "--eval-split and --eval-data both name the evaluation data; pass one",
        "--int8-format must be one of auto, u8s8, u8s8-reduce-range, got 's8s8'",
        "--threads must be a positive integer, got 0",
        "parity_tolerance must be a finite number >= 0, got nan",
        "external_data_threshold must be an integer >= 0 (bytes), got -1",
    ]
    with pytest.raises(ExportError) as e:
        bad.validate()
    lines = str(e.value).splitlines()
    assert lines[0] == "invalid export options (8 problems):"
    assert lines[1:] == [f"  {p}" for p in bad.problems()]


@pytest.mark.parametrize(
    ("field", "value"),
    [("threads", True), ("threads", 1.5), ("max_length", "32"), ("opset", None)],
)
def test_wrong_types_are_problems(field: str, value: object) -> None:
    (problem,) = ExportOptions(**{field: value}).problems()  # type: ignore[arg-type]
    assert problem.endswith(f"got {value!r}")


def test_eval_data_is_a_path() -> None:
    """Not the (texts, labels) pair that export_model once took: a file to read."""
    texts_and_labels = (["hi"], ["ham"])
    assert ExportOptions(eval_data=texts_and_labels).problems() == [  # type: ignore[arg-type]
        "--eval-data must be a file path, got tuple"
    ]
    assert ExportOptions(eval_data=Path("held_out.jsonl")).problems() == []


def test_zero_tolerance_and_threshold_are_allowed() -> None:
    assert ExportOptions(parity_tolerance=0, external_data_threshold=0).problems() == []


def test_keyword_shorthand() -> None:
    base = ExportOptions(quantize=True, threads=2)
    assert resolve_options(None, {}) == ExportOptions()
    assert resolve_options(base, {"fp16": True}) == ExportOptions(
        quantize=True, threads=2, fp16=True
    )
    with pytest.raises(TypeError, match=r"unknown export options \['quantise'\]"):
        resolve_options(None, {"quantise": True})
    with pytest.raises(ExportError, match="--threads must be a positive integer, got -1"):
        resolve_options(base, {"threads": -1})


def test_cli_defaults_are_the_options_defaults() -> None:
    args = build_parser().parse_args(["run", "--out", "exports/a"])
    assert _options(args) == ExportOptions()


def test_cli_flags_map_to_fields() -> None:
    argv = "run --out o --quantize --fp16 --opset 17 --max-length 64 --eval-split val "
    argv += "--int8-format u8s8 --no-quantize-embeddings --threads 3 --overwrite"
    assert _options(build_parser().parse_args(argv.split())) == ExportOptions(
        quantize=True,
        fp16=True,
        opset=17,
        max_length=64,
        eval_split="val",
        int8_format="u8s8",
        quantize_embeddings=False,
        threads=3,
        overwrite=True,
    )
    args = build_parser().parse_args(["run", "--out", "o", "--eval-data", "d.csv"])
    assert _options(args).eval_data == "d.csv"
