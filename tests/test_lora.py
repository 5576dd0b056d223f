"""LoRA (``--trainable lora``): flags, the appendix-E anchor, the merge, the run, the export.

The anchor is the chapter-6 recipe's own appendix E (``llms_from_scratch.appendix_e``): a tiny
``ch04.GPTModel`` wrapped by ``replace_linear_with_lora`` and the same model loaded by
``clf-train`` from its state dict must give the same logits before and after one AdamW step.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import clf_train.checkpoint as ckpt_mod
from clf_export import ParityError, export_run
from clf_export.cli import main as export_main
from clf_export.merge import merge_for_export
from clf_runtime import Classifier
from clf_runtime.tokenizer import encode_batch
from clf_train.api import describe_trainable, train
from clf_train.cli import main as train_main
from clf_train.config import LORA_TARGETS, ConfigError, TrainConfig
from clf_train.errors import RunDirError
from clf_train.frozen_cache import apply_trainable, build_store, forward_top
from clf_train.lora import (
    LoRALinear,
    LoraSettings,
    adapter_state_dict,
    adapters_from_appendix_e,
    add_adapters,
    make_trainable,
    merge_adapters,
)
from clf_train.model import PRESETS, GPTClassifier, init_weights
from clf_train.pretrained import build_classifier, load_pretrained
from clf_train.run_dir import load_run, read_split

appendix_e = pytest.importorskip("llms_from_scratch.appendix_e")
ch04 = pytest.importorskip("llms_from_scratch.ch04")

# gpt2-tiny's shape (so the loader infers its 4 heads), GPT-2's vocabulary (real token ids).
TINY_CH04 = {"vocab_size": 50257, "context_length": 32, "emb_dim": 128, "n_heads": 4,
             "n_layers": 2, "drop_rate": 0.0, "qkv_bias": True}  # fmt: skip
SPAMMY = ["WIN a FREE prize now", "URGENT claim your cash reward", "Free entry txt WIN to 8007"]
HAMMY = ["see you at lunch", "ok I will call you later", "are we still on for tonight"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_csv(path: Path, rows: int = 60) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["message", "category"])
        for i in range(rows):
            kind = ["spam", "ham"][i % 2]
            w.writerow([(SPAMMY if kind == "spam" else HAMMY)[i % 3] + f" #{i}", kind])
    return path


def tiny_model(seed: int = 0, labels: int = 3) -> GPTClassifier:
    cfg = PRESETS["gpt2-tiny"]
    model = GPTClassifier(cfg, labels)
    init_weights(model, seed=seed, n_layer=cfg.n_layer)
    return model


def randomize_b(model: torch.nn.Module, seed: int = 1) -> None:
    """B starts at zero (the update is then invisible): give it values, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


# --------------------------------------------------------------------------- flags and config


def test_lora_defaults_fill_in_only_for_lora() -> None:
    cfg = TrainConfig(data="x", out="o", trainable="lora", lora_rank=8).resolved()
    assert (cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets) == (8, 16.0, "all")
    assert (cfg.lora_dropout, cfg.lora_blocks) == (0.0, "all")
    assert LoraSettings.from_config(cfg).scaling == 2.0
    plain = TrainConfig(data="x", out="o").resolved()
    assert plain.lora_rank is None and plain.lora_targets is None


@pytest.mark.parametrize(
    ("argv", "lines"),
    [
        (
            ["--trainable", "lora", "--lora-rank", "0", "--lora-alpha", "-1",
             "--lora-dropout", "1", "--lora-blocks", "last-3"],
            ["--lora-rank must be an integer >= 1, got 0",
             "--lora-alpha must be a finite number > 0, got -1.0",
             "--lora-dropout must be in [0, 1), got 1.0",
             "--lora-blocks last-3: gpt2-tiny has only 2 blocks"],
        ),
        (
            ["--lora-rank", "8", "--lora-targets", "q,v"],
            # --init random (in `base`): the default --trainable is all.
            ["--lora-rank, --lora-targets only apply with --trainable lora (got --trainable "
             "all); add --trainable lora or drop them"],
        ),
        (
            ["--trainable", "lora", "--lora-targets", "q,query,mlp", "--lora-blocks", "top-2"],
            ["--lora-targets takes a comma-separated list of q, k, v, attn-out, mlp-in, "
             "mlp-out, head (or all), got 'q,query,mlp': unknown targets query, mlp",
             "--lora-blocks must be all or last-N (N >= 1, e.g. last-2), got 'top-2'"],
        ),
    ],
)  # fmt: skip
def test_bad_lora_flags_are_refused_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], lines: list[str]
) -> None:
    out = tmp_path / "never"
    base = ["--data", "x.csv", "--model", "gpt2-tiny", "--init", "random", "--out", str(out)]
    assert train_main([*base, *argv]) == 2
    err = capsys.readouterr().err
    for line in lines:
        assert line in err
    assert not out.exists()


def test_resume_refuses_lora_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert train_main(["--resume", "r", "--lora-rank", "4"]) == 2
    assert "drop --lora-rank" in capsys.readouterr().err


# --------------------------------------------------------------------------- the appendix


def _appendix_gpt2_small_count() -> int:
    """The appendix's own count, on its own model: GPT-2 small, a 2-class head, everything
    frozen, then ``replace_linear_with_lora(rank=16, alpha=16)`` (shapes only: meta device)."""
    cfg = {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768, "n_heads": 12,
           "n_layers": 12, "drop_rate": 0.0, "qkv_bias": True}  # fmt: skip
    with torch.device("meta"):
        model = ch04.GPTModel(cfg)
        model.out_head = torch.nn.Linear(768, 2)
        for p in model.parameters():
            p.requires_grad = False
        appendix_e.replace_linear_with_lora(model, rank=16, alpha=16)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_gpt2_small_trainable_count_is_the_appendix_count() -> None:
    """GPT-2 small shape, random weights, the default LoRA flags (rank 16, every target)."""
    with torch.device("meta"):  # counts depend on shapes only: no 500 MB of random weights
        model = GPTClassifier(PRESETS["gpt2"], 2)
    cfg = TrainConfig(data="x", out="o", init="random", trainable="lora").resolved()
    add_adapters(model, LoraSettings.from_config(cfg), seed=cfg.seed)
    info = describe_trainable(model, make_trainable(model), cfg)
    assert info["trainable_parameters"] == _appendix_gpt2_small_count() == 2_666_528
    assert info["total_parameters"] == 124_439_808 + 768 * 2 + 2 + 2_666_528
    assert info["lora"]["targets"] == list(LORA_TARGETS)
    # The head's base is frozen (only its adapter learns); the final norm too.
    assert not model.head.weight.requires_grad and not model.backbone.ln_f.weight.requires_grad


def test_appendix_scaling_is_alpha_times_rank_here() -> None:
    """Appendix E's rank 16, alpha a on W_query, W_key, W_value == our fused qkv with q, k, v
    adapters, --lora-alpha a * 16, the same A and B (transposed: they store A (in, r))."""
    torch.manual_seed(3)
    d, r, alpha = 32, 16, 16
    theirs = {p: appendix_e.LinearWithLoRA(torch.nn.Linear(d, d), r, alpha) for p in "qkv"}
    for layer in theirs.values():
        torch.nn.init.normal_(layer.lora.B, std=0.1)  # zeros would make the check trivial
    fused = torch.nn.Linear(d, 3 * d)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([theirs[p].linear.weight for p in "qkv"]))
        fused.bias.copy_(torch.cat([theirs[p].linear.bias for p in "qkv"]))
    ours = LoRALinear(fused, parts="qkv", adapted="qkv", rank=r, scaling=alpha * r / r, dropout=0)
    assert LoraSettings(rank=r, alpha=alpha * r, targets=("q",)).scaling == ours.scaling
    with torch.no_grad():
        for p in "qkv":
            ours.lora_A[p].copy_(theirs[p].lora.A.t())
            ours.lora_B[p].copy_(theirs[p].lora.B.t())
    x = torch.randn(2, 5, d)
    want = torch.cat([theirs[p](x) for p in "qkv"], dim=-1)
    torch.testing.assert_close(ours(x), want, atol=1e-5, rtol=0)
    assert (ours(x) - fused(x)).abs().max() > 1e-2  # the adapters do contribute


def _same_length_texts(n: int, tokens: int) -> list[str]:
    """``n`` distinct texts of exactly ``tokens`` GPT-2 tokens (no padding in a batch, so the
    appendix model's last position is our last real token)."""
    words = ["cat", "dog", "win", "cash", "now", "lunch", "call", "free", "prize", "home"]
    out = []
    for i in range(10**4):
        text = " ".join(words[(i // 10**k) % 10] for k in range(tokens))
        if len(encode_batch([text], max_length=64)[0]) == tokens:
            out.append(text)
        if len(out) == n:
            return out
    raise AssertionError("not enough same-length texts")


def test_anchor_appendix_e_model_trained_one_step_by_clf_train(tmp_path: Path) -> None:
    """The issue's anchor: a tiny ch04 GPTModel with appendix E's adapters, loaded by
    clf-train through the chapter-6 state-dict path (--weights), gives the appendix model's
    logits before and after one AdamW step on the same batch (<= 1e-5)."""
    rank, alpha, lr = 4, 2.0, 1e-2
    cfg = TINY_CH04
    torch.manual_seed(11)
    ref = ch04.GPTModel(cfg)
    ref.out_head = torch.nn.Linear(128, 2)  # the recipe's classification head (ham, spam)
    for p in ref.parameters():
        p.requires_grad = False
    appendix_e.replace_linear_with_lora(ref, rank=rank, alpha=alpha)
    with torch.no_grad():  # B = 0 at init would hide a wrong A mapping "before" the step
        for name, p in ref.named_parameters():
            if name.endswith("lora.B"):
                p.normal_(std=0.1)
    weights = tmp_path / "appendix_e.pth"
    torch.save(ref.state_dict(), weights)

    texts = _same_length_texts(12, tokens=6)
    labels = ["ham", "spam"] * 6
    for name, rows in (("train", range(8)), ("val", range(8, 10)), ("test", range(10, 12))):
        with (tmp_path / f"{name}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label"])
            w.writerows([texts[i], labels[i]] for i in rows)
    ids = torch.tensor(encode_batch(texts, max_length=64))  # (12, 6)
    lengths = torch.full((12,), ids.shape[1])
    y = torch.tensor([0, 1] * 4)

    # Before: the model clf-train builds from the file (its _build_model, by public pieces).
    pw = load_pretrained(weights=weights)
    before = build_classifier(pw, 2)
    initial, file_rank = adapters_from_appendix_e(pw.lora)
    assert file_rank == rank
    add_adapters(before, LoraSettings(rank, alpha * rank, LORA_TARGETS), seed=0, initial=initial)
    ref.eval()
    with torch.no_grad():
        want0 = ref(ids)[:, -1, :]
        torch.testing.assert_close(before.eval()(ids, lengths), want0, atol=1e-5, rtol=0)

    # After one step: clf-train, one epoch of one batch (all 8 training texts).
    train(
        TrainConfig(
            data=str(tmp_path / "train.csv"), val_data=str(tmp_path / "val.csv"),
            test_data=str(tmp_path / "test.csv"), weights=str(weights), trainable="lora",
            lora_rank=rank, lora_alpha=alpha * rank, epochs=1, batch_size=8, lr=lr,
            weight_decay=0.1, threads=1, progress=False, out=str(tmp_path / "run"),
        )
    )  # fmt: skip
    ref.train()
    opt = torch.optim.AdamW(
        [p for p in ref.parameters() if p.requires_grad], lr=lr, weight_decay=0.1
    )
    torch.nn.functional.cross_entropy(ref(ids[:8])[:, -1, :], y).backward()
    opt.step()
    ref.eval()
    after, _ = load_run(tmp_path / "run", merge=False)
    with torch.no_grad():
        want1 = ref(ids)[:, -1, :]
        torch.testing.assert_close(after(ids, lengths), want1, atol=1e-5, rtol=0)
    assert (want1 - want0).abs().max() > 1e-2  # the step really moved the logits


def test_appendix_file_needs_trainable_lora_and_its_rank(tmp_path: Path) -> None:
    cfg = TINY_CH04
    ref = ch04.GPTModel(cfg)
    ref.out_head = torch.nn.Linear(128, 2)
    appendix_e.replace_linear_with_lora(ref, rank=4, alpha=1)
    weights = tmp_path / "e.pth"
    torch.save(ref.state_dict(), weights)
    data = write_csv(tmp_path / "d.csv")
    common = {"data": str(data), "weights": str(weights), "progress": False}
    for extra in ({}, {"trainable": "lora", "lora_rank": 8}):
        out = tmp_path / f"never{len(extra)}"
        with pytest.raises(ConfigError, match=r"holds rank-4 LoRA adapters.*--lora-rank 4"):
            train(TrainConfig(**common, **extra, out=str(out)))
        assert not out.exists()
    with pytest.raises(Exception, match=r"appendix-E LoRA adapters.*cannot be merged here"):
        from clf_export import export_state_dict

        export_state_dict(weights, tmp_path / "x", labels=["ham", "spam"])


# --------------------------------------------------------------------------- adapters and merge


def test_seeded_init_starts_at_the_base_model() -> None:
    settings = LoraSettings(rank=4, alpha=8.0, targets=LORA_TARGETS)
    a, b, c = tiny_model(), tiny_model(), tiny_model()
    add_adapters(a, settings, seed=5)
    add_adapters(b, settings, seed=5)
    add_adapters(c, settings, seed=6)
    sa, sb, sc = (adapter_state_dict(m) for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # reproducible from --seed
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if ".lora_A." in k)
    for k, v in sa.items():
        if ".lora_B." in k:
            assert not v.any()
        else:  # peft's Kaiming-uniform bound, fan-in = in_features
            assert 0.5 / math.sqrt(v.shape[1]) < v.abs().max() <= 1 / math.sqrt(v.shape[1])
    ids, lengths = torch.randint(0, 50257, (2, 7)), torch.tensor([7, 3])
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(ids, lengths), tiny_model().eval()(ids, lengths))


def test_merge_matches_unmerged_with_partial_qkv_targets() -> None:
    model = tiny_model()
    add_adapters(model, LoraSettings(rank=4, alpha=8.0, targets=("q", "v", "head")), seed=0)
    randomize_b(model)
    assert sorted({k.rsplit(".", 1)[1] for k in adapter_state_dict(model)}) == ["head", "q", "v"]
    merged = merge_adapters(model.eval())
    assert set(merged.state_dict()) == set(tiny_model().state_dict())  # a plain classifier
    d = model.cfg.d_model
    base_qkv = tiny_model().backbone.blocks[0].attn.qkv.weight
    moved = (merged.backbone.blocks[0].attn.qkv.weight - base_qkv).abs().amax(dim=1)
    assert moved[:d].min() > 0 and moved[2 * d :].min() > 0
    assert not moved[d : 2 * d].any()  # k has no adapter: its third is untouched
    ids = torch.randint(0, 50257, (3, 9), generator=torch.Generator().manual_seed(2))
    lengths = torch.tensor([9, 2, 5])
    with torch.no_grad():
        want = model(ids, lengths)
        torch.testing.assert_close(merged(ids, lengths), want, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.forward_last_only(ids, lengths), want, atol=1e-5, rtol=0)
        assert (want - tiny_model().eval()(ids, lengths)).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("blocks", "targets", "mode", "start"),
    [(1, LORA_TARGETS, "blocks", 1), (None, LORA_TARGETS, "ids", 0), (1, ("head",), "pooled", 2),
     (None, ("q", "mlp-out"), "ids", 0)],
)  # fmt: skip
def test_frozen_prefix_below_the_adapted_blocks_is_cached(
    blocks: int | None, targets: tuple[str, ...], mode: str, start: int
) -> None:
    model = tiny_model()
    add_adapters(model, LoraSettings(4, 8.0, targets, blocks=blocks), seed=0)
    randomize_b(model)
    spec = make_trainable(model)
    assert (spec.mode, spec.start) == (mode, start)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(adapter_state_dict(model)) | (
        set() if "head" in targets else {"head.weight", "head.bias"}
    )
    ids = encode_batch(["hello there", "a longer text about lunch", "x"], max_length=32)
    store = build_store(model, spec, {"train": ids}, device=torch.device("cpu"))["train"]
    assert store.cached is (mode != "ids")
    inputs, lengths = store.batch([0, 1, 2])
    model.eval()
    with torch.no_grad():
        got = forward_top(model, spec, inputs, lengths)
        padded = torch.full((3, max(map(len, ids))), 50256)
        for i, s in enumerate(ids):
            padded[i, : len(s)] = torch.tensor(s)
        torch.testing.assert_close(got, model(padded, lengths), atol=1e-5, rtol=0)


def test_merge_that_changes_logits_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    add_adapters(model, LoraSettings(4, 8.0, LORA_TARGETS), seed=0)
    randomize_b(model)
    _, record = merge_for_export(model.eval(), max_length=16)
    assert record is not None and record["max_abs_logit_diff"] <= 1e-5
    assert record["adapter_parameters"] == sum(
        v.numel() for v in adapter_state_dict(model).values()
    )
    real = LoRALinear.merged_weight
    # Random, not constant: a constant shift of every weight vanishes in the LayerNorms.
    noise = torch.Generator().manual_seed(0)
    monkeypatch.setattr(
        LoRALinear,
        "merged_weight",
        lambda self: real(self) + 1e-2 * torch.randn(self.weight.shape, generator=noise),
    )
    with pytest.raises(ParityError, match="merging the LoRA adapters changed the logits"):
        merge_for_export(model, max_length=16)
    plain = tiny_model().eval()
    assert merge_for_export(plain, max_length=16) == (plain, None)


# --------------------------------------------------------------------------- run and export


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A finished tiny LoRA run made by the CLI; (run dir, what it printed)."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("lora")
    data = write_csv(root / "sms.csv")
    argv = ["--data", str(data), "--text-col", "message", "--label-col", "category",
            "--model", "gpt2-tiny", "--init", "random", "--trainable", "lora", "--lora-rank", "8",
            "--lora-alpha", "16", "--lora-targets", "q,k,v,attn-out,mlp-in,mlp-out",
            "--lora-blocks", "last-1", "--epochs", "3", "--lr", "2e-3", "--threads", "1",
            "--no-progress", "--out", str(root / "run")]  # fmt: skip
    printed = io.StringIO()
    torch.set_num_threads(1)
    with contextlib.redirect_stdout(printed):
        assert train_main(argv) == 0
    return root / "run", printed.getvalue()


def test_lora_run_directory(lora_run: tuple[Path, str]) -> None:
    run, printed = lora_run
    cfg = json.loads((run / "config.json").read_text())["train"]
    assert cfg["trainable"] == "lora"
    assert cfg["lora"] == {"rank": 8, "alpha": 16.0, "scaling": 2.0, "blocks": "last-1",
                           "targets": ["q", "k", "v", "attn-out", "mlp-in", "mlp-out"],
                           "dropout": 0.0}  # fmt: skip
    # Block 1 only: q, k, v (3 x (8 x 128 + 128 x 8)), attn-out, mlp-in, mlp-out; the head
    # has no adapter and trains in full (128 x 2 + 2).
    d, r = 128, 8
    expected = 4 * (r * d + d * r) + (r * d + 4 * d * r) + (r * 4 * d + d * r) + (2 * d + 2)
    assert cfg["trainable_parameters"] == expected
    assert (
        f"trainable parameters: {expected:,} of {cfg['total_parameters']:,}" in printed
        and "--trainable lora (rank 8, alpha 16, scaling 2, targets q,k,v,attn-out,mlp-in,"
        "mlp-out, blocks last-1)"
        in printed
    )
    history = json.loads((run / "history.json").read_text())
    assert history["frozen_part"] == {"mode": "blocks", "start_block": 1, "cached": True}
    adapter = load_file(str(run / "adapter.safetensors"))
    assert all(k.startswith("backbone.blocks.1.") for k in adapter)
    assert sum(v.numel() for v in adapter.values()) == expected - (2 * d + 2)
    base = load_file(str(run / "model.safetensors"))
    assert set(base) == set(tiny_model(labels=2).state_dict())
    # The base is the seeded random init untouched, except the head that trained in full.
    init = GPTClassifier(PRESETS["gpt2-tiny"], 2)
    init_weights(init, seed=123, n_layer=2)
    frozen = {k for k, v in init.state_dict().items() if torch.equal(v, base[k])}
    assert frozen == set(base) - {"head.weight", "head.bias"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.75  # learned something through the adapters


def test_lora_export_merges_and_serves(lora_run: tuple[Path, str], tmp_path: Path) -> None:
    run, _ = lora_run
    out = tmp_path / "export"
    assert export_main([str(run), "--out", str(out), "--quantize", "--threads", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    lora = report["lora"]
    assert lora["merged"] is True and lora["tolerance"] == 1e-5
    assert 0 <= lora["max_abs_logit_diff"] <= 1e-5 and len(lora["shapes"]) == 4
    assert lora["adapted_layers"] == [f"backbone.blocks.1.{m}" for m in
                                      ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")]  # fmt: skip
    # The graph is the plain classifier's: int8 quantizes the same MatMuls as any export.
    assert report["int8"]["int8_matmuls"] == 12
    assert report["evaluation"]["int8_vs_fp32"]["argmax_agreement"] >= 0.995

    merged, _ = load_run(run)  # merge=True by default
    unmerged, _ = load_run(run, merge=False)
    texts, _ = read_split(run, "test")
    ids = encode_batch(texts, max_length=64)
    with torch.no_grad():
        want = np.concatenate(
            [
                torch.softmax(unmerged(torch.tensor([s]), torch.tensor([len(s)])), -1).numpy()
                for s in ids
            ]
        )
        again = np.concatenate(
            [
                torch.softmax(merged(torch.tensor([s]), torch.tensor([len(s)])), -1).numpy()
                for s in ids
            ]
        )
    np.testing.assert_allclose(again, want, atol=1e-6, rtol=0)
    fp32 = Classifier.load(out, precision="fp32", providers="cpu", threads=1)
    np.testing.assert_allclose(fp32.predict_proba(texts), want, atol=1e-5, rtol=0)


def test_adapter_that_does_not_belong_to_the_base_is_refused(
    lora_run: tuple[Path, str], tmp_path: Path
) -> None:
    import shutil

    run, _ = lora_run
    broken = tmp_path / "run"
    shutil.copytree(run, broken)
    base = load_file(str(broken / "model.safetensors"))
    base["head.bias"] = base["head.bias"] + 1
    save_file(base, str(broken / "model.safetensors"))
    with pytest.raises(RunDirError, match="an adapter only works on the weights it was trained"):
        export_run(broken, tmp_path / "x")
    (broken / "adapter.safetensors").unlink()
    with pytest.raises(RunDirError, match=r"adapter\.safetensors is missing"):
        load_run(broken)
    assert not (tmp_path / "x").exists()


def _resume_config(data: Path, out: Path) -> TrainConfig:
    return TrainConfig(
        data=str(data), text_col="message", label_col="category", model="gpt2-tiny",
        init="random", trainable="lora", lora_rank=4, lora_dropout=0.1, dropout=0.1, epochs=2,
        checkpoint_every=1, threads=1, progress=False, out=str(out),
    )  # fmt: skip


def test_lora_resume_after_a_crash_gives_identical_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dropout in the blocks and on the adapters' input: the re-seeded masks must replay."""
    data = write_csv(tmp_path / "d.csv")
    expected = train(_resume_config(data, tmp_path / "ref")).metrics

    class Boom(Exception):
        pass

    real = ckpt_mod._save_optimizer
    calls = {"n": 0}

    def crash_on_third(path: Path, state: dict) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise Boom("simulated kill in a checkpoint write")
        real(path, state)

    monkeypatch.setattr(ckpt_mod, "_save_optimizer", crash_on_third)
    with pytest.raises(Boom):
        train(_resume_config(data, tmp_path / "run"))
    monkeypatch.setattr(ckpt_mod, "_save_optimizer", real)
    result = train(TrainConfig(resume=str(tmp_path / "run"), progress=False))
    assert result.metrics == expected
    a, b = (load_file(str(tmp_path / d / "adapter.safetensors")) for d in ("ref", "run"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_other_strategies_report_their_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_csv(tmp_path / "d.csv")
    argv = ["--data", str(data), "--model", "gpt2-tiny", "--init", "random", "--trainable",
            "head", "--epochs", "1", "--threads", "1", "--no-progress",
            "--out", str(tmp_path / "r")]  # fmt: skip
    assert train_main(argv) == 0
    total = sum(p.numel() for p in tiny_model(labels=2).parameters())
    share = f"{100 * 258 / total:.3g}"
    assert f"trainable parameters: 258 of {total:,} ({share} %), --trainable head\n" in (
        capsys.readouterr().out
    )
    assert (
        json.loads((tmp_path / "r" / "config.json").read_text())["train"]["trainable_parameters"]
        == 258
    )
    model = tiny_model(labels=2)
    cfg = TrainConfig(data="x", out="o", model="gpt2-tiny", init="random", trainable="head")
    info = describe_trainable(model, apply_trainable(model, 0), cfg)
    assert info["trainable_parameters"] == 128 * 2 + 2 and info["lora"] is None
    assert info["total_parameters"] == sum(p.numel() for p in model.parameters())
