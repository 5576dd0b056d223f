"""Length-bucketed batching and the seeds every random choice of training derives from.

Padding every text to the longest one wastes most of the compute on data where most texts
are much shorter than the longest (short messages, a few long ones). Here each epoch sorts
the texts by token length (ties broken by a seeded shuffle), cuts the sorted list into
batches of ``batch_size`` and shuffles the order of the batches; each batch is padded only to
its own longest text. The model reads each text at its own last real token and, under the
causal mask, real tokens never attend to padding (the pooling contract of
:mod:`clf_train.model`), so padding never changes a text's logits: this is purely a
speed-up.

All randomness comes from :func:`derive_seed` of ``(seed, purpose, epoch, step)``: a run
resumed at any step replays exactly the same batches and dropout masks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from clf_runtime.tokenizer import END_OF_TEXT_ID

__all__ = ["PAD_ID", "derive_seed", "epoch_batches", "eval_batches", "pad_ids"]

PAD_ID = END_OF_TEXT_ID


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from ``parts`` (e.g. ``(seed, "batches", epoch)``), stable across runs.

    A hash, not arithmetic, so (seed, epoch, step) triples never collide by accident.
    """
    digest = hashlib.sha256(repr(tuple(parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def epoch_batches(
    lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int
) -> list[list[int]]:
    """The training batches of one epoch: lists of example indices, every example exactly once.

    Examples are sorted by length (equal lengths in a seeded random order), cut into
    consecutive batches of ``batch_size`` and the batch order is shuffled, all with a
    generator seeded from ``(seed, epoch)``.
    """
    n = len(lengths)
    if n == 0:
        return []
    gen = torch.Generator().manual_seed(derive_seed(seed, "batches", epoch))
    perm = torch.randperm(n, generator=gen)  # random tie-break among equal lengths
    lens = torch.as_tensor(list(lengths), dtype=torch.int64)[perm]
    order = perm[torch.argsort(lens, stable=True)].tolist()
    chunks = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    batch_perm = torch.randperm(len(chunks), generator=gen).tolist()
    return [chunks[i] for i in batch_perm]


def eval_batches(
    lengths: Sequence[int], batch_size: int, *, indices: Sequence[int] | None = None
) -> list[list[int]]:
    """Deterministic batches for evaluation and caching: sorted by length, no shuffle.

    ``indices``: only these examples (a rank's own texts); default all of them.
    """
    pool = range(len(lengths)) if indices is None else indices
    order = sorted(pool, key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_ids(
    seqs: Sequence[Sequence[int]], *, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to the batch's own max: ``(ids (B, T), lengths (B,))``."""
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), PAD_ID, dtype=torch.int64)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.as_tensor(s, dtype=torch.int64)
    lengths = torch.as_tensor([len(s) for s in seqs], dtype=torch.int64)
    return ids.to(device), lengths.to(device)
