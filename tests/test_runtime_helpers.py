"""The runtime pieces the exporter reuses: create_session, run_logits, batched_logits, and the
quiet CUDA probe (clf_runtime.session / clf_runtime.batching)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from clf_runtime import Classifier
from clf_runtime.batching import batched_logits, softmax
from clf_runtime.errors import ModelLoadError
from clf_runtime.session import CPU, QUIET, create_session, cuda_is_usable, run_logits
from clf_runtime.tokenizer import encode_batch

PAD = 50256


def test_batched_logits_batches_by_length_and_unsorts() -> None:
    """Each row's result comes back at its input position; every call gets rows sorted by
    length, right-padded with the pad id, within both limits."""
    rng = np.random.default_rng(0)
    tokens = [list(rng.integers(0, 1000, size=n)) for n in (5, 1, 9, 3, 3, 7, 2, 8, 1, 4)]
    calls: list[tuple[np.ndarray, np.ndarray]] = []

    def run(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        calls.append((ids, lengths))
        real = np.arange(ids.shape[1])[None, :] < lengths[:, None]  # (B, T)
        assert np.all(ids[~real] == PAD)
        # (B, 2): the sum of the real tokens and the length, to be checked per input row
        return np.stack([np.where(real, ids, 0).sum(1), lengths], axis=1).astype(np.float32)

    got = batched_logits(run, tokens, pad_id=PAD, batch_size=3, max_batch_tokens=16)
    want = np.array([[sum(t), len(t)] for t in tokens], dtype=np.float32)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.float32
    seen = [int(n) for _, lengths in calls for n in lengths]
    assert seen == sorted(len(t) for t in tokens)  # sorted by length across the calls
    for ids, lengths in calls:
        assert ids.shape == (len(lengths), max(lengths))  # padded to the batch's longest
        assert len(lengths) <= 3
        assert len(lengths) == 1 or ids.size <= 16


def test_batched_logits_of_nothing() -> None:
    def run(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        raise AssertionError("no batch to run")

    assert batched_logits(run, [], pad_id=PAD).shape == (0, 0)


def test_batched_logits_on_a_session_match_the_classifier(tiny_export_dir: Path) -> None:
    """The exporter's scoring (session + batched_logits) and Classifier.predict_proba agree."""
    path = tiny_export_dir / "model.onnx"
    clf = Classifier.load(path, providers="cpu", threads=1)
    texts = ["win a free prize now", "", "see you at lunch tomorrow and call me", "ok"] * 5
    session = create_session(path, providers=[CPU], threads=1)
    logits = batched_logits(
        functools.partial(run_logits, session),
        encode_batch(texts, max_length=clf.metadata.max_length),
        pad_id=clf.metadata.pad_token_id,
        batch_size=4,
    )
    np.testing.assert_allclose(softmax(logits), clf.predict_proba(texts), atol=1e-6)


def test_run_logits_is_one_plain_run(tiny_export_dir: Path) -> None:
    session = create_session(tiny_export_dir / "model.onnx", providers=[CPU], threads=1)
    ids = np.array([[464, 3290, PAD], [15496, 11, 995]], dtype=np.int64)
    lengths = np.array([2, 3], dtype=np.int64)
    want = session.run(None, {"input_ids": ids, "lengths": lengths})[0]
    np.testing.assert_array_equal(run_logits(session, ids, lengths), want)


def test_create_session_options(tiny_export_dir: Path) -> None:
    path = tiny_export_dir / "model.onnx"
    session = create_session(path, providers=[CPU], threads=2, log_severity_level=QUIET)
    options = session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.log_severity_level == QUIET
    assert session.get_providers() == [CPU]
    default = create_session(path, providers=[CPU]).get_session_options()
    assert default.log_severity_level == ort.SessionOptions().log_severity_level


def test_create_session_errors(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ModelLoadError, match=r"could not load .*model\.onnx"):
        create_session(bad, providers=[CPU])
    with pytest.raises(ModelLoadError, match="threads must be a positive integer"):
        create_session(bad, providers=[CPU], threads=0)


def test_cuda_probe_is_quiet_per_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe session logs only fatal errors, set on its own options: nothing process-wide."""
    import clf_runtime.session as session_module

    seen: list[int] = []
    real = ort.InferenceSession

    def spy(model: object, options: ort.SessionOptions, **kwargs: object) -> object:
        seen.append(options.log_severity_level)
        return real(model, options, providers=[CPU])  # a CPU stand-in for a CUDA session

    monkeypatch.setattr(session_module, "_no_nvidia_driver", lambda: False)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", CPU])
    monkeypatch.setattr(ort, "InferenceSession", spy)
    cuda_is_usable.cache_clear()
    try:
        assert cuda_is_usable() is False  # the stand-in runs on CPU: CUDA does not work
    finally:
        cuda_is_usable.cache_clear()
    assert seen == [QUIET]
