"""Pretrained GPT-2 weights, mapped onto this package's :class:`~clf_train.model.GPTBackbone`.

Sources (one result, :class:`PretrainedWeights`):

- a model name (``gpt2`` ... ``gpt2-xl``), resolved through the Hugging Face hub cache, and
  downloaded with ``huggingface_hub`` when online (:mod:`.hub`; offline when any of
  ``CLF_OFFLINE``, ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` is true);
- a Hugging Face checkpoint (``GPT2Model``, ``GPT2LMHeadModel``, ``GPT2ForSequenceClassification``):
  a directory with ``config.json`` + ``model.safetensors``, or a bare ``.safetensors`` file;
- the state dict saved by the chapter-6 code of "Build a Large Language Model (From Scratch)"
  (``llms_from_scratch.ch04.GPTModel``), as ``.pth``/``.pt`` (or converted to safetensors).

Modules: :mod:`.hub` finds the file, :mod:`.layouts` reads it and renames its tensors,
:mod:`.load` checks the shapes and builds the classifier. Pickle-based files are only ever
read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from ..errors import PretrainedError
from ..presets import PRETRAINED_NAMES
from .load import PretrainedWeights, build_classifier, load_pretrained

__all__ = [
    "PRETRAINED_NAMES",
    "PretrainedError",
    "PretrainedWeights",
    "build_classifier",
    "load_pretrained",
]
