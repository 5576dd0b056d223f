"""End-to-end training on a tiny CSV, the frozen-part cache, trainable sets, bucketing."""

from __future__ import annotations

import csv
import itertools
import json
import random
from pathlib import Path

import pytest
import torch

from clf_runtime.tokenizer import encode_batch
from clf_train.api import train
from clf_train.batches import epoch_batches, eval_batches, pad_ids
from clf_train.config import TrainConfig
from clf_train.frozen_cache import apply_trainable, build_store, forward_top
from clf_train.model import PRESETS, GPTClassifier, init_weights
from clf_train.run_dir import load_run

LABELS = ("food", "sport", "tech")
WORDS = {
    "sport": ["goal", "match", "team", "score", "ball", "coach"],
    "tech": ["code", "chip", "data", "cloud", "robot", "laptop"],
    "food": ["pizza", "bread", "soup", "apple", "cheese", "pasta"],
}
RUN_FILES = {
    "accuracy.png",
    "config.json",
    "data_report.json",
    "history.json",
    "loss.png",
    "metrics.json",
    "model.safetensors",
    "split/test.jsonl",
    "split/train.jsonl",
    "split/val.jsonl",
}


def write_csv(path: Path, n: int = 60) -> Path:
    """``n`` rows, custom column names, three balanced labels, varied lengths."""
    rng = random.Random(0)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "message", "topic"])
        for i in range(n):
            label = ("sport", "tech", "food")[i % 3]
            words = " and ".join(rng.choice(WORDS[label]) for _ in range(1 + i % 5))
            w.writerow([i, f"today I saw the {words}, number {i}", label])
    return path


def tiny_config(tmp_path: Path, out: str = "run", **kw: object) -> TrainConfig:
    values: dict = {
        "data": str(write_csv(tmp_path / "data.csv")),
        "text_col": "message",
        "label_col": "topic",
        "model": "gpt2-tiny",
        "init": "random",
        "trainable": "last-block",  # exercises the frozen-part cache (random init's default: all)
        "epochs": 2,
        "threads": 1,
        "progress": False,
        "out": str(tmp_path / out),
        **kw,
    }
    return TrainConfig(**values)


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_end_to_end_run_dir_files_and_metrics_schema(tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path))
    run = tmp_path / "run"
    assert files_under(run) == RUN_FILES
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"train", "val", "test"}
    assert sum(m["n"] for m in metrics.values()) == 60
    for m in metrics.values():
        assert set(m) == {"n", "accuracy", "loss", "per_class", "macro_f1", "confusion_matrix"}
        assert 0.0 <= m["accuracy"] <= 1.0
        assert m["loss"] > 0
        assert set(m["per_class"]) == set(LABELS)
        for c in m["per_class"].values():
            assert set(c) == {"precision", "recall", "f1", "support"}
        cm = m["confusion_matrix"]
        assert cm["labels"] == list(LABELS)
        assert sum(map(sum, cm["matrix"])) == m["n"]
        assert [sum(row) for row in cm["matrix"]] == [m["per_class"][x]["support"] for x in LABELS]
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history["epochs"]] == [1, 2]
    assert history["frozen_part"] == {"mode": "blocks", "start_block": 1, "cached": True}
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["labels"] == list(LABELS)
    assert cfg["max_length"] == 256
    assert cfg["train"]["lr"] == 5e-4 and cfg["train"]["epochs"] == 2
    assert cfg["train"]["seed"] == 123
    assert cfg["train"]["init_source"] == "random:gpt2-tiny:seed=123"
    # The saved weights reproduce the saved test metrics.
    _, run_cfg = load_run(run)
    assert run_cfg.labels == list(LABELS)
    assert result.metrics == metrics

    # Determinism: the same config and seed give identical metrics.
    again = train(tiny_config(tmp_path, out="run2"))
    assert again.metrics == metrics


def _tiny_model(n_labels: int = 3, pooling: str = "last") -> GPTClassifier:
    mcfg = PRESETS["gpt2-tiny"]
    model = GPTClassifier(mcfg, n_labels, pooling=pooling)
    init_weights(model, seed=7, n_layer=mcfg.n_layer)
    return model


TEXTS = [
    "hello",
    "a somewhat longer text about football matches",
    "",
    "x" * 40,
    "cheese",
    "hello again",
]


@pytest.mark.parametrize("budget", [4 * 1024**3, 0])  # cached, and the recompute fallback
@pytest.mark.parametrize("trainable", [0, 1, 2, None])  # head, last-block, last-2-blocks, all
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_frozen_cache_is_exact(trainable: int | None, budget: int, pooling: str) -> None:
    model = _tiny_model(pooling=pooling)
    spec = apply_trainable(model, trainable)
    ids = encode_batch(TEXTS, max_length=32)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    store = build_store(
        model, spec, {"train": ids}, device=torch.device("cpu"), budget_bytes=budget
    )["train"]
    assert store.cached == (budget > 0 and trainable is not None)
    model.train()  # dropout is 0: train mode must not change anything
    idx = [5, 0, 3, 1]
    inputs, lengths = store.batch(idx)
    cached = forward_top(model, spec, inputs, lengths)
    full = model(*pad_ids([ids[i] for i in idx]))
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-5)
    loss_c = torch.nn.functional.cross_entropy(cached, y[idx])
    loss_f = torch.nn.functional.cross_entropy(full, y[idx])
    assert abs(loss_c.item() - loss_f.item()) < 1e-5


def _state(path: Path) -> dict[str, torch.Tensor]:
    model, _ = load_run(path)
    return model.state_dict()


def _initial(model: str) -> dict[str, torch.Tensor]:
    m = GPTClassifier(PRESETS[model], len(LABELS))
    init_weights(m, seed=123, n_layer=PRESETS[model].n_layer)
    return m.state_dict()


def test_head_only_training_changes_only_the_head(tmp_path: Path) -> None:
    train(tiny_config(tmp_path, trainable="head", epochs=1))
    after, before = _state(tmp_path / "run"), _initial("gpt2-tiny")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}


def test_last_two_blocks_freeze_lower_blocks_and_embeddings(tmp_path: Path) -> None:
    train(tiny_config(tmp_path, model="gpt2-mini", trainable="last-2-blocks", epochs=1))
    after, before = _state(tmp_path / "run"), _initial("gpt2-mini")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen = [k for k in before if k.startswith(("backbone.wte", "backbone.wpe"))]
    frozen += [k for k in before if k.startswith(("backbone.blocks.0.", "backbone.blocks.1."))]
    assert not changed & set(frozen)
    assert {"backbone.ln_f.weight", "backbone.ln_f.bias", "head.weight"} <= changed
    assert any(k.startswith("backbone.blocks.2.") for k in changed)
    assert any(k.startswith("backbone.blocks.3.") for k in changed)


def test_length_bucketing_covers_every_example_once() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(1, 30) for _ in range(103)]
    seen_orders = set()
    for epoch in range(3):
        batches = epoch_batches(lengths, 8, seed=123, epoch=epoch)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(103))
        assert sorted(len(b) for b in batches) == [7] + [8] * 12
        # Buckets: the batches, taken by their shortest member, do not interleave in length.
        spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
        assert batches == epoch_batches(lengths, 8, seed=123, epoch=epoch)
        seen_orders.add(tuple(flat))
    assert len(seen_orders) == 3  # a new order every epoch
    assert sorted(i for b in eval_batches(lengths, 10) for i in b) == list(range(103))


def test_bf16_frozen_cache_is_close_to_fp32() -> None:
    model = _tiny_model()
    spec = apply_trainable(model, 1)
    ids = encode_batch(TEXTS, max_length=32)
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        store = build_store(model, spec, {"t": ids}, device=torch.device("cpu"), frozen_dtype=dtype)
        out[dtype] = forward_top(model, spec, *store["t"].batch(range(len(TEXTS))))
    diff = (out[torch.float32] - out[torch.bfloat16]).abs().max().item()
    assert 0 < diff < 0.02  # bf16 is really used, and stays close


def test_fit_refuses_an_unresolved_config(tmp_path: Path) -> None:
    from clf_train.trainer import fit

    model = _tiny_model()
    spec = apply_trainable(model, 1)
    store = build_store(model, spec, {"train": [[1, 2]], "val": [[3]]}, device=torch.device("cpu"))
    targets = {"train": torch.tensor([0]), "val": torch.tensor([1])}
    unresolved = tiny_config(tmp_path, epochs=None)
    assert unresolved.epochs is None and unresolved.lr is None
    with pytest.raises(ValueError, match=r"resolved config .*config\.resolved\(\)"):
        fit(model, spec, store, targets, unresolved, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    state, _ = fit(model, spec, store, targets, unresolved.resolved(), run_dir=tmp_path / "run")
    assert state.finished and len(state.history) == 5  # 5: the resolved default for --init random


def test_random_init_trains_everything_by_default(tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path, trainable=None, epochs=1))
    assert result.config.trainable == "all"
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["frozen_part"] == {"mode": "ids", "start_block": 0, "cached": False}
    assert not any("--trainable" in w for w in result.warnings)
    # An explicit frozen part with a random init trains, but says how to do better.
    result = train(tiny_config(tmp_path, out="run2", trainable="head", epochs=1))
    assert any("Pass --trainable all" in w for w in result.warnings)


def test_plots_have_a_title_integer_epochs_and_the_kept_epoch_marked(tmp_path: Path) -> None:
    from clf_train.plots import history_figure, plot_history

    history = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": v, "train_accuracy": 0.5, "val_accuracy": 0.6}
        for e, v in ((1, 0.9), (2, 0.4), (3, 0.7))
    ]
    fig = history_figure(history, "loss", ylabel="loss", best_epoch=2, title="loss: run-a")
    (ax,) = fig.axes
    assert ax.get_title() == "loss: run-a"
    best = [line for line in ax.get_lines() if line.get_label().startswith("best epoch")]
    assert [line.get_label() for line in best] == ["best epoch 2 (weights kept)"]
    assert list(best[0].get_xdata()) == [2, 2]
    ticks = ax.xaxis.get_major_locator().tick_values(1, 3)
    assert [t for t in ticks if 1 <= t <= 3] == [1, 2, 3]  # whole epochs: no 1.5, 2.5
    unmarked = history_figure(history, "loss", ylabel="loss")
    assert not any(line.get_label().startswith("best") for line in unmarked.axes[0].get_lines())
    (tmp_path / "run-a").mkdir()
    paths = plot_history(tmp_path / "run-a", history, best_epoch=2)
    assert [p.name for p in paths] == ["loss.png", "accuracy.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_train_marks_its_best_epoch_in_the_plots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clf_train.api as api

    seen: dict[str, object] = {}
    real = api.plot_history

    def spy(run_dir: Path, history: list, **kwargs: object) -> list[Path]:
        seen.update(kwargs)
        return real(run_dir, history, **kwargs)

    monkeypatch.setattr(api, "plot_history", spy)
    result = train(tiny_config(tmp_path, epochs=2))
    assert result.best_epoch in (1, 2) and seen == {"best_epoch": result.best_epoch}
