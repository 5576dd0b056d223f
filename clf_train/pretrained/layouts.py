"""Checkpoint layouts: read a weights file and rename its tensors to this package's names.

Two layouts are known:

- Hugging Face ``GPT2Model`` / ``GPT2LMHeadModel`` / ``GPT2ForSequenceClassification``
  (names ``wte.weight``, ``h.0.attn.c_attn.weight``, ...; Conv1D weights stored ``(in, out)``
  and transposed here), with its ``config.json``;
- the chapter-6 state dict of "Build a Large Language Model (From Scratch)"
  (``llms_from_scratch.ch04.GPTModel``: ``tok_emb.weight``, ``trf_blocks.0.att.W_query.weight``,
  ...; separate query/key/value projections, concatenated here), also after its appendix E
  wrapped the Linear layers with LoRA (``...W_query.linear.weight`` + ``...W_query.lora.A``):
  :func:`split_lora` takes the adapters out first.

Pickle-based files are only ever read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import PretrainedError

__all__ = ["LoraPairs", "convert", "read_config_json", "read_tensors", "split_lora"]

_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_TO_SAFETENSORS = (
    'python -c "import torch; from safetensors.torch import save_file; '
    "o = torch.load('SRC', weights_only=False); sd = o.get('model_state_dict', o) "
    "if isinstance(o, dict) else o.state_dict(); "
    "save_file({k: v.contiguous() for k, v in sd.items()}, 'DST')\""
)


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors or torch file (unwrapping ``{"model_state_dict": ...}``).

    The format comes from the suffix, else from the first bytes. Raises
    :class:`PretrainedError` for a corrupt file or one that holds more than tensors.
    """
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


# Modules inside block i: (HF name, chapter-6 name, our name, HF stores the weight (in, out)).
# Every module has a weight and a bias; chapter 6 calls a LayerNorm's scale/shift.
_BLOCK_MODULES = (
    ("ln_1", "norm1", "ln_1", False),
    ("attn.c_attn", None, "attn.qkv", True),  # chapter 6: separate W_query/W_key/W_value
    ("attn.c_proj", "att.out_proj", "attn.proj", True),
    ("ln_2", "norm2", "ln_2", False),
    ("mlp.c_fc", "ff.layers.0", "mlp.fc", True),
    ("mlp.c_proj", "ff.layers.2", "mlp.proj", True),
)
_CH06_NORM_PARAMS = {"weight": "scale", "bias": "shift"}


# HF name inside block i -> (our name, is a Conv1D weight stored (in, out)).
_HF_BLOCK = {
    f"{hf}.{kind}": (f"{ours}.{kind}", conv1d and kind == "weight")
    for hf, _, ours, conv1d in _BLOCK_MODULES
    for kind in ("weight", "bias")
}
_HF_IGNORED_IN_BLOCK = {"attn.bias", "attn.masked_bias"}  # causal-mask buffers
_CH06_BLOCK = {
    f"{ch06}.{_CH06_NORM_PARAMS[kind] if ch06.startswith('norm') else kind}": f"{ours}.{kind}"
    for _, ch06, ours, _ in _BLOCK_MODULES
    if ch06 is not None
    for kind in ("weight", "bias")
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


def convert(
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


# Appendix-E LoRA adapters: (block index, or None for the head; target) -> (A (in, r), B (r, out))
# as ``llms_from_scratch.appendix_e.LoRALayer`` stores them.
LoraPairs = dict[tuple[int | None, str], tuple[torch.Tensor, torch.Tensor]]
# Chapter-6 module inside block i -> its --lora-targets name.
_CH06_LORA_TARGETS = {
    "att.W_query": "q",
    "att.W_key": "k",
    "att.W_value": "v",
    "att.out_proj": "attn-out",
    "ff.layers.0": "mlp-in",
    "ff.layers.2": "mlp-out",
}
_LORA_RE = re.compile(r"(.+)\.lora\.(A|B)")


def split_lora(
    raw: dict[str, torch.Tensor], file: Path
) -> tuple[dict[str, torch.Tensor], LoraPairs | None]:
    """Take appendix-E adapters out of a chapter-6 state dict.

    ``replace_linear_with_lora`` renames each wrapped layer's ``X.weight`` to
    ``X.linear.weight`` and adds ``X.lora.A`` (in, r) and ``X.lora.B`` (r, out). Returns the
    state dict under plain chapter-6 names and the adapter pairs (None when there are none).
    """
    tensors = {_strip_wrappers(k): v for k, v in raw.items()}
    wrapped = {m[1] for k in tensors if (m := _LORA_RE.fullmatch(k))}
    if not wrapped:
        return raw, None
    plain: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        if m := _LORA_RE.fullmatch(name):
            parts.setdefault(m[1], {})[m[2]] = t
            continue
        prefix, _, kind = name.rpartition(".")
        if prefix.endswith(".linear") and prefix.removesuffix(".linear") in wrapped:
            name = f"{prefix.removesuffix('.linear')}.{kind}"
        plain[name] = t
    pairs: LoraPairs = {}
    unknown = []
    for module, ab in sorted(parts.items()):
        m = _BLOCK_RE["ch06"].fullmatch(module)
        key: tuple[int | None, str] | None = None
        if module == "out_head":
            key = (None, "head")
        elif m and m[2] in _CH06_LORA_TARGETS:
            key = (int(m[1]), _CH06_LORA_TARGETS[m[2]])
        if key is None or set(ab) != {"A", "B"}:
            unknown.append(module)
            continue
        a, b = ab["A"], ab["B"]
        if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
            raise PretrainedError(
                f"{file}: the LoRA adapter of {module} has A {tuple(a.shape)} and B "
                f"{tuple(b.shape)}; expected (in, r) and (r, out) as appendix E stores them"
            )
        pairs[key] = (a.float(), b.float())
    if unknown:
        raise PretrainedError(
            f"{file} has LoRA adapters I cannot place (or without both A and B): "
            f"{unknown[:6]}; appendix-E adapters are known on att.W_query, att.W_key, "
            "att.W_value, att.out_proj, ff.layers.0, ff.layers.2 and out_head"
        )
    ranks = sorted({int(a.shape[1]) for a, _ in pairs.values()})
    if len(ranks) > 1:
        raise PretrainedError(f"{file}: LoRA adapters of different ranks {ranks}; expected one")
    return plain, pairs


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


def read_config_json(path: Path) -> dict[str, Any]:
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
