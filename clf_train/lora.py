"""LoRA: low-rank adapters on the frozen model's Linear layers, merged away before export.

An adapted layer computes ``y = x W^T + b + (alpha / r) * dropout(x) A^T B^T`` with ``W``,
``b`` frozen and only ``A`` (r, in) and ``B`` (out, r) trained, as the LoRA paper and peft do.
``A`` starts from peft's (and the LoRA reference code's) Kaiming-uniform draw, ``B`` from
zeros, so training starts exactly at the base model. The draw comes from a generator seeded by
``--seed``: a rebuilt (resumed) run gets the same adapters.

The chapter-6 recipe's appendix E (``llms_from_scratch.appendix_e.LoRALayer``) differs in two
ways: it multiplies by ``alpha`` alone (so its ``alpha`` is our ``alpha / r``: its rank 16,
alpha 16 is our ``--lora-alpha 256``) and it stores ``A`` as (in, r), so Kaiming's fan-in is
the rank and its ``A`` starts sqrt(in / r) times wider. The function, given the same A and
B, is the same; :func:`adapters_from_appendix_e` maps its tensors onto ours.

This model fuses query, key and value into one ``attn.qkv`` Linear (3C outputs); the appendix
(and peft on most models) adapts them separately. So the fused layer holds up to three
(A, B) pairs, one per output third; a target left out of ``--lora-targets`` adds zeros to its
third. The merged weight is the same as merging three separate layers.

:func:`merge_adapters` folds every update into its weight (``W + (alpha / r) B A``, summed in
float64, rounded once) and returns a plain :class:`GPTClassifier`: the exported graph has the
shape, speed and int8 path of any other export. The run directory keeps the adapter in its own
file (:func:`save_adapter`), beside the base weights it belongs to.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from clf_runtime.atomic import atomic_path

from .batches import derive_seed
from .config import LORA_TARGETS, TrainConfig, parse_lora_blocks, parse_lora_targets
from .errors import ConfigError, RunDirError
from .frozen_cache import TopSpec
from .model import GPTClassifier

__all__ = [
    "LoRALinear",
    "LoraSettings",
    "adapter_state_dict",
    "adapters_from_appendix_e",
    "add_adapters",
    "base_state_dict",
    "has_adapters",
    "lora_layers",
    "make_trainable",
    "merge_adapters",
    "read_adapter",
    "save_adapter",
]

# Where each block-level target lives inside a Block: (module path, output part of a fused
# layer). q, k and v are the three thirds of the fused attn.qkv projection.
_BLOCK_LAYERS: dict[str, tuple[str, ...]] = {
    "attn.qkv": ("q", "k", "v"),
    "attn.proj": ("attn-out",),
    "mlp.fc": ("mlp-in",),
    "mlp.proj": ("mlp-out",),
}
HEAD = "head"
_HEADER_SETTINGS = "gpt_clf_lora"
_HEADER_BASE_SHA = "gpt_clf_base_sha256"


@dataclass(frozen=True)
class LoraSettings:
    """The adapters' shape and scale: what ``--lora-*`` resolved to."""

    rank: int
    """r: columns of B, rows of A."""
    alpha: float
    """The update is (alpha / rank) * B A."""
    targets: tuple[str, ...]
    """Adapted layer kinds, a subset of :data:`~clf_train.config.LORA_TARGETS` in its order."""
    dropout: float = 0.0
    """Dropout on each adapted layer's input, on the adapter branch only, while training."""
    blocks: int | None = None
    """Adapters in the top ``blocks`` blocks; None: in every block."""

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> LoraSettings:
        """The settings of a resolved ``--trainable lora`` config."""
        if cfg.lora_rank is None or cfg.lora_alpha is None:
            raise ValueError("LoraSettings.from_config needs cfg.resolved() of a lora config")
        return cls(
            rank=cfg.lora_rank,
            alpha=float(cfg.lora_alpha),
            targets=parse_lora_targets(cfg.lora_targets or "all"),
            dropout=float(cfg.lora_dropout or 0.0),
            blocks=parse_lora_blocks(cfg.lora_blocks or "all"),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form (config.json ``train.lora``, the adapter file's header)."""
        return {
            "rank": self.rank,
            "alpha": self.alpha,
            "scaling": self.scaling,
            "targets": list(self.targets),
            "dropout": self.dropout,
            "blocks": "all" if self.blocks is None else f"last-{self.blocks}",
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoraSettings:
        """Inverse of :meth:`to_dict` (``scaling`` is derived, not read)."""
        return cls(
            rank=int(data["rank"]),
            alpha=float(data["alpha"]),
            targets=parse_lora_targets(",".join(data["targets"])),
            dropout=float(data.get("dropout", 0.0)),
            blocks=parse_lora_blocks(str(data.get("blocks", "all"))),
        )


class LoRALinear(nn.Linear):
    """A frozen Linear plus low-rank updates on parts of its output.

    Keeps the Linear's own ``weight`` and ``bias`` (same state-dict names as the plain
    layer); adds ``lora_A[name]`` (r, in) and ``lora_B[name]`` (out_part, r) for each adapted
    part. ``parts`` cuts the output into named, equal, consecutive slices (the fused qkv:
    ``("q", "k", "v")``; any other layer: one part).
    """

    def __init__(
        self,
        base: nn.Linear,
        *,
        parts: Sequence[str],
        adapted: Sequence[str],
        rank: int,
        scaling: float,
        dropout: float,
    ) -> None:
        bias = base.bias is not None
        super().__init__(base.in_features, base.out_features, bias=bias, device="meta")
        self.weight = base.weight  # the very same Parameters: nothing is copied
        self.bias = base.bias
        if base.out_features % len(parts):
            raise ValueError(f"{base.out_features} outputs do not split into parts {parts}")
        self.parts = tuple(parts)
        self.rank = rank
        self.part_size = base.out_features // len(parts)
        self.scaling = scaling
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        dev, dt = base.weight.device, base.weight.dtype
        self.lora_A = nn.ParameterDict(
            {n: torch.empty(rank, base.in_features, device=dev, dtype=dt) for n in adapted}
        )
        self.lora_B = nn.ParameterDict(
            {n: torch.zeros(self.part_size, rank, device=dev, dtype=dt) for n in adapted}
        )

    def reset_adapters(self, generator: torch.Generator) -> None:
        """A: Kaiming-uniform (a = sqrt(5), fan-in = in_features, as peft); B: zeros."""
        with torch.no_grad():
            for name in self.parts:
                if name in self.lora_A:
                    # (r, in): fan-in is in_features, so A ~ U(+-1 / sqrt(in_features)).
                    nn.init.kaiming_uniform_(self.lora_A[name], a=math.sqrt(5), generator=generator)
                    self.lora_B[name].zero_()

    def _stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every part's A stacked, (P r, in), and B block-diagonal, (out, P r); a part without
        adapter contributes zeros. So the layer's update is one pair of matmuls."""
        a = [
            self.lora_A[n]
            if n in self.lora_A
            else self.weight.new_zeros(self.rank, self.in_features)
            for n in self.parts
        ]
        b = [
            self.lora_B[n] if n in self.lora_B else self.weight.new_zeros(self.part_size, self.rank)
            for n in self.parts
        ]
        return (a[0], b[0]) if len(a) == 1 else (torch.cat(a), torch.block_diag(*b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)  # (..., out)
        a, b = self._stacked()
        # (..., in) -> (..., P r) -> (..., out): never forms the (out, in) product.
        update = F.linear(F.linear(self.lora_dropout(x), a), b)
        return torch.add(y, update, alpha=self.scaling)

    def delta_weight(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """(alpha / r) * B A for every part, stacked like the weight's rows: (out, in)."""
        a, b = (t.detach().cpu().to(dtype) for t in self._stacked())
        return self.scaling * (b @ a)

    def merged_weight(self) -> torch.Tensor:
        """``W + (alpha / r) B A`` summed in float64 and rounded once to W's dtype and device."""
        w = self.weight.detach()
        merged = w.cpu().to(torch.float64) + self.delta_weight()
        return merged.to(dtype=w.dtype, device=w.device)


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    """``(module path, layer)`` of every adapted layer, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            yield name, module


def has_adapters(model: nn.Module) -> bool:
    """Whether ``model`` carries LoRA adapters (then it must be merged before export)."""
    return next(lora_layers(model), None) is not None


def _is_adapter_key(key: str) -> bool:
    return ".lora_A." in key or ".lora_B." in key or key.startswith(("lora_A.", "lora_B."))


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapters' tensors: ``backbone.blocks.0.attn.qkv.lora_A.q`` ... (detached)."""
    return {k: v.detach() for k, v in model.state_dict().items() if _is_adapter_key(k)}


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything but the adapters: exactly the keys of a plain :class:`GPTClassifier`."""
    return {k: v.detach() for k, v in model.state_dict().items() if not _is_adapter_key(k)}


def _adapted_layers(
    model: GPTClassifier, settings: LoraSettings
) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(module path, parts, adapted parts) of every layer that ``settings`` adapts."""
    n_layer = len(model.backbone.blocks)
    if settings.blocks is not None and settings.blocks > n_layer:
        raise ConfigError(
            f"--lora-blocks last-{settings.blocks}: the model has only {n_layer} blocks"
        )
    first = 0 if settings.blocks is None else n_layer - settings.blocks
    out = []
    for i in range(first, n_layer):
        for path, parts in _BLOCK_LAYERS.items():
            adapted = tuple(p for p in parts if p in settings.targets)
            if adapted:
                out.append((f"backbone.blocks.{i}.{path}", parts, adapted))
    if HEAD in settings.targets:
        out.append((HEAD, (HEAD,), (HEAD,)))
    return out


def add_adapters(
    model: GPTClassifier,
    settings: LoraSettings,
    *,
    seed: int,
    initial: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Wrap every layer ``settings`` names in a :class:`LoRALinear`, in place.

    Adapters start from the seeded draw (:meth:`LoRALinear.reset_adapters`, one generator
    seeded from ``seed``, layers in module order), or from ``initial`` (adapter tensors under
    :func:`adapter_state_dict` names, e.g. from an appendix-E checkpoint): then its names and
    shapes must match exactly (:class:`ConfigError` listing the differences).
    """
    if has_adapters(model):
        raise ValueError("the model already carries LoRA adapters")
    generator = torch.Generator().manual_seed(derive_seed(seed, "lora"))
    for path, parts, adapted in _adapted_layers(model, settings):
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        layer = LoRALinear(
            getattr(parent, attr),
            parts=parts,
            adapted=adapted,
            rank=settings.rank,
            scaling=settings.scaling,
            dropout=settings.dropout,
        )
        layer.reset_adapters(generator)
        setattr(parent, attr, layer)
    if initial is not None:
        _load_adapters(model, initial, what="the initial adapters")


def _load_adapters(model: nn.Module, tensors: Mapping[str, torch.Tensor], *, what: str) -> None:
    want = {k: tuple(v.shape) for k, v in adapter_state_dict(model).items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    problems = []
    if missing := sorted(set(want) - set(got)):
        problems.append(f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    if extra := sorted(set(got) - set(want)):
        problems.append(f"unexpected {extra[:4]}{' ...' if len(extra) > 4 else ''}")
    wrong = [
        f"{k} {got[k]} (expected {want[k]})"
        for k in sorted(set(want) & set(got))
        if want[k] != got[k]
    ]
    if wrong:
        problems.append(f"wrong shapes {wrong[:4]}")
    if problems:
        raise ConfigError(
            f"{what} do not fit the adapters that --lora-rank/--lora-targets/--lora-blocks "
            f"ask for: {'; '.join(problems)}. Pass the rank, targets and blocks they were "
            "trained with"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, t in tensors.items():
            params[name].copy_(t)


def make_trainable(model: GPTClassifier) -> TopSpec:
    """Freeze everything but the adapters and return where the trainable top starts.

    As in the appendix, every base weight stays frozen, the head's too when it carries an
    adapter; a head without one trains in full (peft's ``modules_to_save``), since a random
    head that never learns would make the classifier useless. Blocks below the lowest adapted
    block are frozen in full: the frozen-prefix cache serves them (``"blocks"`` mode); with
    adapters in block 0 inputs stay token ids (``"ids"``), since caching the embedding output
    would hold tokens x C floats to save a table lookup; with adapters on the head only, the
    pooled features are cached (``"pooled"``).
    """
    if not has_adapters(model):
        raise ValueError("make_trainable needs a model with adapters (add_adapters)")
    for p in model.parameters():
        p.requires_grad_(False)
    for _, layer in lora_layers(model):
        for p in (*layer.lora_A.values(), *layer.lora_B.values()):
            p.requires_grad_(True)
    if not isinstance(model.head, LoRALinear):
        for p in model.head.parameters():
            p.requires_grad_(True)
    blocks = model.backbone.blocks
    adapted = [i for i, b in enumerate(blocks) if has_adapters(b)]
    start = min(adapted) if adapted else len(blocks)
    if start == len(blocks):
        return TopSpec("pooled", start)
    return TopSpec("ids" if start == 0 else "blocks", start)


def merge_adapters(model: GPTClassifier) -> GPTClassifier:
    """A plain :class:`GPTClassifier` with every update folded into its weight.

    ``model`` is left as it is; the copy is on the same device, in the same train/eval mode.
    """
    state = {k: v.clone() for k, v in base_state_dict(model).items()}
    for path, layer in lora_layers(model):
        state[f"{path}.weight"] = layer.merged_weight()
    with torch.device("meta"):  # shapes only: the state dict fills it
        merged = GPTClassifier(model.cfg, model.num_labels, pooling=model.pooling)
    merged.load_state_dict(state, strict=True, assign=True)
    return merged.train(model.training)


# ----------------------------------------------------------------------------- files


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_adapter(
    path: Path,
    model: nn.Module,
    settings: LoraSettings,
    *,
    base_file: Path,
    run_config: Mapping[str, Any] | None = None,
) -> None:
    """Write the adapters (atomically) with their settings, the sha256 of ``base_file`` (the
    weights they were trained on) and the run config in the safetensors header."""
    tensors = {k: v.contiguous().cpu() for k, v in adapter_state_dict(model).items()}
    meta = {
        "format": "pt",
        _HEADER_SETTINGS: json.dumps(settings.to_dict()),
        _HEADER_BASE_SHA: file_sha256(base_file),
    }
    if run_config is not None:
        meta["gpt_clf_config"] = json.dumps(dict(run_config))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_adapter(
    path: Path, settings: LoraSettings, *, base_file: Path, device: str = "cpu"
) -> dict[str, torch.Tensor]:
    """The adapter tensors of ``path``, after checking that they were saved with ``settings``
    on the very ``base_file`` beside them; :class:`RunDirError` says what does not fit."""
    if not path.is_file():
        raise RunDirError(
            f"{path} is missing: config.json says this run trained LoRA adapters, which live "
            "in that file; copy it back beside model.safetensors (or train the run again)"
        )
    try:
        with safe_open(str(path), framework="pt", device=device) as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as e:
        raise RunDirError(f"{path} is corrupt or unreadable: {e}") from e
    try:
        saved = LoraSettings.from_dict(json.loads(meta[_HEADER_SETTINGS]))
    except (KeyError, TypeError, ValueError) as e:
        raise RunDirError(f"{path} lacks readable LoRA settings in its header ({e!r})") from e
    if saved != settings:
        raise RunDirError(
            f"{path} holds adapters {saved.to_dict()} but config.json says {settings.to_dict()}; "
            "the two files come from different runs"
        )
    want_sha = meta.get(_HEADER_BASE_SHA)
    if want_sha != file_sha256(base_file):
        raise RunDirError(
            f"{path} was trained on base weights with sha256 {want_sha}, but {base_file} differs; "
            "an adapter only works on the weights it was trained with: put back the run's own "
            f"{base_file.name}"
        )
    return tensors


# ----------------------------------------------------------------------------- appendix E

_TARGET_PATH = {t: path for path, parts in _BLOCK_LAYERS.items() for t in parts}


def adapter_name(block: int | None, target: str, which: str) -> str:
    """Our state-dict name of one adapter tensor: ``which`` is "A" or "B"; ``block`` None for
    the head."""
    if target not in LORA_TARGETS:
        raise ValueError(f"unknown LoRA target {target!r}")
    path = HEAD if block is None else f"backbone.blocks.{block}.{_TARGET_PATH[target]}"
    return f"{path}.lora_{which}.{target}"


def adapters_from_appendix_e(
    pairs: Mapping[tuple[int | None, str], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[dict[str, torch.Tensor], int]:
    """Appendix-E ``(A (in, r), B (r, out))`` pairs keyed by (block or None, target) -> our
    adapter tensors (``A`` (r, in), ``B`` (out, r): transposed) and their rank.

    The appendix's ``alpha`` is not in its state dict: the caller's ``--lora-alpha`` must be
    its alpha times the rank for the same function.
    """
    out: dict[str, torch.Tensor] = {}
    ranks = set()
    for (block, target), (a, b) in pairs.items():
        ranks.add(int(a.shape[1]))
        out[adapter_name(block, target, "A")] = a.t().contiguous().float()
        out[adapter_name(block, target, "B")] = b.t().contiguous().float()
    if len(ranks) != 1:
        raise ValueError(f"appendix-E adapters of different ranks {sorted(ranks)}")
    return out, ranks.pop()
