"""Run exported graphs with onnxruntime and compare them: against torch, and with each other.

Three jobs, all numpy on the ONNX side:

- :func:`parity_inputs` makes the seeded probe batches (batch 1 x length 1, a mixed-length
  padded batch, batch 2 x ``max_length``, a shape the tracer never saw);
- :func:`check_parity` compares the fp32 graph with the torch model (eval, fp32, the *full*
  ``forward``, so the graph's last-position shortcut is checked too) and raises
  :class:`~clf_export.errors.ParityError` above the tolerance;
- :func:`batched_logits` / :func:`evaluate` score a labelled set the way the runtime does
  (sort by length, pad to the batch maximum, unsort) and compare precisions.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExportError, ParityError

__all__ = [
    "PARITY_TOLERANCE",
    "batched_logits",
    "check_parity",
    "compare_logits",
    "evaluate",
    "make_session",
    "pad_batch",
    "parity_inputs",
    "read_labelled_file",
    "run_logits",
    "softmax",
]

PARITY_TOLERANCE = 1e-4
"""Largest |logit difference| allowed between the fp32 graph and the torch model."""

# (batch, sequence, lengths): the first three are the brief's fixed probes; the last one has a
# batch size and a length that the trace (batch 2, sequence 8) never saw. Every length and the
# sequence are clipped to max_length; "max" stands for max_length.
_PROBES: tuple[tuple[int, int | str, tuple[int | str, ...] | None], ...] = (
    (1, 1, (1,)),
    (3, 17, (17, 3, 9)),
    (2, "max", ("max", None)),  # None: a random length
    (5, 33, (33, None, None, None, 1)),
)


def make_session(
    path: str | Path, *, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int | None
) -> Any:
    """An onnxruntime session for ``path`` with explicit providers and thread count.

    ``threads=None`` leaves onnxruntime's default (one thread per physical core).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=list(providers))
    except Exception as e:  # onnxruntime raises its own untyped errors
        raise ExportError(f"onnxruntime cannot load the exported model {path}: {e}") from e


def run_logits(session: Any, input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Logits (B, C) float32 for right-padded ``input_ids`` (B, T) and ``lengths`` (B,)."""
    (logits,) = session.run(
        ["logits"],
        {"input_ids": input_ids.astype(np.int64), "lengths": lengths.astype(np.int64)},
    )
    return np.asarray(logits)


def parity_inputs(
    max_length: int, *, vocab_size: int, pad_token_id: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded probe batches ``(input_ids (B, T) int64, lengths (B,) int64)``, right-padded.

    Positions at or after a row's length hold ``pad_token_id`` (as the runtime pads), or
    ``vocab_size - 1`` when the pad id does not exist in a smaller vocabulary.
    """
    rng = np.random.default_rng(seed)
    pad = pad_token_id if pad_token_id < vocab_size else vocab_size - 1
    out = []
    for batch, seq, lens in _PROBES:
        t = max_length if seq == "max" else min(int(seq), max_length)
        lengths = []
        for length in lens or ():
            if length is None:
                lengths.append(int(rng.integers(1, t + 1)))
            else:
                lengths.append(min(t, max_length if length == "max" else int(length)))
        lengths_arr = np.asarray(lengths[:batch], dtype=np.int64)
        ids = rng.integers(0, vocab_size, size=(batch, t), dtype=np.int64)
        ids[np.arange(t)[None, :] >= lengths_arr[:, None]] = pad
        out.append((ids, lengths_arr))
    return out


def torch_logits(model: Any, input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The reference: the torch model's full ``forward`` in eval mode, fp32, on CPU."""
    import torch

    with torch.no_grad():
        logits = model(torch.from_numpy(input_ids), torch.from_numpy(lengths))
    return logits.float().cpu().numpy()


def check_parity(
    session: Any,
    model: Any,
    inputs: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    tolerance: float = PARITY_TOLERANCE,
) -> dict[str, Any]:
    """Compare the graph with the torch model on every probe; raise :class:`ParityError`.

    Returns the parity table: per shape the max |logit difference|, plus the overall maximum.
    """
    rows = []
    for ids, lengths in inputs:
        want = torch_logits(model, ids, lengths)
        got = run_logits(session, ids, lengths)
        if got.shape != want.shape:
            raise ParityError(
                f"the ONNX graph returned logits of shape {got.shape} for input_ids "
                f"{ids.shape}; the torch model returns {want.shape}"
            )
        diff = float(np.max(np.abs(got - want))) if np.all(np.isfinite(got)) else float("inf")
        rows.append(
            {
                "batch": int(ids.shape[0]),
                "sequence": int(ids.shape[1]),
                "lengths": [int(x) for x in lengths],
                "max_abs_logit_diff": diff,
            }
        )
    worst = max(r["max_abs_logit_diff"] for r in rows)
    table = {
        "reference": "torch GPTClassifier.forward, eval mode, fp32, CPU",
        "tolerance": tolerance,
        "shapes": rows,
        "max_abs_logit_diff": worst,
    }
    if not worst <= tolerance:  # also catches NaN / inf
        bad = ", ".join(
            f"{r['batch']}x{r['sequence']}: {r['max_abs_logit_diff']:.3g}"
            for r in rows
            if not r["max_abs_logit_diff"] <= tolerance
        )
        raise ParityError(
            f"the exported ONNX graph disagrees with the torch model: max |logit diff| {bad} "
            f"(batch x sequence), tolerance {tolerance:g}. Nothing was written. This is a bug "
            "in the export (a shape baked in at trace time, an unsupported op); please report "
            "it with the run's config.json."
        )
    return table


def compare_logits(ref: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Max |logit diff|, |probability diff| (per text: its largest over labels; p50, p99 and
    max over texts) and argmax agreement of ``other`` vs ``ref``."""
    per_text = np.abs(softmax(other) - softmax(ref)).max(axis=-1)  # (N,)
    return {
        "max_abs_logit_diff": float(np.max(np.abs(other - ref))),
        "p50_abs_prob_diff": float(np.percentile(per_text, 50)),
        "p99_abs_prob_diff": float(np.percentile(per_text, 99)),
        "max_abs_prob_diff": float(np.max(per_text)),
        "argmax_agreement": float(np.mean(other.argmax(-1) == ref.argmax(-1))),
    }


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable)."""
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def pad_batch(seqs: Sequence[Sequence[int]], pad_token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token lists to the longest one: ``(input_ids (B, T), lengths (B,))``."""
    lengths = np.asarray([len(s) for s in seqs], dtype=np.int64)
    ids = np.full((len(seqs), int(lengths.max())), pad_token_id, dtype=np.int64)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = seq
    return ids, lengths


def batched_logits(
    session: Any,
    token_ids: Sequence[Sequence[int]],
    *,
    pad_token_id: int,
    batch_size: int = 32,
) -> np.ndarray:
    """Logits (N, C) for every sequence: sorted by length, padded per batch, then unsorted."""
    order = np.argsort([len(s) for s in token_ids], kind="stable")
    parts = []
    for start in range(0, len(order), batch_size):
        chunk = [token_ids[i] for i in order[start : start + batch_size]]
        ids, lengths = pad_batch(chunk, pad_token_id)
        parts.append(run_logits(session, ids, lengths))
    sorted_logits = np.concatenate(parts, axis=0)
    logits = np.empty_like(sorted_logits)
    logits[order] = sorted_logits
    return logits


def evaluate(
    logits: Mapping[str, np.ndarray], label_ids: np.ndarray, *, reference: str = "fp32"
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


def read_labelled_file(path: str | Path) -> tuple[list[str], list[str]]:
    """Read evaluation data: JSONL rows ``{"text": ..., "label": ...}`` or a CSV with a header
    holding ``text`` and ``label`` columns. Returns (texts, label names)."""
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
                texts.append(str(row["text"]))
                labels.append(str(row["label"]))
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, csv.Error) as e:
        raise ExportError(
            f"{path} row {len(texts) + 1} is not a text/label row: {e!r}; expected JSONL "
            '{"text": ..., "label": ...} or a CSV with text,label columns'
        ) from e
    return texts, labels
