"""Pretrained weights: Hugging Face and chapter-6 checkpoints reproduce their own models.

Every checkpoint here is tiny and random, made on the spot with ``transformers`` (or
``llms_from_scratch`` when installed). Nothing touches the network: HF_HUB_OFFLINE=1 and an
empty HF_HOME for every test.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from clf_train.model import PRESETS, GPTBackbone, GPTConfig
from clf_train.pretrained import PretrainedError, build_classifier, load_pretrained

transformers = pytest.importorskip("transformers")

# d_model 128 with 2 blocks is the gpt2-tiny preset's shape, so n_head (4) can be inferred
# from the preset table when a file carries no config.json.
VOCAB, CTX, D, LAYERS, HEADS = 101, 64, 128, 2, 4
TINY = GPTConfig(vocab_size=VOCAB, context_length=CTX, n_layer=LAYERS, n_head=HEADS, d_model=D)
ATOL = 1e-5


@pytest.fixture(autouse=True)
def _offline_one_thread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _hf_config(**overrides):
    kw = dict(vocab_size=VOCAB, n_positions=CTX, n_embd=D, n_layer=LAYERS, n_head=HEADS)
    kw.update(overrides)
    return transformers.GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **kw)


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Random init leaves LayerNorms at (1, 0) and biases at 0: make every 1-D tensor distinct
    so that a swapped or dropped bias cannot go unnoticed."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _ids(batch: int = 3, t: int = 20, low: int = 0) -> torch.Tensor:
    return torch.randint(low, VOCAB, (batch, t), generator=torch.Generator().manual_seed(1))


def _backbone(pw) -> GPTBackbone:
    bb = GPTBackbone(pw.config)
    bb.load_state_dict(pw.backbone, strict=True)
    return bb.eval()


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    return _perturb(transformers.GPT2Model(_hf_config()))


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf_gpt2")
    hf_model.save_pretrained(out, safe_serialization=True)
    return out


# ---------------------------------------------------------------------------------------------
# Hugging Face checkpoints


def test_gpt2model_dir_reproduces_transformers(hf_model, hf_dir):
    pw = load_pretrained(weights=hf_dir)
    assert pw.config == TINY
    assert pw.head is None
    assert pw.source == f"hf:{hf_dir / 'model.safetensors'}"
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in pw.backbone.values())
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(
            _backbone(pw)(ids), hf_model(ids).last_hidden_state, atol=ATOL, rtol=0
        )


def test_lm_head_dir_with_transformer_prefix(tmp_path):
    torch.manual_seed(2)
    lm = _perturb(transformers.GPT2LMHeadModel(_hf_config()))
    lm.save_pretrained(tmp_path, safe_serialization=True)
    names = load_file(str(tmp_path / "model.safetensors")).keys()
    assert "transformer.h.0.attn.c_attn.weight" in names  # the layout this test is about
    pw = load_pretrained(weights=tmp_path)
    assert pw.head is None and pw.config == TINY
    ids = _ids()
    with torch.no_grad():
        ref = lm.transformer(ids).last_hidden_state
        torch.testing.assert_close(_backbone(pw)(ids), ref, atol=ATOL, rtol=0)


def test_classifier_reads_last_real_token_of_right_padded_rows(hf_model, hf_dir):
    pw = load_pretrained(weights=hf_dir)
    clf = build_classifier(pw, 3, seed=0)
    lengths = torch.tensor([20, 7, 1])
    ids = _ids()
    ids[1, 7:] = 50  # padding: any token id; real tokens never attend to it
    ids[2, 1:] = 0
    with torch.no_grad():
        logits = clf(ids, lengths)
        for b, n in enumerate(lengths.tolist()):
            # The reference sees the row alone and unpadded: padding invariance included.
            hidden = hf_model(ids[b : b + 1, :n]).last_hidden_state[0, n - 1]
            torch.testing.assert_close(logits[b], clf.head(hidden), atol=ATOL, rtol=0)


def test_sequence_classification_head_is_kept(tmp_path):
    torch.manual_seed(3)
    hf = _perturb(transformers.GPT2ForSequenceClassification(_hf_config(num_labels=3)))
    hf.config.pad_token_id = 0
    hf.save_pretrained(tmp_path, safe_serialization=True)
    pw = load_pretrained(weights=tmp_path)
    assert torch.equal(pw.head["weight"], hf.score.weight.detach())
    assert torch.equal(pw.head["bias"], torch.zeros(3))
    ids = _ids(low=1)  # no pad token: HF then reads the last position, as we do
    clf = build_classifier(pw, 3)
    with torch.no_grad():
        torch.testing.assert_close(
            clf(ids, torch.full((3,), 20)), hf(ids).logits, atol=ATOL, rtol=0
        )


def test_bare_safetensors_file_infers_config_from_shapes(hf_model, hf_dir, tmp_path):
    file = tmp_path / "weights.safetensors"
    shutil.copy(hf_dir / "model.safetensors", file)  # no config.json beside it
    pw = load_pretrained(weights=file)
    assert pw.config == TINY  # n_head 4 from the preset with d_model 128 and 2 blocks
    ref = load_pretrained(weights=hf_dir).backbone
    assert pw.backbone.keys() == ref.keys()
    assert all(torch.equal(v, ref[k]) for k, v in pw.backbone.items())


def test_heads_not_inferable_without_config(tmp_path):
    torch.manual_seed(4)
    transformers.GPT2Model(_hf_config(n_embd=16, n_layer=1, n_head=2)).save_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(PretrainedError, match=r"attention heads.*config\.json"):
        load_pretrained(weights=tmp_path / "model.safetensors")


def test_half_precision_file_is_returned_as_float32(hf_dir, tmp_path):
    half = {k: v.half() for k, v in load_file(str(hf_dir / "model.safetensors")).items()}
    save_file(half, str(tmp_path / "model.safetensors"))
    shutil.copy(hf_dir / "config.json", tmp_path / "config.json")
    pw = load_pretrained(weights=tmp_path)
    assert {t.dtype for t in pw.backbone.values()} == {torch.float32}
    assert torch.equal(pw.backbone["wte.weight"], half["wte.weight"].float())


def test_context_length_truncates_positions(hf_model, hf_dir):
    pw = load_pretrained(weights=hf_dir, context_length=16)
    assert pw.config.context_length == 16
    assert pw.backbone["wpe.weight"].shape == (16, D)
    ids = _ids(t=16)
    with torch.no_grad():
        torch.testing.assert_close(
            _backbone(pw)(ids), hf_model(ids).last_hidden_state, atol=ATOL, rtol=0
        )
    with pytest.raises(PretrainedError, match="context_length=65 is out of range"):
        load_pretrained(weights=hf_dir, context_length=65)


def _copy_with(hf_dir: Path, out: Path, *, drop=(), add=None, config=None) -> Path:
    tensors = load_file(str(hf_dir / "model.safetensors"))
    for k in drop:
        del tensors[k]
    tensors.update(add or {})
    out.mkdir()
    save_file(tensors, str(out / "model.safetensors"))
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg.update(config or {})
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def test_missing_unknown_and_misfit_tensors_are_named(hf_dir, tmp_path):
    bad = _copy_with(hf_dir, tmp_path / "missing", drop=["h.1.mlp.c_fc.weight"])
    with pytest.raises(PretrainedError, match=r"missing \['blocks\.1\.mlp\.fc\.weight'\]"):
        load_pretrained(weights=bad)
    bad = _copy_with(hf_dir, tmp_path / "extra", add={"h.0.adapter.weight": torch.zeros(2)})
    with pytest.raises(PretrainedError, match=r"cannot place: \['h\.0\.adapter\.weight'\]"):
        load_pretrained(weights=bad)
    bad = _copy_with(hf_dir, tmp_path / "act", config={"activation_function": "relu"})
    with pytest.raises(PretrainedError, match="'relu'; only GPT-2's 'gelu_new'"):
        load_pretrained(weights=bad)
    bad = _copy_with(hf_dir, tmp_path / "layers", config={"n_layer": 3})
    with pytest.raises(PretrainedError, match=r"n_layer=3 but the tensors .* give 2"):
        load_pretrained(weights=bad)


def test_model_and_weights_that_disagree_are_both_named(hf_dir):
    with pytest.raises(PretrainedError) as exc:
        load_pretrained(model="gpt2", weights=hf_dir)
    msg = str(exc.value)
    assert "--model gpt2" in msg and str(hf_dir) in msg and "d_model 768 vs 128" in msg


# ---------------------------------------------------------------------------------------------
# Chapter-6 state dicts


def _hf_to_ch06(s: dict[str, torch.Tensor], *, qkv_bias: bool = True) -> dict[str, torch.Tensor]:
    """The chapter-6 names for a Hugging Face GPT2Model state dict (written independently of
    the loader: Conv1D weights are (in, out), chapter-6 Linear weights (out, in))."""
    sd = {
        "tok_emb.weight": s["wte.weight"],
        "pos_emb.weight": s["wpe.weight"],
        "final_norm.scale": s["ln_f.weight"],
        "final_norm.shift": s["ln_f.bias"],
    }
    for i in range(LAYERS):
        h, t = f"h.{i}.", f"trf_blocks.{i}."
        for part, w, b in zip(
            ("query", "key", "value"),
            s[h + "attn.c_attn.weight"].t().chunk(3, dim=0),
            s[h + "attn.c_attn.bias"].chunk(3),
            strict=True,
        ):
            sd[f"{t}att.W_{part}.weight"] = w
            if qkv_bias:
                sd[f"{t}att.W_{part}.bias"] = b
        sd[t + "att.out_proj.weight"] = s[h + "attn.c_proj.weight"].t()
        sd[t + "att.out_proj.bias"] = s[h + "attn.c_proj.bias"]
        sd[t + "ff.layers.0.weight"] = s[h + "mlp.c_fc.weight"].t()
        sd[t + "ff.layers.0.bias"] = s[h + "mlp.c_fc.bias"]
        sd[t + "ff.layers.2.weight"] = s[h + "mlp.c_proj.weight"].t()
        sd[t + "ff.layers.2.bias"] = s[h + "mlp.c_proj.bias"]
        for n in (1, 2):
            sd[f"{t}norm{n}.scale"] = s[f"{h}ln_{n}.weight"]
            sd[f"{t}norm{n}.shift"] = s[f"{h}ln_{n}.bias"]
        sd[t + "att.mask"] = torch.triu(torch.ones(CTX, CTX), diagonal=1)  # a buffer
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def test_handmade_chapter6_classifier_checkpoint(hf_model, hf_dir, tmp_path):
    sd = _hf_to_ch06(hf_model.state_dict())
    gen = torch.Generator().manual_seed(5)
    sd["out_head.weight"] = torch.randn(2, D, generator=gen)
    sd["out_head.bias"] = torch.randn(2, generator=gen)
    path = tmp_path / "review_classifier.pt"
    # A training checkpoint: the state dict wrapped with optimizer state and plain numbers.
    torch.save({"model_state_dict": sd, "optimizer_state_dict": {"lr": 5e-5}, "epoch": 5}, path)
    pw = load_pretrained(weights=path)
    ref = load_pretrained(weights=hf_dir)
    assert pw.config == TINY and pw.source == f"ch06:{path}"
    assert pw.backbone.keys() == ref.backbone.keys()
    assert all(torch.equal(pw.backbone[k], ref.backbone[k]) for k in ref.backbone)
    assert torch.equal(pw.head["weight"], sd["out_head.weight"])
    assert torch.equal(pw.head["bias"], sd["out_head.bias"])
    clf = build_classifier(pw, 2)
    assert torch.equal(clf.head.weight, sd["out_head.weight"])
    # A head with another number of classes is drawn afresh instead.
    assert build_classifier(pw, 3).head.weight.shape == (3, D)


def test_handmade_chapter6_without_qkv_bias(hf_model, tmp_path):
    sd = _hf_to_ch06(hf_model.state_dict(), qkv_bias=False)
    sd["out_head.weight"] = torch.randn(VOCAB, D)  # the LM head: vocabulary rows, no bias
    path = tmp_path / "gpt.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)  # as saved from DDP
    pw = load_pretrained(weights=path)
    assert pw.config == GPTConfig(**{**TINY.to_dict(), "qkv_bias": False})
    assert pw.head is None
    assert "blocks.0.attn.qkv.bias" not in pw.backbone
    ref = copy.deepcopy(hf_model)
    with torch.no_grad():
        for block in ref.h:
            block.attn.c_attn.bias.zero_()
        ids = _ids()
        torch.testing.assert_close(
            build_classifier(pw, 2).backbone(ids), ref(ids).last_hidden_state, atol=ATOL, rtol=0
        )


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_llms_from_scratch_checkpoint(qkv_bias, tmp_path):
    ch04 = pytest.importorskip("llms_from_scratch.ch04")
    cfg = {
        "vocab_size": VOCAB,
        "context_length": CTX,
        "emb_dim": D,
        "n_heads": HEADS,
        "n_layers": LAYERS,
        "drop_rate": 0.0,
        "qkv_bias": qkv_bias,
    }
    torch.manual_seed(6)
    ref = ch04.GPTModel(cfg)
    if qkv_bias:  # the chapter-6 recipe: a classification head replaces the LM head
        ref.out_head = torch.nn.Linear(D, 2)
    _perturb(ref)
    path = tmp_path / "model.pth"
    torch.save(ref.state_dict(), path)
    pw = load_pretrained(weights=path)
    assert pw.config.qkv_bias is qkv_bias
    ids = _ids()
    with torch.no_grad():
        if qkv_bias:
            assert pw.head is not None
            clf = build_classifier(pw, 2)
            ours = clf(ids, torch.full((3,), ids.shape[1]))
            torch.testing.assert_close(ours, ref(ids)[:, -1, :], atol=ATOL, rtol=0)
        else:
            assert pw.head is None
            lm_logits = _backbone(pw)(ids) @ ref.out_head.weight.t()
            torch.testing.assert_close(lm_logits, ref(ids), atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------
# build_classifier


def test_build_classifier_seeds_head_and_copies_backbone(hf_dir):
    pw = load_pretrained(weights=hf_dir)
    a, b, c = (build_classifier(pw, 2, seed=s) for s in (0, 0, 1))
    assert not a.training and a.pooling == "last"
    assert torch.equal(a.head.weight, b.head.weight)
    assert not torch.equal(a.head.weight, c.head.weight)
    assert torch.equal(a.head.bias, torch.zeros(2))
    assert 0.01 < a.head.weight.std().item() < 0.03
    assert all(p.requires_grad and p.device.type == "cpu" for p in a.parameters())
    assert build_classifier(pw, 2, pooling="mean").pooling == "mean"
    with torch.no_grad():  # training the model must not change the loaded weights
        a.backbone.wte.weight.add_(1.0)
    assert torch.equal(b.backbone.wte.weight, pw.backbone["wte.weight"])


# ---------------------------------------------------------------------------------------------
# Unsafe, corrupt and missing files

EXECUTED: list[str] = []


def _record() -> None:
    EXECUTED.append("pickle ran code")


class _Payload:
    def __reduce__(self):
        return (_record, ())


def test_pickle_with_python_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"wte.weight": torch.zeros(2, 2), "extra": _Payload()}, path)
    with pytest.raises(PretrainedError, match="refused for safety") as exc:
        load_pretrained(weights=path)
    assert "safetensors" in str(exc.value)
    assert EXECUTED == []


def test_corrupt_files_raise_pretrained_error(hf_dir, tmp_path):
    data = (hf_dir / "model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(PretrainedError, match="truncated or corrupt"):
        load_pretrained(weights=tmp_path / "cut.safetensors")
    torch.save({"a": torch.zeros(3)}, tmp_path / "ok.pth")
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(PretrainedError, match=r"cut\.pth could not be read"):
        load_pretrained(weights=tmp_path / "cut.pth")
    with pytest.raises(PretrainedError, match="does not exist"):
        load_pretrained(weights=tmp_path / "nowhere")


def test_names_without_pretrained_weights(tmp_path):
    with pytest.raises(
        PretrainedError, match="gpt2-tiny has no pretrained weights; add --init random"
    ):
        load_pretrained(model="gpt2-tiny")
    with pytest.raises(PretrainedError, match="unknown model 'gpt3'"):
        load_pretrained(model="gpt3")
    with pytest.raises(PretrainedError, match="--init random"):
        load_pretrained()


def test_offline_name_not_in_cache_says_how_to_supply_it(tmp_path):
    with pytest.raises(PretrainedError) as exc:
        load_pretrained(model="gpt2")
    msg = str(exc.value)
    assert "gpt2 is not in the Hugging Face cache" in msg
    assert str(tmp_path / "hf_home" / "hub") in msg and "offline" in msg
    assert "--weights DIR" in msg and "--weights FILE.pth" in msg
    # ... and the way that needs no weights at all (issue 14)
    assert "--init random --model gpt2-mini --trainable all" in msg


@pytest.mark.parametrize("repo_dir", ["models--openai-community--gpt2", "models--gpt2"])
def test_name_resolves_from_hub_cache(repo_dir, hf_dir, tmp_path, monkeypatch):
    snap = tmp_path / "hf_home" / "hub" / repo_dir / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(hf_dir / name, snap / name)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("0123abc")
    monkeypatch.setitem(PRESETS, "gpt2", TINY)  # the cached "gpt2" is our tiny model
    pw = load_pretrained(model="gpt2")
    assert pw.source == f"hf:{snap / 'model.safetensors'}"
    assert pw.config == TINY
    ref = load_pretrained(weights=hf_dir)
    assert all(torch.equal(pw.backbone[k], ref.backbone[k]) for k in ref.backbone)
