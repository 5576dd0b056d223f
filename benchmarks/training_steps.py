"""Step time of a training strategy, in process, and its extrapolated 5-epoch time.

Used by ``bench_training.py`` for the LoRA rows: a full 5-epoch run of LoRA on every block of
GPT-2 small takes most of an hour on 2 busy cores, so each strategy is timed on a few steps
instead, all strategies the same way, and the total is extrapolated from what was measured.

For one strategy (``--trainable last-block``, ``lora``, ``lora --lora-blocks last-2`` ...):

1. the model is built as ``clf-train`` builds it (:func:`clf_train.pretrained.load_pretrained`
   of the shared ``init.pth``, :func:`~clf_train.pretrained.build_classifier`, the adapters of
   :func:`clf_train.lora.add_adapters` seeded by ``--seed``), its trainable part set, and the
   frozen-part caches of every split filled (:func:`clf_train.frozen_cache.build_store`):
   ``setup_seconds``;
2. ``warmup`` optimizer steps, then ``steps`` timed ones, each exactly the inner loop of
   :func:`clf_train.trainer.fit` (re-seed, zero grads, :func:`~clf_train.frozen_cache.forward_top`,
   cross-entropy, backward, fused AdamW step) on the batches of epoch 1 in their order
   (:func:`clf_train.batches.epoch_batches`: length-bucketed, shuffled);
3. one validation pass (:func:`clf_train.trainer.evaluate`), timed.

Extrapolation (``five_epoch_seconds``): setup + 5 x (steps per epoch x mean step + validation
pass) + the final evaluation of every split, taken as the validation pass scaled by the
number of texts. The process start-up and file writing of a real run are not included (the
last-block row of ``bench_training.py``'s real run measures those).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

EPOCHS = 5


def time_strategy(
    init: Path,
    splits: Mapping[str, tuple[Sequence[str], Sequence[str]]],
    *,
    trainable: str,
    lora: Mapping[str, Any] | None = None,
    steps: int,
    warmup: int = 2,
    batch_size: int = 8,
    lr: float = 5e-5,
    seed: int = 123,
    merge_check: bool = False,
) -> dict[str, Any]:
    """Time one strategy on ``splits`` ({"train"|"val"|"test": (texts, labels)}); see the
    module docstring. ``lora``: the ``lora_*`` fields of ``TrainConfig`` for ``trainable``
    "lora". With ``merge_check`` (LoRA only) the trained adapters are merged as
    ``clf-export`` does and the merged-vs-unmerged table is returned too."""
    import torch
    import torch.nn.functional as F

    from clf_runtime.tokenizer import encode_batch
    from clf_train.api import describe_trainable
    from clf_train.batches import derive_seed, epoch_batches
    from clf_train.config import LORA, TrainConfig, parse_trainable
    from clf_train.frozen_cache import apply_trainable, build_store, forward_top
    from clf_train.lora import LoraSettings, add_adapters, make_trainable
    from clf_train.pretrained import build_classifier, load_pretrained
    from clf_train.trainer import evaluate, label_targets

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
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, fused=True)
    store, y = stores["train"], targets["train"]
    batches = epoch_batches(store.lengths, batch_size, seed=seed, epoch=0)
    if warmup + steps > len(batches):
        raise ValueError(f"{warmup} + {steps} steps exceed the {len(batches)} of an epoch")
    model.train()
    times = []
    for step, idx in enumerate(batches[: warmup + steps]):
        start = time.perf_counter()
        torch.manual_seed(derive_seed(seed, "dropout", 0, step))
        optimizer.zero_grad(set_to_none=True)
        inputs, lengths = store.batch(idx)
        F.cross_entropy(forward_top(model, spec, inputs, lengths).float(), y[idx]).backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    start = time.perf_counter()
    evaluate(model, spec, stores["val"], targets["val"])
    val_pass = time.perf_counter() - start

    n_texts = {name: len(t) for name, (t, _) in splits.items()}
    mean_step = statistics.fmean(times)
    final_eval = val_pass * sum(n_texts.values()) / n_texts["val"]
    row: dict[str, Any] = {
        "trainable": trainable,
        "lora": info["lora"],
        "trainable_parameters": info["trainable_parameters"],
        "frozen_part": {**info["frozen_part"], "cached": all(s.cached for s in stores.values())},
        "setup_seconds": round(setup, 2),
        "timed_steps": steps,
        "warmup_steps": warmup,
        "median_step_seconds": round(statistics.median(times), 4),
        "mean_step_seconds": round(mean_step, 4),
        "steps_per_epoch": len(batches),
        "val_pass_seconds": round(val_pass, 2),
        "five_epoch_seconds": round(
            setup + EPOCHS * (len(batches) * mean_step + val_pass) + final_eval, 1
        ),
        "extrapolated": True,
    }
    if merge_check and trainable == LORA:
        from clf_export.merge import merge_for_export

        _, record = merge_for_export(model.eval(), max_length=256)
        row["merge_check"] = {
            k: record[k] for k in ("max_abs_logit_diff", "tolerance", "shapes")
        } if record else None  # fmt: skip
    return row
