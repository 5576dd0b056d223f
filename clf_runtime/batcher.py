"""Dynamic batching: texts from many callers (threads, asyncio tasks, HTTP requests) share
model calls, and every text still gets exactly the answer it gets alone.

Why it is safe: under the pooling contract a text's logits do not depend on its batch mates
or on its padding, so mixing texts of different callers in one model call changes nothing but
float rounding. Why it is needed: on a CPU one model call already uses every core, so N
threads calling :meth:`Classifier.predict_proba` at once only oversubscribe the cores and grow
one onnxruntime arena per concurrent run. The batcher turns concurrency into batch rows
instead.

How it works::

    callers (any thread)            worker thread (the only one calling the model)
    submit(texts) --tokenize-->  [ bounded queue ] --gather everything queued-->
      -> Future                      sort rows by length, cut batches under the row limit and
                                     the padded-token budget (rows x longest), run each batch,
                                     scatter rows back; a request's Future completes as soon as
                                     its last row is done

- One bounded queue, counted in texts; :meth:`Batcher.submit` raises :class:`QueueFullError`
  (with a ``retry_after`` estimate) when it is full, or waits for room with ``block=True``.
- ``max_wait_ms`` (default 0, as in TEI and Triton) lets the worker wait that long after the
  oldest queued request for a full batch before it starts; 0 takes what is queued.
- The worker takes *every* queued request at once (at most ``max_queue`` texts), sorts the
  texts by length and cuts them into model calls at the lowest estimated cost
  (:mod:`clf_runtime.batch_plan`: padding against per-call overhead, learnt from the calls
  made), short texts first. Requests behind them would have waited for those rows in a FIFO
  queue anyway, so this costs no one latency; it buys throughput.
- A failing model call fails the requests with rows in that call and nothing else; the worker
  keeps serving.
- Results are :class:`concurrent.futures.Future` objects: ``.result()`` from a thread,
  ``await asyncio.wrap_future(f)`` from asyncio.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

import numpy as np

from .batch_plan import CallCostModel, plan_min_cost
from .batching import (
    CHUNK_SIZE,
    iter_text_chunks,
    pad_batch,
    softmax,
)
from .classifier import Classifier, Prediction
from .errors import BatcherClosedError, ClassifierError, QueueFullError
from .tokenizer import encode_batch

__all__ = ["BatchRecord", "BatchedResult", "Batcher", "BatcherStats"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchedResult:
    """What a submitted request gets back: its logits and where its time went."""

    logits: np.ndarray
    """(n, num_labels) float32 logits in submission order."""
    tokens: int
    """Real tokens over the request's texts (after truncation to the model's max_length)."""
    queue_seconds: float
    """From submission until the worker took the request."""
    inference_seconds: float
    """Time of the model calls that held its rows (shared with their other rows)."""
    model_calls: int
    """Number of model calls its rows were spread over."""

    def proba(self) -> np.ndarray:
        """(n, num_labels) float32 probabilities, exactly as ``Classifier.predict_proba``."""
        return softmax(self.logits)


@dataclass(frozen=True)
class BatchRecord:
    """One model call made by the worker (given to the ``on_batch`` observer)."""

    rows: int
    """Texts in the call."""
    padded_tokens: int
    """rows x longest length: the size of the input the model ran on."""
    requests: int
    """Distinct submitted requests with rows in the call."""
    seconds: float
    """Duration of the model call."""
    ok: bool
    """False when the call raised (its requests were failed)."""


@dataclass(frozen=True)
class BatcherStats:
    """Counters since the batcher started (a consistent snapshot)."""

    requests: int
    """Requests completed, failed or cancelled."""
    texts: int
    """Texts run through the model."""
    model_calls: int
    multi_request_calls: int
    """Model calls holding rows of more than one request: batching really happened."""
    max_requests_per_call: int
    failed_calls: int
    queued_texts: int
    """Texts waiting now."""
    call_overhead_tokens: float
    """Current estimate of what one model call costs beyond its padded tokens, in tokens."""


class _Request:
    """One submission: its token lists, its output rows and its future."""

    __slots__ = (
        "calls",
        "enqueued",
        "failed",
        "future",
        "inference",
        "logits",
        "pending",
        "started",
        "tokens",
    )

    def __init__(self, tokens: list[list[int]], num_labels: int) -> None:
        self.tokens = tokens
        self.logits = np.empty((len(tokens), num_labels), dtype=np.float32)
        self.pending = len(tokens)
        self.future: Future[BatchedResult] = Future()
        self.enqueued = time.perf_counter()
        self.started = self.enqueued
        self.inference = 0.0
        self.calls = 0
        self.failed = False

    def finish(self) -> None:
        self.future.set_result(
            BatchedResult(
                logits=self.logits,
                tokens=sum(map(len, self.tokens)),
                queue_seconds=self.started - self.enqueued,
                inference_seconds=self.inference,
                model_calls=self.calls,
            )
        )

    def fail(self, error: BaseException) -> None:
        self.failed = True
        # close(drain=False) and the worker may both fail a request; the first one wins.
        with contextlib.suppress(InvalidStateError):
            self.future.set_exception(error)


class _Core:
    """The queue and the worker. Holds no reference to the :class:`Batcher` facade, so a
    batcher that is dropped without ``close()`` is still closed by its finalizer."""

    def __init__(
        self,
        classifier: Classifier,
        *,
        max_batch_tokens: int,
        max_batch_rows: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[BatchRecord], None] | None,
    ) -> None:
        self.clf = classifier
        self.num_labels = len(classifier.labels)
        self.pad_id = classifier.metadata.pad_token_id
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_rows = max_batch_rows
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.lock = threading.Lock()
        self.work = threading.Condition(self.lock)  # the worker waits here for requests
        self.space = threading.Condition(self.lock)  # blocked submitters wait here for room
        self.queue: collections.deque[_Request] = collections.deque()
        self.queued = 0  # texts in `queue`
        self.closed = False
        self.seconds_per_text = 0.0  # moving average, for Retry-After estimates
        self.cost = CallCostModel()  # touched by the worker thread only
        self.counts = dict.fromkeys(
            ("requests", "texts", "model_calls", "multi", "max_requests", "failed"), 0
        )
        self.thread = threading.Thread(target=self.run, name="clf-batcher", daemon=True)

    # ------------------------------------------------------------------ callers' side

    def put(self, request: _Request, *, block: bool, timeout: float | None) -> None:
        n = len(request.tokens)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while True:
                if self.closed:
                    raise BatcherClosedError("the batcher is closed; create a new one")
                # A request larger than the whole queue is let in once the queue is empty,
                # otherwise it could never run.
                if self.queued + n <= self.max_queue or self.queued == 0:
                    break
                if not block:
                    raise QueueFullError(
                        f"the queue holds {self.queued} texts waiting for the model and has room "
                        f"for {self.max_queue - self.queued}, but {n} were submitted; retry later, "
                        "send fewer texts per request, or raise the queue size (max_queue)",
                        retry_after=self._retry_after(),
                    )
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise QueueFullError(
                        f"no room for {n} texts in the queue after waiting {timeout} s",
                        retry_after=self._retry_after(),
                    )
                self.space.wait(left)
            request.enqueued = time.perf_counter()
            self.queue.append(request)
            self.queued += n
            self.work.notify()

    def _retry_after(self) -> float:
        """Seconds until the queue has drained (at least 1): queued texts x recent s/text."""
        return float(max(1, math.ceil(self.queued * self.seconds_per_text)))

    def close(self, *, drain: bool) -> None:
        with self.lock:
            self.closed = True
            dropped = [] if drain else list(self.queue)
            if not drain:
                self.queue.clear()
                self.queued = 0
            self.work.notify_all()
            self.space.notify_all()
        for request in dropped:
            request.fail(BatcherClosedError("the batcher was closed before this request ran"))

    # ------------------------------------------------------------------ worker side

    def run(self) -> None:
        while True:
            requests = self._gather()
            if requests is None:
                return
            try:
                self._serve(requests)
            except Exception as e:  # a bug here must not kill the worker: fail this round only
                _log.exception("batcher: unexpected error while serving %d requests", len(requests))
                error = ClassifierError(f"internal error in the batcher: {e!r}")
                error.__cause__ = e
                for request in requests:
                    request.fail(error)

    def _gather(self) -> list[_Request] | None:
        """Wait for work; take every queued request. None once closed and drained."""
        with self.lock:
            while not self.queue:
                if self.closed:
                    return None
                self.work.wait()
            if self.max_wait_s > 0:
                deadline = self.queue[0].enqueued + self.max_wait_s
                while self.queued < self.max_batch_rows and not self.closed:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    self.work.wait(left)
            taken = list(self.queue)
            self.queue.clear()
            self.queued = 0
            self.space.notify_all()
        now = time.perf_counter()
        live = []
        for request in taken:
            if request.future.set_running_or_notify_cancel():  # False: the caller cancelled
                request.started = now
                live.append(request)
        with self.lock:
            self.counts["requests"] += len(taken) - len(live)
        return live

    def _serve(self, requests: list[_Request]) -> None:
        """Run every row of ``requests`` in length-sorted batches; complete each request."""
        tokens = [seq for request in requests for seq in request.tokens]
        slots = [(request, pos) for request in requests for pos in range(len(request.tokens))]
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        for index in plan_min_cost(
            lengths,
            max_rows=self.max_batch_rows,
            max_tokens=self.max_batch_tokens,
            overhead_tokens=self.cost.overhead_tokens(),
        ):
            # Rows of a request that already failed in an earlier call are not run again.
            alive = [int(i) for i in index if not slots[i][0].failed]
            if alive:
                self._run_batch(tokens, slots, alive)
        with self.lock:
            self.counts["requests"] += len(requests)

    def _run_batch(
        self, tokens: list[list[int]], slots: list[tuple[_Request, int]], rows: list[int]
    ) -> None:
        batch = pad_batch(tokens, np.asarray(rows, dtype=np.int64), self.pad_id)  # (B, T)
        members = list(dict.fromkeys(slots[i][0] for i in rows))
        start = time.perf_counter()
        try:
            logits = self.clf.run_logits(batch.input_ids, batch.lengths)  # (B, C)
            if not np.isfinite(logits).all():
                raise ClassifierError(
                    f"the model produced non-finite logits ({self.clf.metadata.precision} on "
                    f"{self.clf.provider}); try precision='fp32'"
                )
        except Exception as e:  # onnxruntime raises its own untyped errors
            seconds = time.perf_counter() - start
            error = e if isinstance(e, ClassifierError) else ClassifierError(str(e))
            if error is not e:
                error.__cause__ = e
            message = (
                f"inference failed on a batch of {len(rows)} texts from {len(members)} "
                f"requests: {error}"
            )
            _log.error("batcher: %s", message)
            for request in members:
                request.fail(ClassifierError(message))
            self._record(len(rows), batch.input_ids.size, len(members), seconds, ok=False)
            return
        seconds = time.perf_counter() - start
        self.cost.observe(batch.input_ids.size, seconds)
        for row, i in enumerate(rows):
            request, pos = slots[i]
            request.logits[pos] = logits[row]
            request.pending -= 1
        for request in members:
            request.inference += seconds
            request.calls += 1
            if request.pending == 0:
                request.finish()
        self._record(len(rows), batch.input_ids.size, len(members), seconds, ok=True)

    def _record(self, rows: int, padded: int, requests: int, seconds: float, *, ok: bool) -> None:
        with self.lock:
            c = self.counts
            c["model_calls"] += 1
            c["texts"] += rows
            c["multi"] += requests > 1
            c["max_requests"] = max(c["max_requests"], requests)
            c["failed"] += not ok
            per_text = seconds / rows
            self.seconds_per_text = (
                per_text if c["model_calls"] == 1 else 0.8 * self.seconds_per_text + 0.2 * per_text
            )
        if self.on_batch is not None:
            try:
                self.on_batch(BatchRecord(rows, padded, requests, seconds, ok))
            except Exception:  # an observer (metrics) must never break inference
                _log.exception("batcher: on_batch observer failed")


class Batcher:
    """Share model calls between concurrent callers of one :class:`Classifier`.

    >>> clf = Classifier.load("export_dir")                      # doctest: +SKIP
    >>> with Batcher(clf) as batcher:                            # doctest: +SKIP
    ...     # from any number of threads:
    ...     batcher.predict(["WINNER!! Claim your prize"])

    Results equal ``classifier.predict_proba`` on the same texts (up to float rounding: a
    text's result does not depend on its batch mates). One worker thread runs the model, so
    give the classifier every core (``threads=None``), and load it with ``spin=False`` when
    the process has other work to do between calls (as a server has). Options:

    - ``max_batch_tokens``: most padded tokens (rows x longest) in one model call;
    - ``max_batch_rows``: most texts in one model call;
    - ``max_wait_ms``: how long the worker may wait after the oldest queued request for a full
      batch (0: run what is queued at once);
    - ``max_queue``: most texts waiting; :meth:`submit` raises :class:`QueueFullError` beyond
      it (``block=True`` waits for room instead);
    - ``on_batch``: called on the worker thread after every model call with a
      :class:`BatchRecord` (for metrics); it must be quick and must not block.
    """

    def __init__(
        self,
        classifier: Classifier,
        *,
        max_batch_tokens: int = 8192,
        max_batch_rows: int = 32,
        max_wait_ms: float = 0.0,
        max_queue: int = 1024,
        on_batch: Callable[[BatchRecord], None] | None = None,
    ) -> None:
        for name, value in (
            ("max_batch_tokens", max_batch_tokens),
            ("max_batch_rows", max_batch_rows),
            ("max_queue", max_queue),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        wait = max_wait_ms
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait < math.inf:
            raise ValueError(f"max_wait_ms must be a finite number >= 0, got {wait!r}")
        self._classifier = classifier
        self._core = _Core(
            classifier,
            max_batch_tokens=int(max_batch_tokens),
            max_batch_rows=int(max_batch_rows),
            max_wait_s=max_wait_ms / 1000.0,
            max_queue=max_queue,
            on_batch=on_batch,
        )
        self._core.thread.start()
        # Closing on garbage collection: a forgotten batcher must not keep its thread forever.
        self._finalizer = weakref.finalize(self, self._core.close, drain=True)

    @property
    def classifier(self) -> Classifier:
        """The classifier whose model calls are shared."""
        return self._classifier

    @property
    def labels(self) -> tuple[str, ...]:
        """Label names in the order of :meth:`predict_proba`'s columns."""
        return self._classifier.labels

    @property
    def queued_texts(self) -> int:
        """Texts waiting for the worker now."""
        return self._core.queued

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called: new submissions are refused."""
        return self._core.closed

    def stats(self) -> BatcherStats:
        """A snapshot of the counters (see :class:`BatcherStats`)."""
        core = self._core
        with core.lock:
            c = dict(core.counts)
            queued = core.queued
        overhead = core.cost.overhead_tokens()
        return BatcherStats(
            requests=c["requests"],
            texts=c["texts"],
            model_calls=c["model_calls"],
            multi_request_calls=c["multi"],
            max_requests_per_call=c["max_requests"],
            failed_calls=c["failed"],
            queued_texts=queued,
            call_overhead_tokens=round(overhead, 1),
        )

    # ------------------------------------------------------------------ submitting

    def tokenize(self, texts: Iterable[str]) -> list[list[int]]:
        """Validate and tokenize ``texts`` exactly as ``Classifier.predict_proba`` does.

        Raises :class:`~clf_runtime.errors.InvalidInputError` for a bare ``str`` or a non-str
        item (its index is named).
        """
        max_length = self._classifier.metadata.max_length
        out: list[list[int]] = []
        for chunk in iter_text_chunks(texts, CHUNK_SIZE):
            out.extend(encode_batch(chunk, max_length=max_length))
        return out

    def submit(
        self, texts: Iterable[str], *, block: bool = False, timeout: float | None = None
    ) -> Future[BatchedResult]:
        """Queue ``texts`` (tokenized in the calling thread); return a future of the result.

        Non-blocking by default: raises :class:`~clf_runtime.errors.QueueFullError` when the
        queue has no room. With ``block=True`` waits for room (at most ``timeout`` seconds).
        """
        return self.submit_tokens(self.tokenize(texts), block=block, timeout=timeout)

    def submit_tokens(
        self, tokens: Sequence[list[int]], *, block: bool = False, timeout: float | None = None
    ) -> Future[BatchedResult]:
        """Queue token lists made by :meth:`tokenize` (for callers that time tokenization).

        Each list must hold 1 to ``max_length`` token ids. See :meth:`submit`.
        """
        max_length = self._classifier.metadata.max_length
        for i, seq in enumerate(tokens):
            if not 1 <= len(seq) <= max_length:
                raise ValueError(
                    f"token list {i} has {len(seq)} tokens; expected 1 to {max_length} "
                    "(make token lists with Batcher.tokenize)"
                )
        request = _Request(list(tokens), len(self.labels))
        if not request.tokens:  # nothing to run: answer at once
            request.future.set_running_or_notify_cancel()
            request.finish()
            return request.future
        self._core.put(request, block=block, timeout=timeout)
        return request.future

    # ------------------------------------------------------------------ blocking API

    def predict_proba(self, texts: Iterable[str]) -> np.ndarray:
        """Probabilities (n, num_labels) float32, like ``Classifier.predict_proba``.

        Blocks the calling thread until its texts are done; waits for queue room rather than
        raising. Any number of threads may call it at once: their texts share model calls.
        """
        parts = []
        for chunk in iter_text_chunks(texts, CHUNK_SIZE):
            future = self.submit(chunk, block=True)
            parts.append(future.result().proba())
        if not parts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def predict(self, texts: Iterable[str]) -> list[Prediction]:
        """One :class:`~clf_runtime.Prediction` per text, in input order."""
        return self._classifier.to_predictions(self.predict_proba(texts))

    # ------------------------------------------------------------------ closing

    def close(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Refuse new texts; finish queued ones (``drain=True``) or fail them with
        :class:`~clf_runtime.errors.BatcherClosedError`; wait for the worker to stop.

        Must not be called from an ``on_batch`` observer (the worker cannot wait for itself).
        """
        self._core.close(drain=drain)
        self._core.thread.join(timeout)

    def __enter__(self) -> Batcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        core = self._core
        return (
            f"Batcher({self._classifier!r}, max_batch_tokens={core.max_batch_tokens}, "
            f"max_batch_rows={core.max_batch_rows}, max_wait_ms={core.max_wait_s * 1000:g}, "
            f"max_queue={core.max_queue})"
        )
