"""Model shapes and model names: the one list that the config, the CLI and the loaders share.

Torch-free on purpose: :mod:`clf_train.config` and the ``clf-train`` argument parser read the
model names and shapes from here without loading torch. :class:`GPTConfig` is a plain
dataclass; :mod:`clf_train.model` builds modules from it (and re-exports it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

from ._records import from_known_keys

__all__ = ["MODELS", "PRESETS", "PRETRAINED_NAMES", "RANDOM_ONLY_MODELS", "GPTConfig"]


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
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on a key that is not a field."""
        return from_known_keys(cls, data, what="model config", error=ValueError)


PRESETS: dict[str, GPTConfig] = {
    # The four published GPT-2 sizes (pretrained weights exist for these) ...
    "gpt2": GPTConfig(n_layer=12, n_head=12, d_model=768),
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, d_model=1024),
    "gpt2-large": GPTConfig(n_layer=36, n_head=20, d_model=1280),
    "gpt2-xl": GPTConfig(n_layer=48, n_head=25, d_model=1600),
    # ... and two small shapes to train from scratch (--init random) for demos and tests.
    "gpt2-tiny": GPTConfig(n_layer=2, n_head=4, d_model=128, context_length=512),
    "gpt2-mini": GPTConfig(n_layer=4, n_head=4, d_model=256, context_length=512),
}
"""Shape of every ``--model`` name, in the order the help lists them."""

MODELS: Final = tuple(PRESETS)
"""Every name ``--model`` accepts."""
PRETRAINED_NAMES: Final = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
"""Names with published weights (``--init pretrained`` can load them by name)."""
RANDOM_ONLY_MODELS: Final = tuple(m for m in MODELS if m not in PRETRAINED_NAMES)
"""Names that are shapes only: they need ``--init random``."""
