"""Input validation and length-bucketed batching (numpy only, no onnxruntime).

Pipeline of one chunk of texts: validate -> tokenize (head kept, by
:func:`clf_runtime.tokenizer.encode_batch`) -> sort by length (stable) -> cut batches under
both a row limit and a token budget (rows x padded length) -> right-pad with the pad id -> run
-> write each row's result back at its original index (unsort).

Input is consumed in chunks (:data:`CHUNK_SIZE` texts) so that a generator of 100k texts never
holds all token lists at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .batch_plan import plan_min_cost
from .errors import InvalidInputError

__all__ = [
    "CALL_COST_TOKENS",
    "CHUNK_SIZE",
    "Batch",
    "batched_logits",
    "check_batch_limits",
    "iter_text_chunks",
    "pad_batch",
    "plan_batches",
    "softmax",
]

CHUNK_SIZE = 4096
CALL_COST_TOKENS = 8
"""Fixed cost of one model call, in padded tokens, that :func:`plan_batches` weighs against
padding: the plan has the fewest padded tokens plus this many per call."""


def _describe(item: object) -> str:
    return type(item).__name__


def iter_text_chunks(texts: Iterable[str], chunk_size: int = CHUNK_SIZE) -> Iterator[list[str]]:
    """Validate ``texts`` lazily and yield them as lists of at most ``chunk_size`` strings.

    Accepts any iterable of ``str`` (list, tuple, generator, 1-D numpy array of dtype ``str_``
    or ``object`` holding str). A bare ``str`` is refused: iterating it would classify each
    character. Raises :class:`InvalidInputError` naming the index and type of a bad item.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if isinstance(texts, str):
        raise InvalidInputError(
            "predict expects a list of texts; got a single str -- wrap it: predict([text])"
        )
    if isinstance(texts, (bytes, bytearray, memoryview)):
        raise InvalidInputError(
            f"predict expects a list of str; got {_describe(texts)} -- decode it first: "
            "predict([data.decode('utf-8')])"
        )
    if isinstance(texts, np.ndarray):
        if texts.ndim != 1:
            raise InvalidInputError(
                f"predict expects a 1-D array of texts; got an array of shape {texts.shape}"
            )
        if texts.dtype.kind not in ("U", "O"):
            raise InvalidInputError(
                f"predict expects an array of str (dtype str_ or object); got dtype {texts.dtype}"
            )
    try:
        iterator = iter(texts)
    except TypeError as e:
        raise InvalidInputError(
            f"predict expects an iterable of str; got {_describe(texts)}"
        ) from e
    start = 0
    while True:
        chunk = list(itertools.islice(iterator, chunk_size))
        if not chunk:
            return
        for offset, item in enumerate(chunk):
            if not isinstance(item, str):
                raise InvalidInputError(
                    f"text at index {start + offset} is {_describe(item)} ({item!r:.60}); "
                    "expected str. Convert or drop it before calling predict."
                )
        # np.str_ is a str subclass; plain str keeps tiktoken on its fast path.
        yield [str(t) if type(t) is not str else t for t in chunk]
        start += len(chunk)


@dataclass(frozen=True)
class Batch:
    """One padded batch: original row indices and the arrays to feed the model."""

    index: np.ndarray
    """(B,) int64 positions of these rows in the chunk."""
    input_ids: np.ndarray
    """(B, T) int64 right-padded token ids; T is the longest length in the batch."""
    lengths: np.ndarray
    """(B,) int64 number of real tokens per row."""


def check_batch_limits(batch_size: int, max_batch_tokens: int) -> None:
    """Raise ``ValueError`` unless both limits are positive integers."""
    for name, value in (("batch_size", batch_size), ("max_batch_tokens", max_batch_tokens)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def plan_batches(
    lengths: np.ndarray, *, batch_size: int, max_batch_tokens: int
) -> list[np.ndarray]:
    """Group row indices sorted by length into batches.

    A batch has at most ``batch_size`` rows and at most ``max_batch_tokens`` padded tokens
    (rows x longest length), except that a single row longer than the budget forms its own
    batch. Sorting is stable, so equal lengths keep their input order. Among the ways to cut
    the sorted rows into such batches, the one with the fewest padded tokens plus
    :data:`CALL_COST_TOKENS` per batch is taken (a batch is not filled to ``batch_size`` when
    its longest row would pad the others more than another call costs; see
    :func:`clf_runtime.batch_plan.plan_min_cost`).
    """
    check_batch_limits(batch_size, max_batch_tokens)
    return plan_min_cost(
        lengths,
        max_rows=batch_size,
        max_tokens=max_batch_tokens,
        overhead_tokens=CALL_COST_TOKENS,
    )


def pad_batch(tokens: Sequence[Sequence[int]], index: np.ndarray, pad_id: int) -> Batch:
    """Right-pad the token lists at ``index`` with ``pad_id`` into one (B, T) int64 array."""
    lengths = np.fromiter((len(tokens[i]) for i in index), dtype=np.int64, count=len(index))
    width = int(lengths.max())
    ids = np.full((len(index), width), pad_id, dtype=np.int64)  # (B, T)
    for row, i in enumerate(index):
        seq = tokens[i]
        ids[row, : len(seq)] = seq
    return Batch(index=np.asarray(index, dtype=np.int64), input_ids=ids, lengths=lengths)


def batched_logits(
    run: Callable[[np.ndarray, np.ndarray], np.ndarray],
    tokens: Sequence[Sequence[int]],
    *,
    pad_id: int,
    batch_size: int = 32,
    max_batch_tokens: int = 8192,
) -> np.ndarray:
    """Logits of every token list, in input order: (N, C) float32.

    The pipeline of :mod:`clf_runtime.batching` around one model call: rows sorted by length
    and cut under both limits (:func:`plan_batches`), each batch right-padded with ``pad_id``
    (:func:`pad_batch`) and given to ``run(input_ids (B, T), lengths (B,)) -> (B, C)``, every
    result written back at its row's input position. ``run`` is e.g.
    ``functools.partial(clf_runtime.session.run_logits, sess)`` or a
    :meth:`Classifier.run_logits <clf_runtime.Classifier.run_logits>`. Logits
    are returned as ``run`` gave them (non-finite values included: checking is the caller's
    job). No tokens give a (0, 0) array.
    """
    lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
    out: np.ndarray | None = None
    for index in plan_batches(lengths, batch_size=batch_size, max_batch_tokens=max_batch_tokens):
        batch = pad_batch(tokens, index, pad_id)
        logits = np.asarray(run(batch.input_ids, batch.lengths), dtype=np.float32)  # (B, C)
        if out is None:  # the number of labels is known from the first batch on
            out = np.empty((len(tokens), logits.shape[1]), dtype=np.float32)
        out[batch.index] = logits  # unsort
    return np.zeros((0, 0), dtype=np.float32) if out is None else out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax computed in float64, returned as float32: (N, C) -> (N, C), rows sum to 1."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z.astype(np.float32)
