"""clf_runtime.Batcher: calls from many threads share model calls and get the offline answers."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from samples import SHORT_TEXTS

from clf_runtime import (
    BatchedResult,
    Batcher,
    BatcherClosedError,
    Classifier,
    ClassifierError,
    InvalidInputError,
    QueueFullError,
)
from clf_runtime.batcher import BatchRecord

TEXTS = [
    *SHORT_TEXTS,
    "see you",
    "日本 café 😀 <|endoftext|> x\x00y",
    "word " * 300,  # over max_length: keeps its head, as in predict_proba
]


def many_texts(n: int) -> list[str]:
    return [f"{TEXTS[i % len(TEXTS)]} {i}" * (1 + i % 3) for i in range(n)]


@pytest.fixture(scope="module", params=["fp32", "int8"])
def clf(request: pytest.FixtureRequest, tiny_export_dir: Path) -> Classifier:
    return Classifier.load(tiny_export_dir, providers="cpu", threads=1, precision=request.param)


@pytest.fixture(scope="module")
def int8(tiny_export_dir: Path) -> Classifier:
    return Classifier.load(tiny_export_dir, providers="cpu", threads=1, precision="int8")


def test_threads_one_text_per_call_get_offline_results(clf: Classifier) -> None:
    texts = many_texts(400)
    expected = clf.predict_proba(texts)
    got: list[np.ndarray | None] = [None] * len(texts)
    errors: list[BaseException] = []
    with Batcher(clf) as batcher:

        def work(w: int) -> None:
            try:
                for i in range(w, len(texts), 8):
                    got[i] = batcher.predict_proba([texts[i]])[0]
            except BaseException as e:  # re-raised below, in the test's thread
                errors.append(e)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        stats = batcher.stats()
    assert not errors, errors
    # Batch mates may change float rounding, never more.
    np.testing.assert_allclose(np.array(got), expected, atol=1e-6, rtol=0)
    assert (np.array(got).argmax(1) == expected.argmax(1)).all()
    assert stats.requests == len(texts) and stats.texts == len(texts)
    assert stats.failed_calls == 0 and stats.queued_texts == 0


def test_queued_requests_share_model_calls(int8: Classifier) -> None:
    records: list[BatchRecord] = []
    # The worker waits up to 5 s after the first request for a full batch of 8 rows: the 8
    # submissions below (microseconds apart) all land in one round, which the planner cuts
    # into as few calls as padding makes worthwhile.
    with Batcher(int8, max_batch_rows=8, max_wait_ms=5000, on_batch=records.append) as batcher:
        futures = [batcher.submit([t]) for t in TEXTS]
        results = [f.result(30) for f in futures]
    assert sum(r.rows for r in records) == 8 and all(r.ok for r in records)
    assert max(r.requests for r in records) > 1  # texts of several requests in one call
    assert len(records) < 8
    expected = int8.predict_proba(TEXTS)
    np.testing.assert_allclose(
        np.concatenate([r.proba() for r in results]), expected, atol=1e-6, rtol=0
    )
    lengths = [len(t) for t in token_lists(int8, TEXTS)]
    assert sum(r.padded_tokens for r in records) >= sum(lengths)
    assert [r.tokens for r in results] == lengths
    assert all(r.model_calls == 1 and r.inference_seconds > 0 for r in results)


def token_lists(clf: Classifier, texts: list[str]) -> list[list[int]]:
    from clf_runtime.tokenizer import encode_batch

    return encode_batch(texts, max_length=clf.metadata.max_length)


def test_long_list_is_split_under_both_limits_and_reassembled(int8: Classifier) -> None:
    texts = many_texts(50)
    records: list[BatchRecord] = []
    with Batcher(int8, max_batch_rows=4, max_batch_tokens=96, on_batch=records.append) as b:
        got = b.predict_proba(texts)
    np.testing.assert_allclose(got, int8.predict_proba(texts), atol=1e-6, rtol=0)
    assert sum(r.rows for r in records) == 50
    assert all(r.rows <= 4 for r in records)
    # The token budget holds except for a single row longer than it (its own batch).
    assert all(r.padded_tokens <= 96 or r.rows == 1 for r in records)


def test_full_queue_raises_with_retry_after_or_blocks(int8: Classifier) -> None:
    with Batcher(int8, max_queue=4, max_batch_rows=64, max_wait_ms=1000) as batcher:
        first = batcher.submit(["a", "b", "c", "d"])
        assert batcher.queued_texts == 4
        with pytest.raises(QueueFullError, match="room for 0") as info:
            batcher.submit(["e"])
        assert info.value.retry_after >= 1
        with pytest.raises(QueueFullError, match="after waiting"):
            batcher.submit(["e"], block=True, timeout=0.05)
        waited = batcher.submit(["e"], block=True, timeout=30)  # room comes with the gather
        assert first.result(30).logits.shape == (4, 3)
        assert waited.result(30).logits.shape == (1, 3)


def test_a_request_larger_than_the_queue_runs_when_the_queue_is_empty(int8: Classifier) -> None:
    with Batcher(int8, max_queue=2) as batcher:
        np.testing.assert_allclose(
            batcher.predict_proba(TEXTS), int8.predict_proba(TEXTS), atol=1e-6, rtol=0
        )


def test_a_failing_call_fails_only_its_requests(
    tiny_export_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clf = Classifier.load(tiny_export_dir, providers="cpu", threads=1, precision="int8")
    poison = token_lists(clf, ["POISON PILL"])[0]
    real = clf.run_logits

    def run_logits(input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        if any(row[: len(poison)] == poison for row in input_ids.tolist()):
            raise RuntimeError("simulated onnxruntime failure")
        return real(input_ids, lengths)

    monkeypatch.setattr(clf, "run_logits", run_logits)
    # One row per call: the poisoned row's call fails, the others' calls succeed.
    with Batcher(clf, max_batch_rows=1, max_wait_ms=0) as batcher:
        bad = batcher.submit(["fine", "POISON PILL"])
        good = batcher.submit(["also fine"])
        with pytest.raises(ClassifierError, match="simulated onnxruntime failure"):
            bad.result(30)
        assert good.result(30).logits.shape == (1, 3)
        assert batcher.predict(["after the failure"])[0].label in clf.labels
        assert batcher.stats().failed_calls == 1


def test_non_finite_logits_fail_the_call(
    tiny_export_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clf = Classifier.load(tiny_export_dir, providers="cpu", threads=1, precision="int8")
    monkeypatch.setattr(
        clf, "run_logits", lambda ids, lengths: np.full((len(ids), 3), np.nan, np.float32)
    )
    with Batcher(clf) as batcher, pytest.raises(ClassifierError, match="non-finite logits"):
        batcher.predict_proba(["x"])


def test_close_drains_or_cancels(int8: Classifier) -> None:
    batcher = Batcher(int8, max_batch_rows=64, max_wait_ms=10_000)
    queued = batcher.submit(["drained on close"])
    started = time.monotonic()
    batcher.close()  # does not wait out max_wait_ms: closing flushes the queue
    assert time.monotonic() - started < 5
    assert isinstance(queued.result(0), BatchedResult)
    assert batcher.closed
    with pytest.raises(BatcherClosedError):
        batcher.submit(["too late"])

    batcher = Batcher(int8, max_batch_rows=64, max_wait_ms=10_000)
    dropped = batcher.submit(["dropped"])
    batcher.close(drain=False)
    with pytest.raises(BatcherClosedError):
        dropped.result(5)


def test_a_cancelled_request_is_not_run(int8: Classifier) -> None:
    records: list[BatchRecord] = []
    with Batcher(int8, max_batch_rows=64, max_wait_ms=300, on_batch=records.append) as b:
        cancelled = b.submit(["never run"])
        assert cancelled.cancel()
        kept = b.submit(["run"])
        kept.result(30)
    assert sum(r.rows for r in records) == 1 and b.stats().requests == 2


def test_asyncio_tasks_await_shared_results(int8: Classifier) -> None:
    texts = many_texts(24)

    async def main(batcher: Batcher) -> list[np.ndarray]:
        futures = [asyncio.wrap_future(batcher.submit([t])) for t in texts]
        return [r.proba()[0] for r in await asyncio.gather(*futures)]

    with Batcher(int8, max_wait_ms=1) as batcher:
        got = asyncio.run(main(batcher))
    np.testing.assert_allclose(np.array(got), int8.predict_proba(texts), atol=1e-6, rtol=0)


def test_bad_input_and_options_say_what_is_wrong(int8: Classifier) -> None:
    with Batcher(int8) as batcher:
        with pytest.raises(InvalidInputError, match="single str"):
            batcher.predict("one text")  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="index 1"):
            batcher.submit(["ok", 3])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="token list 0 has 0 tokens"):
            batcher.submit_tokens([[]])
        assert batcher.predict_proba([]).shape == (0, 3)
        assert batcher.submit([]).result(1).logits.shape == (0, 3)
    for bad in ({"max_batch_rows": 0}, {"max_batch_tokens": -1}, {"max_queue": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Batcher(int8, **bad)
    with pytest.raises(ValueError, match="max_wait_ms"):
        Batcher(int8, max_wait_ms=float("inf"))


def test_a_failing_observer_does_not_break_inference(int8: Classifier) -> None:
    def observer(record: BatchRecord) -> None:
        raise RuntimeError("metrics backend down")

    with Batcher(int8, on_batch=observer) as batcher:
        assert len(batcher.predict(["still works"])) == 1


def test_a_dropped_batcher_stops_its_thread(int8: Classifier) -> None:
    batcher = Batcher(int8)
    batcher.predict(["x"])
    thread = batcher._core.thread
    del batcher
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()
