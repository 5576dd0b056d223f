"""Freeze the lower part of the model and compute it once: the main source of training speed.

Frozen blocks never change, so their output for a given text never changes either. With
``--trainable last-N-blocks`` the embeddings and blocks ``[:n_layer-N]`` run once per text
(eval mode, no grad) and each text's residual stream ``(T_i, C)`` is kept; training then runs
only :meth:`GPTClassifier.forward_from_block`. With ``--trainable head`` the pooled final
features ``(C,)`` are kept and only the linear head trains. With ``--trainable all`` nothing
is frozen and batches carry token ids. ``--trainable lora`` sets its own top
(:func:`clf_train.lora.make_trainable`): the blocks below the lowest adapted one are frozen in
full and cached the same way.

The frozen part always runs in eval mode: dropout acts only inside the trainable blocks, so
the cached values are deterministic (and a resumed run recomputes the very same cache).
If the cache would exceed ``budget_bytes`` the store computes the frozen part per batch
instead (same values, more time) and logs it.

In a multi-process run each rank's store *holds* only the texts that rank owns
(:func:`clf_train.distributed.text_owners`): it caches and serves those alone, while
``lengths`` still covers the whole split, since every rank computes the same global batches.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .batches import PAD_ID, eval_batches, pad_ids
from .model import GPTClassifier, pool

__all__ = [
    "CACHE_BUDGET_BYTES",
    "FeatureStore",
    "TopSpec",
    "apply_trainable",
    "build_store",
    "forward_top",
]

logger = logging.getLogger(__name__)

CACHE_BUDGET_BYTES = 4 * 1024**3
CACHE_BATCH = 64  # texts per batch while filling the cache


@dataclass(frozen=True)
class TopSpec:
    """Where the trainable top starts.

    ``mode``: "ids" (everything trains; inputs are token ids), "blocks" (inputs are the
    residual stream entering block ``start``) or "pooled" (inputs are pooled final features,
    only the head trains).
    """

    mode: str
    start: int = 0


def apply_trainable(model: GPTClassifier, n_top: int | None) -> TopSpec:
    """Set ``requires_grad`` per ``--trainable`` and return where the trainable top starts.

    ``n_top``: blocks to train (0: head only; None: everything). Training any block also
    trains the final LayerNorm, as the published recipe does. The head always trains.
    """
    n_layer = len(model.backbone.blocks)
    if n_top is None:
        for p in model.parameters():
            p.requires_grad_(True)
        return TopSpec("ids")
    if n_top > n_layer:
        raise ValueError(f"cannot train the last {n_top} blocks of a {n_layer}-block model")
    for p in model.parameters():
        p.requires_grad_(False)
    trainable: list[nn.Module] = [model.head]
    if n_top > 0:
        trainable += [*model.backbone.blocks[n_layer - n_top :], model.backbone.ln_f]
    for module in trainable:
        for p in module.parameters():
            p.requires_grad_(True)
    return TopSpec("pooled" if n_top == 0 else "blocks", n_layer - n_top)


def forward_top(
    model: GPTClassifier, spec: TopSpec, inputs: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Logits (B, num_labels) from a batch produced by :class:`FeatureStore`.

    With last-token pooling only the last real position leaves the top block, so that block
    runs its query, MLP, final norm and head on one position per row (``Block.forward_last``;
    the same logits as the full block, a fraction of the work). Not while training with
    dropout: ``forward_last`` applies no attention/residual dropout.
    """
    if spec.mode == "pooled":
        return model.head(inputs)
    bb = model.backbone
    last_only = model.pooling == "last" and (not model.training or model.cfg.dropout == 0.0)
    if not last_only:
        if spec.mode == "ids":
            return model(inputs, lengths)
        return model.forward_from_block(inputs, lengths, spec.start)
    x = bb.embed(inputs) if spec.mode == "ids" else inputs  # (B, T, C)
    x = bb.run_blocks(x, spec.start, len(bb.blocks) - 1)
    return model.head(bb.ln_f(bb.blocks[-1].forward_last(x, lengths)))  # (B, num_labels)


@contextlib.contextmanager
def _frozen_eval(model: GPTClassifier) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class FeatureStore:
    """Per-example inputs of the trainable top, for one split; ``batch(indices)`` builds a batch.

    ``ids``: token id lists of the whole split. ``held``: the indices this store serves (this
    rank's texts; default all). In "blocks"/"pooled" mode the frozen part of the held texts
    is computed once (``cached``) or per batch when the cache did not fit the memory budget.
    """

    def __init__(
        self,
        model: GPTClassifier,
        spec: TopSpec,
        ids: Sequence[Sequence[int]],
        *,
        device: torch.device,
        frozen_dtype: torch.dtype = torch.float32,
        cache: bool = True,
        held: Sequence[int] | None = None,
    ) -> None:
        self.model = model
        self.spec = spec
        self.lengths = [len(s) for s in ids]
        """Token count of every text of the split, held or not (the global batches need all)."""
        self.held = list(range(len(ids))) if held is None else sorted(set(held))
        """Indices of the texts this store serves, ascending."""
        self._slot = {i: k for k, i in enumerate(self.held)}  # split index -> row of this store
        self._ids = [list(ids[i]) for i in self.held]
        self.device = device
        self.frozen_dtype = frozen_dtype
        self.cached = cache and spec.mode != "ids"
        self._flat: torch.Tensor | None = None  # "blocks": (sum T_i, C); "pooled": (N, C)
        self._offsets: list[int] = []
        if self.cached:
            self._fill()

    def __len__(self) -> int:
        """Texts in the split (held by this store or not)."""
        return len(self.lengths)

    def mine(self, idx: Sequence[int]) -> list[int]:
        """The members of ``idx`` this store holds, in order."""
        return [i for i in idx if i in self._slot]

    def _slots(self, idx: Sequence[int]) -> list[int]:
        try:
            return [self._slot[i] for i in idx]
        except KeyError as e:
            raise ValueError(
                f"text {e.args[0]} is not held by this store (another rank owns it)"
            ) from e

    def placeholder(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A one-text, one-token batch of this store's kind, for a rank that owns no text of
        an optimizer step but must still run the step's backward (its loss weight is 0)."""
        lengths = torch.ones(1, dtype=torch.int64, device=self.device)
        c = self.model.cfg.d_model
        if self.spec.mode == "ids":
            return torch.full((1, 1), PAD_ID, dtype=torch.int64, device=self.device), lengths
        if self.spec.mode == "pooled":
            return torch.zeros((1, c), device=self.device), lengths  # (1, C)
        return torch.zeros((1, 1, c), device=self.device), lengths  # (1, 1, C)

    def _frozen(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The frozen part on padded ids: (B, T, C) residual stream or (B, C) pooled features."""
        bb = self.model.backbone
        with _frozen_eval(self.model), _autocast(self.device, self.frozen_dtype):
            x = bb.run_blocks(bb.embed(ids), 0, self.spec.start)  # (B, T, C)
            if self.spec.mode == "pooled":
                x = pool(bb.ln_f(x), lengths, self.model.pooling)  # (B, C)
        return x

    def _fill(self) -> None:
        n = len(self.held)
        c = self.model.cfg.d_model
        held_lengths = [self.lengths[i] for i in self.held]
        rows = n if self.spec.mode == "pooled" else sum(held_lengths)
        flat = torch.empty((rows, c), dtype=self.frozen_dtype, device=self.device)
        offsets = [0] * n  # by slot (row of this store), not by split index
        if self.spec.mode == "blocks":
            acc = 0
            for k, length in enumerate(held_lengths):
                offsets[k] = acc
                acc += length
        for idx in eval_batches(self.lengths, CACHE_BATCH, indices=self.held):
            slots = self._slots(idx)
            ids, lengths = pad_ids([self._ids[k] for k in slots], device=self.device)
            out = self._frozen(ids, lengths).to(self.frozen_dtype)
            for row, k in enumerate(slots):
                if self.spec.mode == "pooled":
                    flat[k] = out[row]
                else:
                    t = held_lengths[k]
                    flat[offsets[k] : offsets[k] + t] = out[row, :t]
        self._flat, self._offsets = flat, offsets

    def batch(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, lengths)`` for examples ``idx``; inputs are ids (B, T), float (B, T, C)
        residual streams or float (B, C) pooled features, per the mode. Every index must be
        held by this store."""
        slots = self._slots(idx)
        lengths = torch.as_tensor([self.lengths[i] for i in idx], dtype=torch.int64)
        lengths = lengths.to(self.device)
        if not self.cached:
            ids, lengths = pad_ids([self._ids[k] for k in slots], device=self.device)
            if self.spec.mode == "ids":
                return ids, lengths
            return self._frozen(ids, lengths).float(), lengths
        assert self._flat is not None  # set by _fill whenever cached
        if self.spec.mode == "pooled":
            rows = torch.as_tensor(slots, dtype=torch.int64, device=self.device)
            return self._flat[rows].float(), lengths
        parts = [
            self._flat[self._offsets[k] : self._offsets[k] + self.lengths[i]]
            for k, i in zip(slots, idx, strict=True)
        ]
        x = nn.utils.rnn.pad_sequence(parts, batch_first=True)  # (B, T, C), zero padded
        return x.float(), lengths


def estimate_cache_bytes(
    spec: TopSpec, token_counts: Sequence[int], d_model: int, itemsize: int
) -> int:
    """Bytes the caches would take: tokens x C x itemsize ("blocks"), texts x C ("pooled")."""
    if spec.mode == "ids":
        return 0
    rows = len(token_counts) if spec.mode == "pooled" else sum(token_counts)
    return rows * d_model * itemsize


def build_store(
    model: GPTClassifier,
    spec: TopSpec,
    splits: dict[str, Sequence[Sequence[int]]],
    *,
    device: torch.device,
    frozen_dtype: torch.dtype = torch.float32,
    budget_bytes: int = CACHE_BUDGET_BYTES,
    held: dict[str, Sequence[int]] | None = None,
) -> dict[str, FeatureStore]:
    """One :class:`FeatureStore` per split, cached when all of them fit ``budget_bytes``.

    ``held``: per split, the indices this rank owns (default: every text); the budget
    applies to the held texts, i.e. to this rank's memory.
    """
    itemsize = torch.empty((), dtype=frozen_dtype).element_size()
    held = held or {}
    counts = [
        len(ids[i])
        for name, ids in splits.items()
        for i in (held[name] if name in held else range(len(ids)))
    ]
    need = estimate_cache_bytes(spec, counts, model.cfg.d_model, itemsize)
    cache = need <= budget_bytes
    if spec.mode != "ids":
        if cache:
            logger.info("caching the frozen part: %.1f MiB (%s)", need / 2**20, spec.mode)
        else:
            logger.warning(
                "the frozen-part cache would take %.2f GiB, over the %.2f GiB budget: "
                "recomputing the frozen blocks every step instead (slower, same results)",
                need / 2**30,
                budget_bytes / 2**30,
            )
    return {
        name: FeatureStore(
            model,
            spec,
            ids,
            device=device,
            frozen_dtype=frozen_dtype,
            cache=cache,
            held=held.get(name),
        )
        for name, ids in splits.items()
    }
