"""End to end on a temp dir: clf-train -> clf-export (int8, fp16) -> clf_runtime, plus the
Hugging Face path: a GPT-2 directory trained with --trainable head must give exactly
``head(transformers' hidden state at the last token)``, in torch and in the exported ONNX."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clf_export.cli import main as export_main
from clf_runtime import Classifier
from clf_runtime.tokenizer import encode_batch
from clf_train.cli import main as train_main
from clf_train.run_dir import load_run, read_split

SPAMMY = ["WIN a FREE prize now", "URGENT claim your cash reward", "Free entry txt WIN to 8007"]
HAMMY = ["see you at lunch", "ok I will call you later", "are we still on for tonight"]


def _write_csv(path: Path, rows: int = 60) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "message", "category"])  # unusual column names on purpose
        for i in range(rows):
            kind = ["spam", "ham"][i % 2]
            text = (SPAMMY if kind == "spam" else HAMMY)[i % 3] + f" #{i}"
            w.writerow([i, text, kind])


def test_train_export_predict(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data, run, out = tmp_path / "sms.csv", tmp_path / "run", tmp_path / "export"
    _write_csv(data)
    args = ["--data", str(data), "--text-col", "message", "--label-col", "category"]
    args += ["--model", "gpt2-tiny", "--init", "random", "--trainable", "all", "--epochs", "3"]
    assert train_main([*args, "--no-progress", "--threads", "1", "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n"] == 12 and 0.0 <= metrics["test"]["accuracy"] <= 1.0

    assert export_main([str(run), "--out", str(out), "--quantize", "--fp16"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert {m["file"] for m in report["models"]} == {
        "model.onnx", "model.int8.onnx", "model.fp16.onnx",
    }  # fmt: skip

    model, cfg = load_run(run)
    texts, _ = read_split(run, "test")
    texts = [*texts, "", "<|endoftext|>", "x" * 5000]
    with torch.no_grad():
        want = np.concatenate(
            [
                torch.softmax(model(torch.tensor([ids]), torch.tensor([len(ids)])), -1).numpy()
                for ids in encode_batch(texts, max_length=cfg.max_length)
            ]
        )
    fp32 = Classifier.load(out, precision="fp32", providers="cpu", threads=1)
    assert fp32.labels == ("ham", "spam")
    np.testing.assert_allclose(fp32.predict_proba(texts), want, atol=1e-5, rtol=0)

    int8 = Classifier.load(out, providers="cpu", threads=1)  # a directory on CPU -> int8
    assert int8.model_path.name == "model.int8.onnx"
    probs = int8.predict_proba(texts)
    assert (probs.argmax(1) == want.argmax(1)).mean() >= 0.9
    alone = np.concatenate([int8.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(probs, alone, atol=1e-5, rtol=0)  # batch mates do not matter


def test_hf_directory_head_only_matches_transformers(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    torch.set_num_threads(1)
    hf_cfg = transformers.GPT2Config(
        vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=2
    )
    torch.manual_seed(0)
    hf = transformers.GPT2Model(hf_cfg).eval()
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    data, run, out = tmp_path / "d.csv", tmp_path / "run", tmp_path / "export"
    _write_csv(data, rows=40)
    args = ["--data", str(data), "--text-col", "message", "--label-col", "category"]
    args += ["--weights", str(tmp_path / "hf"), "--trainable", "head", "--epochs", "2"]
    assert train_main([*args, "--lr", "1e-2", "--no-progress", "--out", str(run)]) == 0
    assert export_main([str(run), "--out", str(out)]) == 0

    model, cfg = load_run(run)
    assert cfg.max_length == 64  # min(256, the checkpoint's 64 positions)
    texts = ["hello there", "WIN a FREE prize now, reply WIN", "a"]
    seqs = encode_batch(texts, max_length=cfg.max_length)
    width = max(map(len, seqs))
    ids = torch.tensor([s + [50256] * (width - len(s)) for s in seqs])
    lengths = torch.tensor([len(s) for s in seqs])
    with torch.no_grad():
        hidden = hf(input_ids=ids).last_hidden_state  # (B, T, C); right padding is harmless
        last = hidden[torch.arange(len(seqs)), lengths - 1]  # (B, C)
        want = last @ model.head.weight.T + model.head.bias  # (B, num_labels)
        ours = model(ids, lengths)
    np.testing.assert_allclose(ours.numpy(), want.numpy(), atol=1e-5, rtol=0)

    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"input_ids": ids.numpy(), "lengths": lengths.numpy()})[0]
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=0)
