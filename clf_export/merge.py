"""The merge step of a LoRA model: fold the adapters into the weights before tracing, checked.

A ``--trainable lora`` run is a base model carrying low-rank adapters
(:mod:`clf_train.lora`). Merging is the only way it is exported: every update is folded into
its weight (``W + (alpha / r) B A``), so the traced graph is the plain classifier's (same
shape, speed and int8 path as any other export) and nothing about LoRA reaches the runtime.

The merge is checked before anything is traced: the merged and the unmerged torch models run
the same seeded probe batches as the fp32 parity check (:func:`clf_export.parity.parity_inputs`,
full ``forward``, eval mode, fp32, CPU) and must agree within
:data:`~clf_export.options.LORA_MERGE_TOLERANCE`, else :class:`ParityError`. The table goes
into ``report.json`` under ``lora``; the fp32 graph is then checked against the merged model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clf_runtime.tokenizer import END_OF_TEXT_ID

from .errors import ParityError
from .options import LORA_MERGE_TOLERANCE
from .parity import parity_inputs, torch_logits

__all__ = ["merge_for_export"]


def merge_for_export(
    model: Any, *, max_length: int, tolerance: float = LORA_MERGE_TOLERANCE
) -> tuple[Any, dict[str, Any] | None]:
    """``(model to trace, merge record)``: ``model`` itself and None when it has no adapters,
    else the merged copy and its parity table (unmerged vs merged logits per probe shape).

    ``model`` must be in eval mode; it is not changed. Raises :class:`ParityError` when the
    merged model's logits differ from the unmerged one's by more than ``tolerance``.
    """
    from clf_train.lora import adapter_state_dict, has_adapters, lora_layers, merge_adapters

    if not has_adapters(model):
        return model, None
    merged = merge_adapters(model).eval()
    rows = []
    probes = parity_inputs(max_length, vocab_size=model.cfg.vocab_size, pad_token_id=END_OF_TEXT_ID)
    for ids, lengths in probes:
        diff = np.abs(torch_logits(merged, ids, lengths) - torch_logits(model, ids, lengths))
        rows.append(
            {
                "batch": int(ids.shape[0]),
                "sequence": int(ids.shape[1]),
                "max_abs_logit_diff": float(np.max(diff)) if np.all(np.isfinite(diff)) else None,
            }
        )
    diffs = [r["max_abs_logit_diff"] for r in rows]
    worst = float("inf") if None in diffs else max(diffs)
    layers = list(lora_layers(model))
    record = {
        "merged": True,
        "reference": "the unmerged torch model (base + adapters), eval mode, fp32, CPU",
        "tolerance": tolerance,
        "shapes": rows,
        "max_abs_logit_diff": worst if np.isfinite(worst) else None,
        "adapted_layers": [path for path, _ in layers],
        "adapter_parameters": sum(t.numel() for t in adapter_state_dict(model).values()),
        "scaling": sorted({layer.scaling for _, layer in layers}),
    }
    if not worst <= tolerance:
        raise ParityError(
            f"merging the LoRA adapters changed the logits by up to {worst:.3g} (tolerance "
            f"{tolerance:g}) on the probe batches; nothing was written. The adapters are "
            "probably too large (non-finite or diverged training): check the run's history.json"
        )
    return merged, record
