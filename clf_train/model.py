"""GPT-2 architecture with a classification head.

The pooling contract, shared with the exported graph and the runtime: inputs are right-padded
token ids ``[B, T]`` plus ``lengths [B]``; the classifier reads the hidden state at
``lengths - 1``, the last *real* token (or, with ``pooling="mean"``, averages the real
tokens). Under the causal mask real tokens never attend to padding, so no attention mask is
needed and a text's logits do not depend on its batch mates or on its padding.

The shapes (:class:`GPTConfig`, :data:`PRESETS`) live in the torch-free
:mod:`clf_train.presets` and are re-exported here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clf_runtime.contract import POOLINGS

from .presets import PRESETS, GPTConfig

__all__ = ["PRESETS", "GPTBackbone", "GPTClassifier", "GPTConfig"]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.d_model = cfg.d_model
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.qkv_bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.n_head, self.d_model // self.n_head).transpose(
            1, 2
        )  # (B, H, n, hd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape  # (B, T, C)
        q, k, v = self.qkv(x).split(c, dim=2)
        y = F.scaled_dot_product_attention(
            self._heads(q),
            self._heads(k),
            self._heads(v),
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=True,
        )  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(b, t, c)
        return self.resid_drop(self.proj(y))

    def forward_one(
        self, x: torch.Tensor, x_query: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Attention output for one query position per row (the last real token).

        ``x``: (B, T, C) all positions (keys/values); ``x_query``: (B, 1, C) the query position;
        ``lengths``: (B,). Keys at positions >= length are padding and are masked out, which
        equals the causal mask seen from position ``length - 1``.
        """
        b, t, c = x.shape
        # Whole-weight projections (then slicing) keep the weights plain constants in an exported
        # graph, so int8 quantization finds them; the price is a q computed for every position
        # where only the last one is needed (a third of the qkv projection's work).
        q = self.qkv(x_query)[..., :c]  # (B, 1, C)
        k, v = self.qkv(x)[..., c:].split(c, dim=2)  # (B, T, C) each
        key_pos = torch.arange(t, device=x.device)
        mask = (key_pos[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, T)
        y = F.scaled_dot_product_attention(
            self._heads(q), self._heads(k), self._heads(v), attn_mask=mask
        )
        return self.proj(y.transpose(1, 2).reshape(b, 1, c))  # (B, 1, C)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2 uses the tanh approximation of GELU ("gelu_new" in transformers).
        return self.drop(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def forward_last(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The block's output at position ``lengths - 1`` only: (B, T, C) -> (B, C).

        Keys and values still need every position, but the query, the MLP and everything
        after run on one position per row: that is what makes the exported graph cheap.
        """
        h = self.ln_1(x)
        idx = (lengths - 1).view(-1, 1, 1).expand(-1, 1, x.shape[-1])
        x_last = torch.gather(x, 1, idx)  # (B, 1, C)
        h_last = torch.gather(h, 1, idx)
        x_last = x_last + self.attn.forward_one(h, h_last, lengths)
        x_last = x_last + self.mlp(self.ln_2(x_last))
        return x_last[:, 0, :]


class GPTBackbone(nn.Module):
    """Token + position embeddings, ``n_layer`` blocks and the final LayerNorm."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context_length, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, C) input of the first block."""
        t = input_ids.shape[1]
        pos = torch.arange(t, device=input_ids.device)
        return self.drop(self.wte(input_ids) + self.wpe(pos))

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run blocks ``start:stop`` on the residual stream ``x`` (B, T, C)."""
        for block in self.blocks[start:stop]:
            x = block(x)
        return x

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T, C) hidden states after the final LayerNorm."""
        return self.ln_f(self.run_blocks(self.embed(input_ids)))


def pool(hidden: torch.Tensor, lengths: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, C) hidden states -> (B, C) per the pooling contract."""
    if pooling == "last":
        idx = (lengths - 1).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
        return torch.gather(hidden, 1, idx)[:, 0, :]
    mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
    mask = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * mask).sum(1) / lengths.to(hidden.dtype).unsqueeze(-1)


class GPTClassifier(nn.Module):
    """GPT-2 backbone + a linear head with one logit per label.

    ``forward(input_ids, lengths) -> logits (B, num_labels)``; the loss stays outside.
    """

    def __init__(self, cfg: GPTConfig, num_labels: int, *, pooling: str = "last") -> None:
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"a classifier needs at least 2 labels, got {num_labels}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.cfg = cfg
        self.num_labels = num_labels
        self.pooling = pooling
        self.backbone = GPTBackbone(cfg)
        self.head = nn.Linear(cfg.d_model, num_labels)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(pool(self.backbone(input_ids), lengths, self.pooling))

    def forward_from_block(
        self, x: torch.Tensor, lengths: torch.Tensor, start: int
    ) -> torch.Tensor:
        """Logits from the residual stream entering block ``start`` (cached frozen prefix)."""
        h = self.backbone.ln_f(self.backbone.run_blocks(x, start))
        return self.head(pool(h, lengths, self.pooling))

    def forward_last_only(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Same logits as ``forward`` for ``pooling="last"``, computing the last block, the
        final norm and the head on one position per row. Used for inference and export."""
        if self.pooling != "last":
            return self.forward(input_ids, lengths)
        bb = self.backbone
        x = bb.run_blocks(bb.embed(input_ids), 0, len(bb.blocks) - 1)
        return self.head(bb.ln_f(bb.blocks[-1].forward_last(x, lengths)))


def init_weights(model: nn.Module, *, seed: int, n_layer: int) -> None:
    """GPT-2's initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * std)
        elif name.endswith("bias"):
            nn.init.zeros_(p)
        else:  # LayerNorm weight
            nn.init.ones_(p)
