"""The public loaders: :func:`load_pretrained` (find, read, rename, check) and
:func:`build_classifier` (a :class:`~clf_train.model.GPTClassifier` around the weights)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..errors import PretrainedError
from ..model import PRESETS, GPTBackbone, GPTClassifier, GPTConfig
from .hub import check_name, locate, resolve_hub
from .layouts import LoraPairs, convert, read_config_json, read_tensors, split_lora

__all__ = ["PretrainedWeights", "build_classifier", "load_pretrained"]


@dataclass
class PretrainedWeights:
    """Pretrained tensors already renamed to this package's names."""

    config: GPTConfig
    """Model shape; ``dropout`` is left at 0.0 (a training choice, not part of the weights)."""
    backbone: dict[str, torch.Tensor]
    """Exactly the keys of ``GPTBackbone(config).state_dict()``, float32, contiguous."""
    head: dict[str, torch.Tensor] | None
    """``{"weight": (C, d), "bias": (C,)}`` when the file holds a classification head, else None."""
    source: str
    """Provenance: layout and file, e.g. ``"hf:/path/model.safetensors"``, ``"ch06:/x.pth"``."""
    lora: LoraPairs | None = None
    """Appendix-E LoRA adapters found in a chapter-6 file, as it stores them (``A`` (in, r),
    ``B`` (r, out)) keyed by (block or None for the head, target); None when there are none."""


def load_pretrained(
    *,
    model: str | None = None,
    weights: str | Path | None = None,
    context_length: int | None = None,
    weights_flag: str = "--weights",
) -> PretrainedWeights:
    """Load GPT-2 weights by ``model`` name, from a ``weights`` path, or both (they must agree).

    With ``weights``, ``model`` may be any preset (``gpt2-tiny`` too): it only names the shape
    the file must have. ``context_length``, when given, keeps only the first rows of the
    position table (it must not exceed the checkpoint's positions). ``weights_flag`` names the
    path's flag in messages. Raises :class:`PretrainedError` on every failure.
    """
    if model is not None:
        check_name(model, shape_only=weights is not None)
    if weights is not None:
        path = Path(weights).expanduser()
    elif model is not None:
        path = resolve_hub(model)
    else:
        raise PretrainedError(
            "no pretrained weights requested: pass a model name (--model gpt2) or a path "
            "(--weights DIR|FILE), or train from scratch with --init random"
        )
    file, config_file = locate(path, flag=weights_flag)
    tensors, lora = split_lora(read_tensors(file), file)
    layout, backbone, head, qkv_bias = convert(tensors, file)
    file_cfg = read_config_json(config_file) if config_file is not None else {}
    cfg = _make_config(backbone, qkv_bias, file_cfg, model, file, config_file, weights_flag)

    if context_length is not None:
        if not 1 <= context_length <= cfg.context_length:
            raise PretrainedError(
                f"context_length={context_length} is out of range for {file}: its position "
                f"table has {cfg.context_length} rows; pass a value in 1..{cfg.context_length}"
            )
        backbone["wpe.weight"] = backbone["wpe.weight"][:context_length].clone()
        cfg = replace(cfg, context_length=context_length)

    _check_shapes(backbone, cfg, file)
    if head is not None:
        w, b = tuple(head["weight"].shape), tuple(head["bias"].shape)
        if len(w) != 2 or w[1] != cfg.d_model or b != w[:1]:
            raise PretrainedError(
                f"{file}: the classification head has weight {w} and bias {b}, expected "
                f"(num_classes, {cfg.d_model}) and (num_classes,)"
            )
    if lora is not None and (None, "head") in lora and head is None:
        raise PretrainedError(
            f"{file} has a LoRA adapter on out_head but no classification head: out_head is "
            "the language-model head; adapters are loaded for classifiers only"
        )
    return PretrainedWeights(
        config=cfg, backbone=backbone, head=head, source=f"{layout}:{file}", lora=lora
    )


def build_classifier(
    pretrained: PretrainedWeights, num_labels: int, *, pooling: str = "last", seed: int = 0
) -> GPTClassifier:
    """A :class:`GPTClassifier` (eval mode) holding a copy of the pretrained backbone.

    The file's head is reused when it has ``num_labels`` rows; otherwise the head is drawn
    from N(0, 0.02) with a generator seeded by ``seed`` and a zero bias.
    """
    # Build on the meta device: a random init of up to 1.5B parameters, only to overwrite
    # it, costs seconds. Clone so that training never mutates `pretrained`.
    with torch.device("meta"):
        clf = GPTClassifier(pretrained.config, num_labels, pooling=pooling)
    state = {k: v.detach().clone() for k, v in pretrained.backbone.items()}
    try:
        clf.backbone.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise PretrainedError(
            f"pretrained backbone from {pretrained.source} does not fit its config: {e}"
        ) from e
    clf.head.to_empty(device="cpu")
    head = pretrained.head
    d = pretrained.config.d_model
    with torch.no_grad():
        if head is not None and tuple(head["weight"].shape) == (num_labels, d):
            clf.head.weight.copy_(head["weight"])
            clf.head.bias.copy_(head["bias"])
        else:
            gen = torch.Generator().manual_seed(seed)
            torch.nn.init.normal_(clf.head.weight, std=0.02, generator=gen)
            torch.nn.init.zeros_(clf.head.bias)
    return clf.eval()


def _make_config(
    backbone: dict[str, torch.Tensor],
    qkv_bias: bool,
    file_cfg: dict[str, Any],
    model: str | None,
    file: Path,
    config_file: Path | None,
    weights_flag: str,
) -> GPTConfig:
    """The config implied by the tensors, checked against config.json and the named preset."""
    for name, what in (("wte.weight", "token"), ("wpe.weight", "position")):
        if name not in backbone or backbone[name].dim() != 2:
            raise PretrainedError(
                f"{file} lacks a 2-D {what} embedding ({name}; chapter 6: "
                f"{'tok' if what == 'token' else 'pos'}_emb.weight); it is not a full GPT-2"
            )
    vocab, d_model = backbone["wte.weight"].shape
    blocks = {int(k.split(".")[1]) for k in backbone if k.startswith("blocks.")}
    shape = {
        "vocab_size": vocab,
        "context_length": backbone["wpe.weight"].shape[0],
        "n_layer": max(blocks) + 1 if blocks else 0,
        "d_model": d_model,
    }
    for key, value in shape.items():
        if key in file_cfg and file_cfg[key] != value:
            raise PretrainedError(
                f"{config_file} says {key}={file_cfg[key]} but the tensors in {file} give "
                f"{value}; the two files do not belong together"
            )
    preset = PRESETS[model] if model is not None else None
    n_head = file_cfg.get("n_head")
    if n_head is None and preset is not None:
        n_head = preset.n_head
    if n_head is None:
        # Heads leave no trace in tensor shapes; GPT-2 sizes are unique in (d_model, n_layer).
        matches = [
            p.n_head
            for p in PRESETS.values()
            if (p.d_model, p.n_layer) == (shape["d_model"], shape["n_layer"])
        ]
        if not matches:
            raise PretrainedError(
                f"cannot tell the number of attention heads of {file} (d_model "
                f"{shape['d_model']}, {shape['n_layer']} blocks, no GPT-2 size matches): put "
                "its Hugging Face config.json beside it (keys n_head, n_layer, n_embd, "
                "n_positions, vocab_size) or pass --model with the matching size"
            )
        n_head = matches[0]
    try:
        cfg = GPTConfig(
            **shape,
            n_head=int(n_head),
            qkv_bias=qkv_bias,
            layer_norm_eps=float(file_cfg.get("layer_norm_eps", 1e-5)),
        )
    except ValueError as e:
        raise PretrainedError(f"weights in {file} give an invalid config: {e}") from e
    if preset is not None:
        diff = [
            f"{k} {getattr(preset, k)} vs {getattr(cfg, k)}"
            for k in ("vocab_size", "context_length", "n_layer", "n_head", "d_model")
            if getattr(preset, k) != getattr(cfg, k)
        ]
        if diff:
            raise PretrainedError(
                f"--model {model} and {weights_flag} {file} disagree ({', '.join(diff)}); "
                "drop --model to use the file's own shape, or pass the matching weights"
            )
    return cfg


def _check_shapes(backbone: dict[str, torch.Tensor], cfg: GPTConfig, file: Path) -> None:
    with torch.device("meta"):  # shapes only, no memory
        expected = {k: tuple(v.shape) for k, v in GPTBackbone(cfg).state_dict().items()}
    missing = sorted(set(expected) - set(backbone))
    extra = sorted(set(backbone) - set(expected))
    wrong = [
        f"{k} {tuple(backbone[k].shape)} (expected {expected[k]})"
        for k in sorted(set(expected) & set(backbone))
        if tuple(backbone[k].shape) != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
        problems.append(f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    if wrong:
        problems.append(f"wrong shapes {wrong[:5]}")
    if problems:
        raise PretrainedError(
            f"{file} does not fit a GPT-2 with {cfg.n_layer} blocks, d_model {cfg.d_model}: "
            + "; ".join(problems)
            + " (names after mapping to this package's GPTBackbone). Is the file incomplete?"
        )
