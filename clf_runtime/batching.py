"""Input validation, tokenization and length-bucketed batching (numpy only, no onnxruntime).

Pipeline of one chunk of texts: validate -> tokenize (head kept) -> sort by length (stable) ->
cut batches under both a row limit and a token budget (rows x padded length) -> right-pad with
the pad id -> run -> write each row's result back at its original index (unsort).

Input is consumed in chunks (:data:`CHUNK_SIZE` texts) so that a generator of 100k texts never
holds all token lists at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError
from .tokenizer import encode_batch

__all__ = [
    "CALL_COST_TOKENS",
    "CHUNK_SIZE",
    "Batch",
    "check_batch_limits",
    "iter_text_chunks",
    "pad_batch",
    "plan_batches",
    "softmax",
    "tokenize",
]

CHUNK_SIZE = 4096
CALL_COST_TOKENS = 8
"""Fixed cost of one model call, in padded tokens, that :func:`plan_batches` weighs against
padding (chosen by measurement on GPT-2 small; see the README's benchmark section)."""


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


def tokenize(texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each text, at most ``max_length`` (head kept); ``""`` -> ``[50256]``.

    Texts are cut to ``max_length * CHARS_PER_TOKEN_BOUND`` characters first (see
    :mod:`clf_runtime.tokenizer`); NUL bytes and ``<|endoftext|>`` are ordinary text.
    """
    return encode_batch(texts, max_length=max_length)


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
    its longest row would pad the others more than another call costs).
    """
    check_batch_limits(batch_size, max_batch_tokens)
    order = np.argsort(lengths, kind="stable")
    n = len(order)
    if n <= 1:
        return [order] if n else []
    # Cut the sorted rows into consecutive batches that minimise the padded tokens plus a
    # fixed cost per model call (dynamic programming over the cut points): filling every
    # batch to `batch_size` pads its short rows up to its longest one.
    sorted_lengths = np.maximum(np.asarray(lengths, dtype=np.int64)[order], 1)
    cost = np.zeros(n + 1)  # cost[j]: best cost of rows 0..j-1
    take = np.zeros(n + 1, dtype=np.int64)  # rows in the last batch of that best plan
    for j in range(1, n + 1):
        width = int(sorted_lengths[j - 1])  # the longest row of any batch ending at row j-1
        k_max = min(batch_size, j, max(1, max_batch_tokens // width))
        rows = np.arange(1, k_max + 1)
        total = cost[j - rows] + rows * width + CALL_COST_TOKENS
        best = int(np.argmin(total))
        cost[j], take[j] = total[best], rows[best]
    batches: list[np.ndarray] = []
    stop = n
    while stop > 0:
        batches.append(order[stop - take[stop] : stop])
        stop -= int(take[stop])
    return batches[::-1]


def pad_batch(tokens: list[list[int]], index: np.ndarray, pad_id: int) -> Batch:
    """Right-pad the token lists at ``index`` with ``pad_id`` into one (B, T) int64 array."""
    lengths = np.fromiter((len(tokens[i]) for i in index), dtype=np.int64, count=len(index))
    width = int(lengths.max())
    ids = np.full((len(index), width), pad_id, dtype=np.int64)  # (B, T)
    for row, i in enumerate(index):
        seq = tokens[i]
        ids[row, : len(seq)] = seq
    return Batch(index=np.asarray(index, dtype=np.int64), input_ids=ids, lengths=lengths)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax computed in float64, returned as float32: (N, C) -> (N, C), rows sum to 1."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z.astype(np.float32)
