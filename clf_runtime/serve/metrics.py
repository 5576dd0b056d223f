"""Prometheus metrics of the server, in a registry of its own (several apps in one process,
as in tests, never collide).

Names and what they answer:

- ``clf_requests_total{route,status}``: requests by route and HTTP status (refusals included);
- ``clf_request_duration_seconds{route}``: handling time of each request;
- ``clf_tokenization_duration_seconds`` / ``clf_queue_duration_seconds``: per request, time
  spent tokenizing and waiting for the batcher;
- ``clf_inference_duration_seconds``: per model call;
- ``clf_batch_size`` / ``clf_batch_tokens`` / ``clf_batch_requests``: per model call, texts,
  padded tokens (rows x longest) and distinct requests sharing it (> 1: batching happened);
- ``clf_batch_failures_total``: model calls that raised;
- ``clf_queue_depth``: texts waiting for the model now;
- ``clf_texts_total``: texts classified.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..batcher import BatchRecord

__all__ = ["CONTENT_TYPE_LATEST", "ServeMetrics"]

# Sub-millisecond to tens of seconds: tokenizing an SMS takes microseconds, a queue under
# overload seconds.
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKENS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class ServeMetrics:
    """The server's metrics; :meth:`render` gives the Prometheus text format."""

    def __init__(self, queue_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "clf_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.request_duration = Histogram(
            "clf_request_duration_seconds",
            "Time to handle a request, from routing to response",
            ["route"],
            buckets=_SECONDS,
            registry=r,
        )
        self.tokenization_duration = Histogram(
            "clf_tokenization_duration_seconds",
            "Time to tokenize the texts of a request",
            buckets=_SECONDS,
            registry=r,
        )
        self.queue_duration = Histogram(
            "clf_queue_duration_seconds",
            "Time a request waited in the batcher's queue",
            buckets=_SECONDS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "clf_inference_duration_seconds",
            "Duration of one model call",
            buckets=_SECONDS,
            registry=r,
        )
        self.batch_size = Histogram(
            "clf_batch_size", "Texts per model call", buckets=_ROWS, registry=r
        )
        self.batch_tokens = Histogram(
            "clf_batch_tokens",
            "Padded tokens (rows x longest) per model call",
            buckets=_TOKENS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "clf_batch_requests",
            "Requests sharing one model call",
            buckets=_ROWS,
            registry=r,
        )
        self.batch_failures = Counter("clf_batch_failures", "Model calls that raised", registry=r)
        self.texts = Counter("clf_texts", "Texts classified", registry=r)
        self.queue_depth = Gauge("clf_queue_depth", "Texts waiting for the model", registry=r)
        self.queue_depth.set_function(queue_depth)

    def observe_batch(self, record: BatchRecord) -> None:
        """The batcher's ``on_batch`` observer (runs on its worker thread; thread-safe)."""
        self.inference_duration.observe(record.seconds)
        self.batch_size.observe(record.rows)
        self.batch_tokens.observe(record.padded_tokens)
        self.batch_requests.observe(record.requests)
        if not record.ok:
            self.batch_failures.inc()

    def render(self) -> bytes:
        """All metrics in the Prometheus text exposition format."""
        return generate_latest(self.registry)
