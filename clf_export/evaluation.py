"""The held-out comparison of the exported precisions: accuracy, and agreement with fp32.

Labelled texts come from a run's split or from a ``--eval-data`` file (:class:`EvalSet`).
Every precision's session scores them exactly as the runtime serves them
(:func:`clf_runtime.batching.batched_logits`: sorted by length, cut under the runtime's batch
limits, right-padded, run, unsorted), so the report's numbers are the deployment's numbers.
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clf_runtime.batching import batched_logits
from clf_runtime.contract import split_file
from clf_runtime.session import run_logits
from clf_runtime.tokenizer import END_OF_TEXT_ID, encode_batch

from .errors import ExportError
from .options import FP16, FP32, TEST_SPLIT, ExportOptions
from .parity import compare_logits

__all__ = [
    "EvalSet",
    "EvalTokens",
    "evaluate",
    "evaluate_sessions",
    "read_labelled_file",
    "run_eval_set",
]

_NO_EVAL_DATA = {"skipped": "no evaluation data (see --eval-data)"}


@dataclass(frozen=True)
class EvalSet:
    """Labelled texts for the comparison, and where they came from."""

    texts: list[str]
    labels: list[str]
    """Label names, one per text."""
    source: str
    """A path (a run's split file or the ``--eval-data`` file), for the report."""

    def tokenize(self, labels: Sequence[str], max_length: int) -> EvalTokens:
        """Token ids and label indices for a model with ``labels``; raises :class:`ExportError`
        for an empty set or a label the model does not know."""
        index = {name: i for i, name in enumerate(labels)}
        unknown = sorted({n for n in self.labels if n not in index})
        if unknown:
            raise ExportError(
                f"the evaluation data has labels {unknown[:5]} that the model does not know; "
                f"its labels are {list(labels)}"
            )
        if not self.texts:
            raise ExportError("the evaluation data is empty; pass a file with at least one row")
        return EvalTokens(
            token_ids=encode_batch(self.texts, max_length=max_length),
            label_ids=np.asarray([index[n] for n in self.labels], dtype=np.int64),
            source=self.source,
        )


@dataclass(frozen=True)
class EvalTokens:
    """An :class:`EvalSet` tokenized for one model."""

    token_ids: list[list[int]]
    label_ids: np.ndarray
    """(N,) int64 index of each text's label in the model's label order."""
    source: str


def read_labelled_file(path: str | Path) -> EvalSet:
    """Read evaluation data: JSONL rows ``{"text": ..., "label": ...}`` or a CSV with a header
    holding ``text`` and ``label`` columns."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"evaluation data {path} does not exist; pass a .jsonl or .csv file")
    texts: list[str] = []
    labels: list[str] = []
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            if path.suffix.lower() == ".csv":
                reader = csv.DictReader(fh)
                if not {"text", "label"} <= set(reader.fieldnames or ()):
                    raise ExportError(
                        f"{path} has columns {reader.fieldnames}; expected a header with "
                        "'text' and 'label'"
                    )
                rows: Any = reader
            else:
                rows = (json.loads(line) for line in fh if line.strip())
            for row in rows:
                text, label = str(row["text"]), str(row["label"])  # both, or the row is bad
                texts.append(text)
                labels.append(label)
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, csv.Error) as e:
        raise ExportError(
            f"{path} row {len(texts) + 1} is not a text/label row: {e!r}; expected JSONL "
            '{"text": ..., "label": ...} or a CSV with text,label columns'
        ) from e
    return EvalSet(texts, labels, str(path))


def run_eval_set(run_dir: Path, options: ExportOptions) -> EvalSet | None:
    """The evaluation data of a run export: ``options.eval_data`` when given, else the run's
    ``options.eval_split`` (which must exist: :class:`~clf_train.run_dir.RunDirError`), else
    its test split when it has one, else None."""
    from clf_train.run_dir import read_split

    if options.eval_data is not None:
        return read_labelled_file(options.eval_data)
    split = options.eval_split
    if split is None:
        if not (run_dir / split_file(TEST_SPLIT)).is_file():
            return None
        split = TEST_SPLIT
    texts, labels = read_split(run_dir, split)
    return EvalSet(texts, labels, str(run_dir / split_file(split)))


def evaluate(
    logits: Mapping[str, np.ndarray], label_ids: np.ndarray, *, reference: str = FP32
) -> dict[str, Any]:
    """Accuracy per precision, and agreement / |prob diff| (p50, p99, max) of each one vs
    ``reference``."""
    out: dict[str, Any] = {
        "n": len(label_ids),
        "accuracy": {p: float(np.mean(x.argmax(-1) == label_ids)) for p, x in logits.items()},
    }
    for precision, x in logits.items():
        if precision != reference:
            cmp = compare_logits(logits[reference], x)
            out[f"{precision}_vs_{reference}"] = {
                "argmax_agreement": cmp["argmax_agreement"],
                "p50_abs_prob_diff": cmp["p50_abs_prob_diff"],
                "p99_abs_prob_diff": cmp["p99_abs_prob_diff"],
                "max_abs_prob_diff": cmp["max_abs_prob_diff"],
                "max_abs_logit_diff": cmp["max_abs_logit_diff"],
            }
    return out


def evaluate_sessions(sessions: Mapping[str, Any], data: EvalTokens | None) -> dict[str, Any]:
    """The report's ``evaluation`` entry: every precision's session scored on ``data``."""
    if data is None:
        return dict(_NO_EVAL_DATA)
    logits = {
        precision: batched_logits(
            functools.partial(run_logits, session), data.token_ids, pad_id=END_OF_TEXT_ID
        )
        for precision, session in sessions.items()
    }
    evaluation = {"source": data.source, **evaluate(logits, data.label_ids)}
    if FP16 in sessions:  # CUDA when it really works there, else CPU
        evaluation[f"{FP16}_provider"] = sessions[FP16].get_providers()[0]
    return evaluation
