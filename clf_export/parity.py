"""Run exported graphs with onnxruntime and compare them with torch and with each other.

On the runtime's own pieces: sessions from :func:`clf_runtime.session.create_session` (the
runtime's explicit session options), logits from :func:`clf_runtime.session.run_logits`,
probabilities from :func:`clf_runtime.batching.softmax`.

- :func:`parity_inputs` makes the seeded probe batches (batch 1 x length 1, a mixed-length
  padded batch, batch 2 x ``max_length``, a shape the tracer never saw);
- :func:`check_parity` compares the fp32 graph with the torch model (eval, fp32, the *full*
  ``forward``, so the graph's last-position shortcut is checked too) and raises
  :class:`~clf_export.errors.ParityError` above the tolerance;
- :class:`ProbeLogits` keeps the fp32 graph's answers to the probes, the reference that the
  int8 and fp16 graphs are compared with (:func:`compare_logits`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clf_runtime.batching import softmax
from clf_runtime.errors import ModelLoadError
from clf_runtime.session import CPU, create_session, run_logits

from .errors import ExportError, ParityError
from .options import PARITY_TOLERANCE

__all__ = [
    "ProbeLogits",
    "check_parity",
    "compare_logits",
    "make_session",
    "parity_inputs",
    "torch_logits",
]

# (batch, sequence, lengths): batch 1 x length 1, a mixed-length padded batch and a full-length
# batch, then one whose batch size and length the trace (batch 2, sequence 8) never saw. Every
# length and the sequence are clipped to max_length; "max" stands for max_length.
_PROBES: tuple[tuple[int, int | str, tuple[int | str | None, ...]], ...] = (
    (1, 1, (1,)),
    (3, 17, (17, 3, 9)),
    (2, "max", ("max", None)),  # None: a random length
    (5, 33, (33, None, None, None, 1)),
)


def make_session(
    path: Path,
    *,
    providers: Sequence[str] = (CPU,),
    threads: int | None,
    log_severity_level: int | None = None,
) -> Any:
    """An onnxruntime session for the exported file at ``path`` (see
    :func:`clf_runtime.session.create_session`); raises :class:`ExportError` if it cannot load.
    """
    try:
        return create_session(
            path, providers=providers, threads=threads, log_severity_level=log_severity_level
        )
    except ModelLoadError as e:
        raise ExportError(
            f"onnxruntime cannot load the exported model {path.name}: {e.__cause__ or e}"
        ) from e


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
        for length in lens:
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


@dataclass(frozen=True)
class ProbeLogits:
    """A graph's logits on the probe batches: the fp32 graph's are the reference of the others."""

    inputs: list[tuple[np.ndarray, np.ndarray]]
    """The probe batches, ``(input_ids (B, T), lengths (B,))`` (see :func:`parity_inputs`)."""
    outputs: list[np.ndarray]
    """The graph's logits (B, C) for each probe batch."""

    @classmethod
    def run(cls, session: Any, inputs: Sequence[tuple[np.ndarray, np.ndarray]]) -> ProbeLogits:
        """Run ``session`` on every probe batch."""
        return cls(list(inputs), [run_logits(session, ids, lengths) for ids, lengths in inputs])

    def compare(self, session: Any) -> dict[str, float] | None:
        """:func:`compare_logits` of ``session`` against these logits, on the same probes;
        None when ``session`` answers a non-finite logit."""
        got = np.concatenate(ProbeLogits.run(session, self.inputs).outputs)
        if not np.all(np.isfinite(got)):
            return None
        return compare_logits(np.concatenate(self.outputs), got)


def check_parity(
    graph: ProbeLogits, model: Any, *, tolerance: float = PARITY_TOLERANCE
) -> dict[str, Any]:
    """Compare the graph's probe logits with the torch model's; raise :class:`ParityError`.

    Returns the parity table: per shape the max |logit difference|, plus the overall maximum.
    """
    rows = []
    for (ids, lengths), got in zip(graph.inputs, graph.outputs, strict=True):
        want = torch_logits(model, ids, lengths)
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
