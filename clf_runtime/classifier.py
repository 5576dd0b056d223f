"""The embeddable classifier: ``Classifier.load(path).predict(texts)``.

Torch-free: onnxruntime runs the exported graph, :mod:`clf_runtime.tokenizer` tokenizes and
:mod:`clf_runtime.batching` batches. One :class:`Classifier` may be shared by many threads:
``InferenceSession.run`` is thread-safe and every call keeps its state in local variables.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .batching import (
    CHUNK_SIZE,
    check_batch_limits,
    iter_text_chunks,
    pad_batch,
    plan_batches,
    softmax,
)
from .contract import INPUT_IDS, LENGTHS, LOGITS
from .errors import ClassifierError
from .metadata import ModelMetadata
from .session import CUDA, open_session
from .tokenizer import encode_batch

__all__ = ["Classifier", "Prediction", "run_with_io_binding"]


@dataclass(frozen=True)
class Prediction:
    """The prediction for one text."""

    label: str
    """The most probable label."""
    score: float
    """Probability of ``label``."""
    probs: dict[str, float]
    """Probability of every label, in the model's label order."""


def run_with_io_binding(
    session: ort.InferenceSession,
    input_ids: np.ndarray,
    lengths: np.ndarray,
    *,
    device: str = "cuda",
    device_id: int = 0,
) -> np.ndarray:
    """Run one batch with IO binding: inputs copied to ``device`` once, logits copied back.

    ``input_ids`` (B, T) int64, ``lengths`` (B,) int64 -> logits (B, C) float32. The binding is
    local to the call, so concurrent calls on one session are safe. Used on CUDA, where plain
    ``run`` would stage every input through extra host copies; ``device="cpu"`` exercises the
    same code path on machines without a GPU.
    """
    binding = session.io_binding()
    for name, array in ((INPUT_IDS, input_ids), (LENGTHS, lengths)):
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), device, device_id)
        binding.bind_ortvalue_input(name, value)
    binding.bind_output(LOGITS, device, device_id)
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()[0]


class Classifier:
    """A gpt-clf text classifier served by onnxruntime.

    Build it with :meth:`load`; call :meth:`predict` or :meth:`predict_proba` from any thread.
    """

    def __init__(
        self, session: ort.InferenceSession, metadata: ModelMetadata, model_path: Path
    ) -> None:
        self._session = session
        self._metadata = metadata
        self._model_path = model_path
        self._provider = session.get_providers()[0]
        self._device_id = 0
        if self._provider == CUDA:
            options = session.get_provider_options().get(CUDA, {})
            self._device_id = int(options.get("device_id", 0))

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        providers: str | Sequence[str] = "auto",
        threads: int | None = None,
        precision: str | None = None,
        spin: bool = True,
    ) -> Classifier:
        """Load an exported model: a ``.onnx`` file or an export directory.

        ``providers``: ``"auto"`` (CUDA when it really works, else CPU), ``"cpu"``, ``"cuda"``
        or a list of onnxruntime provider names, honoured as given. From a directory the file
        is ``model.fp16.onnx`` on CUDA, ``model.int8.onnx`` on CPU, else ``model.onnx``;
        ``precision`` (``"fp32"``, ``"int8"``, ``"fp16"``) overrides that. ``threads``: intra-op
        threads (default: every CPU). ``spin=False``: intra-op threads sleep instead of
        busy-waiting between runs (see :func:`~clf_runtime.session.session_options`; servers
        use it). Raises :class:`~clf_runtime.errors.ModelLoadError`.
        """
        session, metadata, file = open_session(
            path, providers=providers, threads=threads, precision=precision, spin=spin
        )
        return cls(session, metadata, file)

    @property
    def labels(self) -> tuple[str, ...]:
        """Label names in the order of :meth:`predict_proba`'s columns."""
        return self._metadata.labels

    @property
    def metadata(self) -> ModelMetadata:
        """Everything the model file says about itself."""
        return self._metadata

    @property
    def provider(self) -> str:
        """The onnxruntime execution provider actually running the model."""
        return self._provider

    @property
    def model_path(self) -> Path:
        """The .onnx file that was loaded."""
        return self._model_path

    def __repr__(self) -> str:
        return (
            f"Classifier(model_path={str(self._model_path)!r}, labels={self.labels!r}, "
            f"precision={self._metadata.precision!r}, provider={self._provider!r})"
        )

    # ------------------------------------------------------------------ inference

    def run_logits(self, input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Logits of one prepared batch: (B, T) int64 ids, (B,) int64 lengths -> (B, C) float32.

        Low level (benchmarks use it with fixed shapes); :meth:`predict_proba` is the normal API.
        """
        if self._provider == CUDA:
            return run_with_io_binding(
                self._session, input_ids, lengths, device="cuda", device_id=self._device_id
            )
        return self._session.run([LOGITS], {INPUT_IDS: input_ids, LENGTHS: lengths})[0]

    def _proba_chunk(
        self,
        texts: list[str],
        batch_size: int,
        max_batch_tokens: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        tokens = encode_batch(texts, max_length=self._metadata.max_length)
        lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
        out = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        for index in plan_batches(
            lengths, batch_size=batch_size, max_batch_tokens=max_batch_tokens
        ):
            batch = pad_batch(tokens, index, self._metadata.pad_token_id)
            logits = self.run_logits(batch.input_ids, batch.lengths)  # (B, C)
            if not np.isfinite(logits).all():
                raise ClassifierError(
                    f"the model produced non-finite logits for a batch of {len(index)} texts "
                    f"({self._metadata.precision} on {self._provider}); try precision='fp32'"
                )
            out[batch.index] = softmax(logits)  # unsort: rows go back to their input positions
            if on_batch is not None:
                on_batch(len(index))
        return out

    def iter_proba(
        self,
        texts: Iterable[str],
        *,
        batch_size: int = 32,
        max_batch_tokens: int = 8192,
        chunk_size: int = CHUNK_SIZE,
        on_batch: Callable[[int], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """Yield probabilities chunk by chunk: (n_chunk, num_labels) float32 arrays in order.

        Memory stays bounded by ``chunk_size`` texts however long ``texts`` is. ``on_batch``,
        when given, is called with the number of texts after every model call (progress bars).
        """
        check_batch_limits(batch_size, max_batch_tokens)  # fail before consuming `texts`
        for chunk in iter_text_chunks(texts, chunk_size):
            yield self._proba_chunk(chunk, batch_size, max_batch_tokens, on_batch)

    def predict_proba(
        self,
        texts: Iterable[str],
        *,
        batch_size: int = 32,
        max_batch_tokens: int = 8192,
        chunk_size: int = CHUNK_SIZE,
    ) -> np.ndarray:
        """Probabilities (n, num_labels) float32 in :attr:`labels` order; rows sum to 1.

        ``texts``: any iterable of str (list, tuple, generator, 1-D numpy str/object array).
        A bare ``str`` raises :class:`~clf_runtime.errors.InvalidInputError` (wrap it in a
        list). Texts longer than the model's ``max_length`` tokens keep their head. Batches
        hold at most ``batch_size`` texts and ``max_batch_tokens`` padded tokens; ``chunk_size``
        texts are tokenized at a time. A text's result does not depend on its batch mates.
        """
        parts = list(
            self.iter_proba(
                texts,
                batch_size=batch_size,
                max_batch_tokens=max_batch_tokens,
                chunk_size=chunk_size,
            )
        )
        if not parts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def predict(
        self,
        texts: Iterable[str],
        *,
        batch_size: int = 32,
        max_batch_tokens: int = 8192,
        chunk_size: int = CHUNK_SIZE,
    ) -> list[Prediction]:
        """One :class:`Prediction` per text, in input order. Same arguments as
        :meth:`predict_proba`."""
        probs = self.predict_proba(
            texts, batch_size=batch_size, max_batch_tokens=max_batch_tokens, chunk_size=chunk_size
        )
        return self.to_predictions(probs)

    def to_predictions(self, probs: np.ndarray) -> list[Prediction]:
        """Turn a (n, num_labels) probability array into :class:`Prediction` objects."""
        labels = self.labels
        best = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
        rows = probs.tolist()  # Python floats, one conversion for the whole array
        return [
            Prediction(label=labels[k], score=row[k], probs=dict(zip(labels, row, strict=True)))
            for k, row in zip(best.tolist(), rows, strict=True)
        ]
