"""GPT-2 architecture with a classification head.

The pooling contract (see DESIGN.md): inputs are right-padded token ids ``[B, T]`` plus
``lengths [B]``; the classifier reads the hidden state at ``lengths - 1``, the last *real*
token. Under the causal mask real tokens never attend to padding, so no attention mask is
needed and a text's logits do not depend on its batch mates or on its padding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["POOLINGS", "PRESETS", "GPTBackbone", "GPTClassifier", "GPTConfig"]

POOLINGS = ("last", "mean")


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a GPT-2-style decoder."""

    vocab_size: int = 50257
    """Token vocabulary size (GPT-2 BPE: 50,257)."""
    context_length: int = 1024
    """Number of learned positions: the longest sequence the model can read."""
    n_layer: int = 12
    """Number of transformer blocks."""
    n_head: int = 12
    """Attention heads per block; must divide ``d_model``."""
    d_model: int = 768
    """Width of the residual stream (embedding size)."""
    qkv_bias: bool = True
    """Whether query/key/value projections have a bias (GPT-2: yes)."""
    dropout: float = 0.0
    """Dropout on embeddings, attention weights and residual branches while training."""
    layer_norm_eps: float = 1e-5
    """Epsilon of every LayerNorm (GPT-2: 1e-5)."""

    def __post_init__(self) -> None:
        problems = []
        for name in ("vocab_size", "context_length", "n_layer", "n_head", "d_model"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_head >= 1 and self.d_model % self.n_head:
            problems.append(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known: {sorted(known)}")
        return cls(**data)


# Real GPT-2 sizes and two small from-scratch presets for demos and tests.
PRESETS: dict[str, GPTConfig] = {
    "gpt2": GPTConfig(n_layer=12, n_head=12, d_model=768),
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, d_model=1024),
    "gpt2-large": GPTConfig(n_layer=36, n_head=20, d_model=1280),
    "gpt2-xl": GPTConfig(n_layer=48, n_head=25, d_model=1600),
    "gpt2-tiny": GPTConfig(n_layer=2, n_head=4, d_model=128, context_length=512),
    "gpt2-mini": GPTConfig(n_layer=4, n_head=4, d_model=256, context_length=512),
}


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
        # graph, so int8 quantization finds them; the unused q of the other positions costs <1 %.
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
