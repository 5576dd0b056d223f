"""Step time of training strategies, in process, interleaved, and their extrapolated 5-epoch time.

Used by ``bench_training.py`` for the LoRA rows: a full 5-epoch run of LoRA on every block of
GPT-2 small takes most of an hour on 2 busy cores, so each strategy is timed on a few steps
instead, all strategies the same way, and the total is extrapolated from what was measured.

For each strategy (``--trainable last-block``, ``lora``, ``lora --lora-blocks last-2`` ...):

1. :func:`prepare`: the model is built as ``clf-train`` builds it
   (:func:`clf_train.pretrained.load_pretrained` of the shared ``init.pth``,
   :func:`~clf_train.pretrained.build_classifier`, the adapters of
   :func:`clf_train.lora.add_adapters` seeded by ``--seed``), its trainable part set, and the
   frozen-part caches of every split filled (:func:`clf_train.frozen_cache.build_store`):
   ``setup_seconds``;
2. :func:`step`: one optimizer step, exactly the inner loop of :func:`clf_train.trainer.fit`
   (re-seed, zero grads, :func:`~clf_train.frozen_cache.forward_top`, cross-entropy, backward,
   fused AdamW step) on the next batch of epoch 1 (:func:`clf_train.batches.epoch_batches`:
   length-bucketed, shuffled). The caller interleaves the strategies step by step, so that a
   change of machine load hits them alike; the first ``warmup`` steps are not counted;
3. :func:`finish`: one validation pass (:func:`clf_train.trainer.evaluate`), timed, and the row.

Extrapolation (``five_epoch_seconds``): setup + 5 x (steps per epoch x mean step + validation
pass) + the final evaluation of every split, taken as the validation pass scaled by the
number of texts. The process start-up and file writing of a real run are not included (the
last-block row of ``bench_training.py``'s real run measures those).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EPOCHS = 5


@dataclass
class Strategy:
    """One strategy, ready to step: the model, its caches, optimizer and epoch-1 batches."""

    name: str
    trainable: str
    info: dict[str, Any]
    model: Any
    spec: Any
    stores: dict[str, Any]
    targets: dict[str, Any]
    optimizer: Any
    batches: list[list[int]]
    seed: int
    setup_seconds: float
    step_seconds: list[float] = field(default_factory=list)
    steps_done: int = 0


def prepare(
    name: str,
    init: Path,
    splits: Mapping[str, tuple[Sequence[str], Sequence[str]]],
    *,
    trainable: str,
    lora: Mapping[str, Any] | None = None,
    batch_size: int = 8,
    lr: float = 5e-5,
    seed: int = 123,
) -> Strategy:
    """Build one strategy on ``splits`` ({"train"|"val"|"test": (texts, labels)}), timed.
    ``lora``: the ``lora_*`` fields of ``TrainConfig`` for ``trainable`` "lora"."""
    import torch

    from clf_runtime.tokenizer import encode_batch
    from clf_train.api import describe_trainable
    from clf_train.batches import epoch_batches
    from clf_train.config import LORA, TrainConfig, parse_trainable
    from clf_train.frozen_cache import apply_trainable, build_store
    from clf_train.lora import LoraSettings, add_adapters, make_trainable
    from clf_train.pretrained import build_classifier, load_pretrained
    from clf_train.trainer import label_targets

    cfg = TrainConfig(
        data="-", out="-", weights=str(init), trainable=trainable, lr=lr, batch_size=batch_size,
        seed=seed, **dict(lora or {}),
    ).resolved()  # fmt: skip
    cfg.validate()
    labels = sorted(set(splits["train"][1]))
    device = torch.device("cpu")

    t0 = time.perf_counter()
    model = build_classifier(load_pretrained(weights=init), len(labels), seed=seed)
    if trainable == LORA:
        add_adapters(model, LoraSettings.from_config(cfg), seed=seed)
        spec = make_trainable(model)
    else:
        spec = apply_trainable(model, parse_trainable(trainable))
    info = describe_trainable(model, spec, cfg)
    ids = {name: encode_batch(list(texts), max_length=256) for name, (texts, _) in splits.items()}
    targets = {name: label_targets(list(y), labels, device) for name, (_, y) in splits.items()}
    stores = build_store(model, spec, ids, device=device)
    setup = time.perf_counter() - t0
    params = [p for p in model.parameters() if p.requires_grad]
    return Strategy(
        name=name,
        trainable=trainable,
        info=info,
        model=model,
        spec=spec,
        stores=stores,
        targets=targets,
        optimizer=torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, fused=True),
        batches=epoch_batches(stores["train"].lengths, batch_size, seed=seed, epoch=0),
        seed=seed,
        setup_seconds=setup,
    )


def step(s: Strategy, *, timed: bool) -> None:
    """One optimizer step on the next batch of epoch 1 (as :func:`clf_train.trainer.fit`)."""
    import torch
    import torch.nn.functional as F

    from clf_train.batches import derive_seed
    from clf_train.frozen_cache import forward_top

    if s.steps_done >= len(s.batches):
        raise ValueError(f"{s.name}: more steps than the {len(s.batches)} of an epoch")
    idx = s.batches[s.steps_done]
    s.model.train()
    start = time.perf_counter()
    torch.manual_seed(derive_seed(s.seed, "dropout", 0, s.steps_done))
    s.optimizer.zero_grad(set_to_none=True)
    inputs, lengths = s.stores["train"].batch(idx)
    logits = forward_top(s.model, s.spec, inputs, lengths)  # (B, num_labels)
    F.cross_entropy(logits.float(), s.targets["train"][idx]).backward()
    s.optimizer.step()
    if timed:
        s.step_seconds.append(time.perf_counter() - start)
    s.steps_done += 1


def finish(s: Strategy, *, merge_check: bool = False) -> dict[str, Any]:
    """The validation pass (timed) and the strategy's row. With ``merge_check`` (LoRA only)
    the adapters trained so far are merged as ``clf-export`` does and the merged-vs-unmerged
    table is added."""
    from clf_train.trainer import evaluate

    start = time.perf_counter()
    evaluate(s.model, s.spec, s.stores["val"], s.targets["val"])
    val_pass = time.perf_counter() - start
    n_texts = {name: len(store) for name, store in s.stores.items()}
    mean_step = statistics.fmean(s.step_seconds)
    final_eval = val_pass * sum(n_texts.values()) / n_texts["val"]
    epoch = len(s.batches) * mean_step + val_pass
    row: dict[str, Any] = {
        "trainable": s.trainable,
        "lora": s.info["lora"],
        "trainable_parameters": s.info["trainable_parameters"],
        "frozen_part": {
            **s.info["frozen_part"],
            "cached": all(x.cached for x in s.stores.values()),
        },
        "setup_seconds": round(s.setup_seconds, 2),
        "timed_steps": len(s.step_seconds),
        "warmup_steps": s.steps_done - len(s.step_seconds),
        "median_step_seconds": round(statistics.median(s.step_seconds), 4),
        "mean_step_seconds": round(mean_step, 4),
        "steps_per_epoch": len(s.batches),
        "val_pass_seconds": round(val_pass, 2),
        "five_epoch_seconds": round(s.setup_seconds + EPOCHS * epoch + final_eval, 1),
        "extrapolated": True,
    }
    if merge_check and s.info["lora"] is not None:
        from clf_export.merge import merge_for_export

        _, record = merge_for_export(s.model.eval(), max_length=256)
        assert record is not None  # a LoRA model has adapters
        row["merge_check"] = {k: record[k] for k in ("max_abs_logit_diff", "tolerance", "shapes")}
    return row
