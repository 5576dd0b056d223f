"""Pretrained GPT-2 weights, mapped onto this package's :class:`~clf_train.model.GPTBackbone`.

Sources (one result, :class:`PretrainedWeights`):

- a model name (``gpt2`` ... ``gpt2-xl``), resolved through the Hugging Face hub cache, and
  downloaded with ``huggingface_hub`` when the network is allowed;
- a Hugging Face checkpoint (``GPT2Model``, ``GPT2LMHeadModel``, ``GPT2ForSequenceClassification``):
  a directory with ``config.json`` + ``model.safetensors``, or a bare ``.safetensors`` file;
- the state dict saved by the chapter-6 code of "Build a Large Language Model (From Scratch)"
  (``llms_from_scratch.ch04.GPTModel``), as ``.pth``/``.pt`` (or converted to safetensors).

Pickle-based files are only ever read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .model import PRESETS, GPTBackbone, GPTClassifier, GPTConfig

__all__ = [
    "PRETRAINED_NAMES",
    "PretrainedError",
    "PretrainedWeights",
    "build_classifier",
    "load_pretrained",
]

PRETRAINED_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
_HUB_FILES = ("config.json", "model.safetensors")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_TO_SAFETENSORS = (
    'python -c "import torch; from safetensors.torch import save_file; '
    "o = torch.load('SRC', weights_only=False); sd = o.get('model_state_dict', o) "
    "if isinstance(o, dict) else o.state_dict(); "
    "save_file({k: v.contiguous() for k, v in sd.items()}, 'DST')\""
)


class PretrainedError(Exception):
    """Weights cannot be found or do not fit. The message says what, where and how to fix."""


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


def load_pretrained(
    *,
    model: str | None = None,
    weights: str | Path | None = None,
    context_length: int | None = None,
) -> PretrainedWeights:
    """Load GPT-2 weights by ``model`` name, from a ``weights`` path, or both (they must agree).

    ``context_length``, when given, keeps only the first rows of the position table (it must
    not exceed the checkpoint's positions). Raises :class:`PretrainedError` on every failure.
    """
    if model is not None:
        _check_name(model)
    if weights is not None:
        path = Path(weights).expanduser()
    elif model is not None:
        path = _resolve_hub(model)
    else:
        raise PretrainedError(
            "no pretrained weights requested: pass a model name (--model gpt2) or a path "
            "(--weights DIR|FILE), or train from scratch with --init random"
        )
    file, config_file = _locate(path)
    tensors = _read_tensors(file)
    layout, backbone, head, qkv_bias = _convert(tensors, file)
    file_cfg = _read_config_json(config_file) if config_file is not None else {}
    cfg = _make_config(backbone, qkv_bias, file_cfg, model, file, config_file)

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
    return PretrainedWeights(config=cfg, backbone=backbone, head=head, source=f"{layout}:{file}")


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


# ---------------------------------------------------------------------------------------------
# Finding the file


def _check_name(model: str) -> None:
    if model in PRETRAINED_NAMES:
        return
    if model in PRESETS:
        raise PretrainedError(
            f"{model} has no pretrained weights; add --init random (or pick one of "
            f"{', '.join(PRETRAINED_NAMES)})"
        )
    raise PretrainedError(
        f"unknown model {model!r}; pretrained GPT-2 sizes are {', '.join(PRETRAINED_NAMES)}"
    )


def _hub_cache_dir(constants: Any) -> Path:
    # Read the environment at call time: huggingface_hub freezes it at import, which may have
    # happened before the caller (or a test) set HF_HOME.
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def _offline(constants: Any) -> bool:
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().upper() in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


def _has_hub_files(folder: Path) -> bool:
    return all((folder / f).is_file() for f in _HUB_FILES)


def _resolve_hub(name: str) -> Path:
    """The snapshot directory holding ``config.json`` + ``model.safetensors`` for ``name``."""
    repo = f"openai-community/{name}"
    how = (
        f"Supply it with --weights DIR (a directory holding config.json + model.safetensors, "
        f"e.g. from `huggingface-cli download {repo} config.json model.safetensors "
        f"--local-dir DIR` on a machine with network) or --weights FILE.pth (a chapter-6 "
        f"state dict)"
    )
    try:
        import huggingface_hub
        from huggingface_hub import constants
    except ImportError as e:
        raise PretrainedError(
            f"finding {name} by name needs huggingface_hub: `pip install huggingface_hub`. " + how
        ) from e
    cache = _hub_cache_dir(constants)
    for repo_id in (repo, name):  # `name` alone: the legacy repo id, cached as models--gpt2
        found = [
            huggingface_hub.try_to_load_from_cache(repo_id, f, cache_dir=cache) for f in _HUB_FILES
        ]
        # Both files must come from the same snapshot (the one refs/main points to).
        if all(isinstance(p, str) for p in found) and _has_hub_files(Path(found[0]).parent):
            return Path(found[0]).parent
    if _offline(constants):
        why = "offline: HF_HUB_OFFLINE is set"
    else:
        try:
            snap = Path(
                huggingface_hub.snapshot_download(
                    repo, allow_patterns=list(_HUB_FILES), cache_dir=cache
                )
            )
        except Exception as e:  # network, auth and disk errors come in many types
            raise PretrainedError(
                f"{name} is not in the Hugging Face cache ({cache}) and could not be "
                f"downloaded ({type(e).__name__}: {e}). " + how
            ) from e
        if _has_hub_files(snap):
            return snap
        why = f"the download of {repo} lacks {' or '.join(_HUB_FILES)}"
    raise PretrainedError(
        f"{name} is not in the Hugging Face cache ({cache}) and could not be downloaded "
        f"({why}). " + how
    )


def _locate(path: Path) -> tuple[Path, Path | None]:
    """(weights file, config.json or None) for a --weights directory or file."""
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                config = path / "config.json"
                return path / name, config if config.is_file() else None
        listing = sorted(p.name for p in path.iterdir())[:10]
        raise PretrainedError(
            f"--weights {path} is a directory without model.safetensors (it holds {listing}); "
            "expected a Hugging Face GPT-2 directory (config.json + model.safetensors) or "
            "pass the weights file itself"
        )
    if path.is_file():
        config = path.with_name("config.json")
        # Only safetensors files take a config from beside them: a .pth has no such convention.
        use = path.suffix.lower() == ".safetensors" and config.is_file()
        return path, config if use else None
    raise PretrainedError(
        f"--weights {path} does not exist; pass a directory with config.json + "
        "model.safetensors, a .safetensors file, or a chapter-6 .pth state dict"
    )


# ---------------------------------------------------------------------------------------------
# Reading tensors


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    suffix = file.suffix.lower()
    if suffix not in (".safetensors", *_TORCH_SUFFIXES):
        with file.open("rb") as fh:
            magic = fh.read(9)
        # torch.save writes a zip ("PK") or a raw pickle (0x80); safetensors starts with an
        # 8-byte header length followed by the JSON header.
        suffix = ".pth" if magic[:2] == b"PK" or magic[:1] == b"\x80" else ".safetensors"
    if suffix == ".safetensors":
        try:
            return load_file(str(file))
        except (SafetensorError, OSError, ValueError) as e:
            raise PretrainedError(
                f"{file} is not a readable safetensors file ({e}); it is truncated or corrupt: "
                "download or copy it again"
            ) from e
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # Keep torch's reason, drop its advice to allowlist the class: that is the unsafe path.
        detail = str(e).split("WeightsUnpickler error:")[-1].strip().split("\n")[0]
        detail = detail.split(". Please use")[0].rstrip(".")
        hint = _TO_SAFETENSORS.replace("SRC", str(file)).replace(
            "DST", str(file.with_suffix(".safetensors"))
        )
        raise PretrainedError(
            f"{file} was refused for safety: torch.load(weights_only=True) rejected it "
            f"({detail}). It holds Python objects besides tensors (pickle can run arbitrary "
            "code), or it is not a torch file. If you trust its source, convert it once to "
            f"safetensors and pass that file: {hint}"
        ) from e
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise PretrainedError(
            f"{file} could not be read as a torch checkpoint ({e}); it is truncated or corrupt"
        ) from e
    if isinstance(obj, dict):
        for key in ("model_state_dict", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise PretrainedError(
            f"{file} holds a {type(obj).__name__}, expected a state dict (name -> tensor), "
            "possibly wrapped as {'model_state_dict': ...}; save model.state_dict()"
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise PretrainedError(
            f"{file} is not a state dict: entries {bad[:5]} are not tensors; "
            "save model.state_dict() (or wrap it as {'model_state_dict': ...})"
        )
    return obj


# ---------------------------------------------------------------------------------------------
# Renaming: Hugging Face, chapter 6, clf-train run


# Names inside block i: HF name -> (our name, is a Conv1D weight stored (in, out)).
_HF_BLOCK = {
    "ln_1.weight": ("ln_1.weight", False),
    "ln_1.bias": ("ln_1.bias", False),
    "attn.c_attn.weight": ("attn.qkv.weight", True),
    "attn.c_attn.bias": ("attn.qkv.bias", False),
    "attn.c_proj.weight": ("attn.proj.weight", True),
    "attn.c_proj.bias": ("attn.proj.bias", False),
    "ln_2.weight": ("ln_2.weight", False),
    "ln_2.bias": ("ln_2.bias", False),
    "mlp.c_fc.weight": ("mlp.fc.weight", True),
    "mlp.c_fc.bias": ("mlp.fc.bias", False),
    "mlp.c_proj.weight": ("mlp.proj.weight", True),
    "mlp.c_proj.bias": ("mlp.proj.bias", False),
}
_HF_IGNORED_IN_BLOCK = {"attn.bias", "attn.masked_bias"}  # causal-mask buffers
_CH06_BLOCK = {
    "norm1.scale": "ln_1.weight",
    "norm1.shift": "ln_1.bias",
    "att.out_proj.weight": "attn.proj.weight",
    "att.out_proj.bias": "attn.proj.bias",
    "norm2.scale": "ln_2.weight",
    "norm2.shift": "ln_2.bias",
    "ff.layers.0.weight": "mlp.fc.weight",
    "ff.layers.0.bias": "mlp.fc.bias",
    "ff.layers.2.weight": "mlp.proj.weight",
    "ff.layers.2.bias": "mlp.proj.bias",
}
_CH06_TOP = {
    "tok_emb.weight": "wte.weight",
    "pos_emb.weight": "wpe.weight",
    "final_norm.scale": "ln_f.weight",
    "final_norm.shift": "ln_f.bias",
}
_BLOCK_RE = {"hf": re.compile(r"h\.(\d+)\.(.+)"), "ch06": re.compile(r"trf_blocks\.(\d+)\.(.+)")}


def _strip_wrappers(name: str) -> str:
    # DistributedDataParallel saves "module.", torch.compile "_orig_mod.".
    while name.startswith(("module.", "_orig_mod.")):
        name = name.split(".", 1)[1]
    return name


def _convert(
    raw: dict[str, torch.Tensor], file: Path
) -> tuple[str, dict[str, torch.Tensor], dict[str, torch.Tensor] | None, bool]:
    """(layout, backbone tensors, head or None, qkv_bias) from a state dict of any layout."""
    tensors = {_strip_wrappers(k): v for k, v in raw.items()}
    names = set(tensors)
    if "tok_emb.weight" in names or any(n.startswith("trf_blocks.") for n in names):
        layout, (backbone, head, unknown) = "ch06", _from_ch06(tensors, file)
    elif {"wte.weight", "transformer.wte.weight"} & names:
        layout, (backbone, head, unknown) = "hf", _from_hf(tensors)
    else:
        raise PretrainedError(
            f"{file} holds no GPT-2 weights I know: its tensors are {sorted(names)[:6]}; "
            "expected Hugging Face names (wte.weight, h.0.attn.c_attn.weight, ...) or "
            "chapter-6 names (tok_emb.weight, trf_blocks.0.att.W_query.weight, ...)"
        )
    if unknown:
        raise PretrainedError(
            f"{file} ({layout} layout) has tensors I cannot place: {sorted(unknown)[:6]}"
            f"{' ...' if len(unknown) > 6 else ''}; it is not a plain GPT-2 checkpoint "
            "(different architecture, adapters or extra layers?)"
        )
    for name, t in backbone.items():
        if not t.is_floating_point():
            raise PretrainedError(f"{file}: tensor for {name} has dtype {t.dtype}, expected float")
    backbone = {k: v.to(torch.float32).contiguous() for k, v in backbone.items()}
    if head is not None:
        head = {k: v.to(torch.float32).contiguous() for k, v in head.items()}
    qkv_bias = any(k.endswith("attn.qkv.bias") for k in backbone)
    return layout, backbone, head, qkv_bias


# (backbone tensors under our names, head or None, names that fit nowhere)
Converted = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, list[str]]
_QKV_PARTS = {f"W_{p}.{k}" for p in ("query", "key", "value") for k in ("weight", "bias")}


def _from_hf(tensors: dict[str, torch.Tensor]) -> Converted:
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    head = None
    for full, t in tensors.items():
        name = full.removeprefix("transformer.")
        if name in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"):
            out[name] = t
        elif name == "lm_head.weight":  # tied to wte; the classifier replaces it
            continue
        elif name == "score.weight":  # GPT2ForSequenceClassification: Linear(d, C, bias=False)
            head = {"weight": t, "bias": torch.zeros(t.shape[0], dtype=t.dtype)}
        elif (m := _BLOCK_RE["hf"].fullmatch(name)) and m[2] in _HF_BLOCK:
            ours, conv1d = _HF_BLOCK[m[2]]
            out[f"blocks.{m[1]}.{ours}"] = t.t() if conv1d else t  # Conv1D (in, out) -> (out, in)
        elif not (m and m[2] in _HF_IGNORED_IN_BLOCK):
            unknown.append(full)
    return out, head, unknown


def _from_ch06(tensors: dict[str, torch.Tensor], file: Path) -> Converted:
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    qkv: dict[str, dict[str, torch.Tensor]] = {}  # block index -> {"W_query.weight": ...}
    for name, t in tensors.items():
        if name in _CH06_TOP:
            out[_CH06_TOP[name]] = t
        elif name in ("out_head.weight", "out_head.bias"):
            continue  # decided below, once the vocabulary size is known
        elif m := _BLOCK_RE["ch06"].fullmatch(name):
            i, rest = m[1], m[2]
            if rest in _CH06_BLOCK:
                out[f"blocks.{i}.{_CH06_BLOCK[rest]}"] = t
            elif rest.startswith("att.W_") and rest[len("att.") :] in _QKV_PARTS:
                qkv.setdefault(i, {})[rest[len("att.") :]] = t
            elif rest != "att.mask":  # the causal-mask buffer
                unknown.append(name)
        else:
            unknown.append(name)
    for i, parts in qkv.items():
        for kind in ("weight", "bias"):
            keys = [f"W_{p}.{kind}" for p in ("query", "key", "value")]
            present = [k for k in keys if k in parts]
            if len(present) == 3:
                out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts[k] for k in keys], dim=0)
            elif present:
                missing = sorted(set(keys) - set(present))
                raise PretrainedError(
                    f"{file}: block {i} has attention {kind}s {present} but lacks {missing}; "
                    "the query, key and value projections must come together"
                )
    head = None
    w = tensors.get("out_head.weight")
    b = tensors.get("out_head.bias")
    vocab = out["wte.weight"].shape[0] if "wte.weight" in out else None
    # The LM head is Linear(d, vocab, bias=False); the chapter-6 recipe swaps in
    # Linear(d, num_classes), which has a bias.
    if w is not None and (b is not None or w.shape[0] != vocab):
        head = {"weight": w, "bias": b if b is not None else torch.zeros(w.shape[0], dtype=w.dtype)}
    return out, head, unknown


# ---------------------------------------------------------------------------------------------
# Config


def _read_config_json(path: Path) -> dict[str, Any]:
    """GPTConfig fields found in a Hugging Face ``config.json``."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PretrainedError(f"{path} is not valid JSON ({e}); fix or remove it") from e
    if not isinstance(data, dict):
        raise PretrainedError(f"{path} holds a {type(data).__name__}, expected a JSON object")
    try:
        if "n_embd" in data or data.get("model_type") == "gpt2":
            return _from_hf_config(data, path)
    except (KeyError, TypeError, ValueError) as e:
        raise PretrainedError(f"{path} lacks a needed key or has a bad value: {e!r}") from e
    raise PretrainedError(
        f"{path} is not a GPT-2 config: expected Hugging Face keys (n_layer, n_head, n_embd, "
        f"n_positions, vocab_size), found {sorted(data)[:8]}"
    )


def _from_hf_config(data: dict[str, Any], path: Path) -> dict[str, Any]:
    if data.get("model_type", "gpt2") != "gpt2":
        raise PretrainedError(f"{path}: model_type is {data['model_type']!r}, expected 'gpt2'")
    act = data.get("activation_function", "gelu_new")
    # Both names are the tanh approximation of GELU, which is what our MLP computes.
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise PretrainedError(
            f"{path}: activation_function is {act!r}; only GPT-2's 'gelu_new' is supported"
        )
    n_embd = int(data["n_embd"])
    problems = []
    if data.get("n_inner") not in (None, 4 * n_embd):
        problems.append(f"n_inner={data['n_inner']} (only 4 * n_embd = {4 * n_embd})")
    if not data.get("scale_attn_weights", True):
        problems.append("scale_attn_weights=false")
    if data.get("scale_attn_by_inverse_layer_idx", False):
        problems.append("scale_attn_by_inverse_layer_idx=true")
    if problems:
        raise PretrainedError(f"{path}: unsupported GPT-2 variant: {', '.join(problems)}")
    return {
        "vocab_size": int(data["vocab_size"]),
        "context_length": int(data.get("n_positions", data.get("n_ctx"))),
        "n_layer": int(data["n_layer"]),
        "n_head": int(data["n_head"]),
        "d_model": n_embd,
        "layer_norm_eps": float(data.get("layer_norm_epsilon", 1e-5)),
    }


def _make_config(
    backbone: dict[str, torch.Tensor],
    qkv_bias: bool,
    file_cfg: dict[str, Any],
    model: str | None,
    file: Path,
    config_file: Path | None,
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
                f"--model {model} and --weights {file} disagree ({', '.join(diff)}); "
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
