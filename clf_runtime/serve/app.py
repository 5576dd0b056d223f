"""The ASGI app of ``clf-serve``: :func:`create_app` returns a Starlette application.

Every classification request goes through one :class:`~clf_runtime.batcher.Batcher`, so
concurrent requests share model calls and each still gets exactly what offline
``Classifier.predict_proba`` gives (the pooling contract: a text's logits do not depend on its
batch mates). Routes (JSON; shapes follow Hugging Face TEI where TEI has the route):

=================  ==========================================================================
``GET /``          the web page (one static file, works offline)
``GET /health``    200 once the model is loaded and warmed up, else 503 with the reason
``GET /info``      labels, max_length, precision, provider, versions, limits
``GET /metrics``   Prometheus text format (see :mod:`clf_runtime.serve.metrics`)
``POST /predict``  ``{"inputs": str | [str], "raw_scores": bool, "truncate": bool}`` ->
                   ``[{"label", "score"}, ...]`` per input, every label, most probable first
``POST /classify`` ``{"input": str | [str]}`` -> ``{"data": [{"index", "label", "probs"}],
                   "usage": {"prompt_tokens"}}`` (vLLM / OpenAI style)
=================  ==========================================================================

Refusals are JSON ``{"error", "error_type"}`` whose message says what to change: 422
malformed JSON or wrong types, 413 too many texts or too large a body (or a text over
max_length with ``"truncate": false``), 429 queue full (with ``Retry-After``), 401 missing or
wrong API key, 503 not ready yet, 500 when the model call holding the request's texts failed
(the server keeps serving). Timing headers on classification responses, in milliseconds:
``x-tokenization-time``, ``x-queue-time``, ``x-inference-time``, ``x-total-time``.

Mounting the app inside another Starlette/FastAPI app: run its lifespan from the parent's
(``async with clf_app.router.lifespan_context(clf_app): yield``) so that shutdown drains the
queue; without it the batcher starts on the first request and is never drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import platform
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import anyio.to_thread
import numpy as np
import onnxruntime as ort
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._version import __version__
from ..batcher import BatchedResult, Batcher
from ..classifier import Classifier
from ..errors import BatcherClosedError, ClassifierError, QueueFullError
from ..tokenizer import encode_batch
from .config import ServeConfig
from .errors import ApiError
from .metrics import CONTENT_TYPE_LATEST, ServeMetrics
from .schema import TextsRequest, parse_classify, parse_json, parse_predict

__all__ = ["create_app"]

_log = logging.getLogger(__name__)

# Payloads up to this many characters are tokenized on the event loop (tens of microseconds
# for SMS-sized texts: cheaper than a hop to a worker thread); larger ones in a thread, so a
# 2 MB body never stalls the other connections.
_INLINE_TOKENIZE_CHARS = 16_384
# Any ordinary GPT-2 token ("The"): warm-up inputs only need the right shapes.
_WARMUP_TOKEN = 464
_PAGE_HEADERS = {
    # The page must work offline and load nothing from elsewhere: the browser enforces it.
    "content-security-policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"
    ),
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
}
_ROUTES_HELP = "GET /, /health, /info, /metrics; POST /predict, /classify"

Handler = Callable[[Request], Awaitable[Response]]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


class _Server:
    """State shared by the routes: the model, its batcher, metrics, readiness."""

    def __init__(self, classifier: Classifier, config: ServeConfig) -> None:
        self.clf = classifier
        self.config = config
        self.batcher: Batcher | None = None
        self.status = "not started"
        self.error: str | None = None
        self._start_lock = threading.Lock()
        self._warmup: threading.Thread | None = None
        self.metrics = ServeMetrics(lambda: self.batcher.queued_texts if self.batcher else 0)
        self._key_digest = (
            hashlib.sha256(config.api_key.encode("utf-8", "surrogatepass")).digest()
            if config.api_key
            else None
        )
        self.page = resources.files(__package__).joinpath("static/index.html").read_bytes()
        self.model_id = classifier.model_path.parent.name or classifier.model_path.stem
        meta = classifier.metadata
        self.info = {
            "model_id": self.model_id,
            "model_file": classifier.model_path.name,
            "labels": list(classifier.labels),
            "max_length": meta.max_length,
            "precision": meta.precision,
            "provider": classifier.provider,
            "pooling": meta.pooling,
            "versions": {
                "gpt-clf": __version__,
                "onnxruntime": ort.__version__,
                "python": platform.python_version(),
            },
            "onnxruntime_spin": config.spin,
            "limits": {
                "max_batch_tokens": config.max_batch_tokens,
                "max_batch_requests": config.max_batch_requests,
                "max_wait_ms": config.max_wait_ms,
                "max_queue": config.max_queue,
                "max_client_batch": config.max_client_batch,
                "payload_limit": config.payload_limit,
            },
            "auth_required": self._key_digest is not None,
        }

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Start the batcher and warm the model up in the background (idempotent)."""
        with self._start_lock:
            if self.status != "not started":
                return
            c = self.config
            self.batcher = Batcher(
                self.clf,
                max_batch_tokens=c.max_batch_tokens,
                max_batch_rows=c.max_batch_requests,
                max_wait_ms=c.max_wait_ms,
                max_queue=c.max_queue,
                on_batch=self.metrics.observe_batch,
            )
            self.status = "warming up"
            self._warmup = threading.Thread(
                target=self._warm_up, name="clf-serve-warmup", daemon=True
            )
            self._warmup.start()

    def _warm_up(self) -> None:
        """Run the batch shapes traffic will bring, so the first requests do not pay for
        onnxruntime's first-run allocations and the tokenizer's tables; then declare the server
        ready. The model is called directly, not through the batcher (whose ``max_wait_ms``
        would only delay this): until ready, requests are refused, so nothing runs beside it.
        """
        c, max_length = self.config, self.clf.metadata.max_length
        rows = min(c.max_batch_requests, 8)
        width = max(1, min(max_length, 64, c.max_batch_tokens // rows))
        try:
            # Builds the BPE tables once, before the first request pays for it.
            encode_batch(["warm up the tokenizer"], max_length=max_length)
            for n, length in ((1, min(8, max_length)), (rows, width)):
                ids = np.full((n, length), _WARMUP_TOKEN, dtype=np.int64)  # (B, T)
                self.clf.run_logits(ids, np.full((n,), length, dtype=np.int64))
        except Exception as e:  # reported by /health; the log has the traceback
            _log.exception("clf-serve: warm-up failed")
            self.error = f"warm-up failed: {e}"
            self.status = "failed"
            return
        with self._start_lock:
            if self.status == "warming up":
                self.status = "ready"

    async def aclose(self) -> None:
        """Stop: finish every queued request (nothing accepted is dropped), then return."""
        with self._start_lock:
            self.status = "stopped"
        if self._warmup is not None:
            # A model call still running when the interpreter exits aborts the process
            # (onnxruntime's thread pool is torn down under it), e.g. when the port is taken.
            await anyio.to_thread.run_sync(self._warmup.join)
        if self.batcher is not None:
            await anyio.to_thread.run_sync(self.batcher.close)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.start()
        try:
            yield
        finally:
            await self.aclose()

    # ------------------------------------------------------------------ request plumbing

    def endpoint(self, route: str, handler: Handler, *, auth: bool = True) -> Handler:
        """Wrap a handler: auth, refusals as JSON, x-total-time, request metrics."""

        async def call(request: Request) -> Response:
            start = time.perf_counter()
            try:
                self.start()  # a no-op unless the app is mounted without its lifespan
                if auth:
                    self._check_key(request)
                response = await handler(request)
            except ApiError as e:
                response = JSONResponse(e.body(), e.status, headers=e.headers)
            except Exception as e:  # a bug: answer 500 and keep serving; the log has the trace
                _log.exception("clf-serve: unexpected error on %s", route)
                response = JSONResponse(
                    {"error": f"internal server error: {e!r}", "error_type": "backend"}, 500
                )
            elapsed = time.perf_counter() - start
            response.headers["x-total-time"] = _ms(elapsed)
            self.metrics.requests.labels(route, str(response.status_code)).inc()
            self.metrics.request_duration.labels(route).observe(elapsed)
            return response

        return call

    def _check_key(self, request: Request) -> None:
        if self._key_digest is None:
            return
        header = request.headers.get("authorization")
        challenge = {"WWW-Authenticate": "Bearer"}
        if not header:
            raise ApiError(
                401,
                "this server needs an API key: send the header 'Authorization: Bearer <key>'",
                "unauthorized",
                headers=challenge,
            )
        scheme, _, token = header.partition(" ")
        # Digests have one length whatever was sent, so the comparison time says nothing
        # about the key, not even its length.
        given = hashlib.sha256(token.strip().encode("utf-8", "surrogatepass")).digest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, self._key_digest):
            raise ApiError(
                401,
                "the API key is wrong or not sent as 'Authorization: Bearer <key>'; check the "
                "key given to the server with --api-key",
                "unauthorized",
                headers=challenge,
            )

    def _require_ready(self) -> Batcher:
        if self.status != "ready" or self.batcher is None:
            reason = {
                "warming up": "the model is warming up",
                "failed": f"the model failed to start ({self.error})",
            }.get(self.status, "the server is shutting down")
            raise ApiError(
                503,
                f"{reason}; retry when GET /health returns 200",
                "unhealthy",
                headers={"Retry-After": "1"},
            )
        return self.batcher

    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.payload_limit

        def too_large(size: str) -> ApiError:
            return ApiError(
                413,
                f"the request body is {size} bytes, over this server's limit of {limit} bytes "
                "(--payload-limit); send fewer or shorter texts per request",
                "payload_too_large",
            )

        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(declared)  # refused before a byte of it is read
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(f"more than {limit}")
            chunks.append(chunk)
        return b"".join(chunks)

    def _tokenize(self, texts: list[str], truncate: bool) -> list[list[int]]:
        max_length = self.clf.metadata.max_length
        if truncate:
            return encode_batch(texts, max_length=max_length)
        # One token more than the model takes tells which texts are too long. For every text
        # that fits, the result equals encode_batch(texts, max_length=max_length): the cut made
        # before tokenizing only touches texts of more than max_length * 128 characters, and
        # those always have more than max_length tokens (a GPT-2 token is <= 66 characters).
        tokens = encode_batch(texts, max_length=max_length + 1)
        too_long = [i for i, seq in enumerate(tokens) if len(seq) > max_length]
        if too_long:
            raise ApiError(
                413,
                f"text {too_long[0]} is longer than the model's max_length of {max_length} "
                f'tokens ({len(too_long)} such texts); send "truncate": true to keep the '
                f"first {max_length} tokens of each, or shorten them",
                "validation",
            )
        return tokens

    async def _run(
        self, request: Request, route: str, parse: Callable[..., TextsRequest]
    ) -> tuple[TextsRequest, BatchedResult, dict[str, str]]:
        """Shared by /predict and /classify: read, validate, tokenize, batch, await."""
        batcher = self._require_ready()
        data = parse_json(await self._read_body(request), route)
        req = parse(data, max_client_batch=self.config.max_client_batch)
        start = time.perf_counter()
        if sum(map(len, req.texts)) <= _INLINE_TOKENIZE_CHARS:
            tokens = self._tokenize(req.texts, req.truncate)
        else:
            tokens = await anyio.to_thread.run_sync(self._tokenize, req.texts, req.truncate)
        tokenize_s = time.perf_counter() - start
        self.metrics.tokenization_duration.observe(tokenize_s)
        try:
            future = batcher.submit_tokens(tokens)
        except QueueFullError as e:
            retry = str(int(e.retry_after))
            raise ApiError(429, str(e), "overloaded", headers={"Retry-After": retry}) from e
        except BatcherClosedError as e:
            raise ApiError(503, "the server is shutting down; retry elsewhere", "unhealthy") from e
        try:
            result = await asyncio.wrap_future(future)
        except ClassifierError as e:
            raise ApiError(
                500, f"{e}; the server keeps serving, retry the request", "backend"
            ) from e
        self.metrics.queue_duration.observe(result.queue_seconds)
        self.metrics.texts.inc(len(tokens))
        headers = {
            "x-tokenization-time": _ms(tokenize_s),
            "x-queue-time": _ms(result.queue_seconds),
            "x-inference-time": _ms(result.inference_seconds),
        }
        return req, result, headers

    # ------------------------------------------------------------------ routes

    async def predict(self, request: Request) -> Response:
        req, result, headers = await self._run(request, "/predict", parse_predict)
        values = result.logits if req.raw_scores else result.proba()  # (n, C)
        labels = self.clf.labels
        order = np.argsort(-values, axis=1, kind="stable").tolist()
        rows = [
            [{"label": labels[k], "score": row[k]} for k in best]
            for best, row in zip(order, values.tolist(), strict=True)
        ]
        return JSONResponse(rows[0] if req.single else rows, headers=headers)

    async def classify(self, request: Request) -> Response:
        _, result, headers = await self._run(request, "/classify", parse_classify)
        probs = result.proba()  # (n, C)
        labels = self.clf.labels
        data = [
            {"index": i, "label": labels[k], "probs": row, "num_classes": len(labels)}
            for i, (k, row) in enumerate(zip(probs.argmax(1).tolist(), probs.tolist(), strict=True))
        ]
        body = {
            "id": f"classify-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": self.model_id,
            "data": data,
            "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
        }
        return JSONResponse(body, headers=headers)

    async def health(self, request: Request) -> Response:
        if self.status == "ready":
            return JSONResponse({"status": "ready"})
        body: dict[str, Any] = {"status": self.status}
        if self.error:
            body["error"] = self.error
        return JSONResponse(body, 503, headers={"Retry-After": "1"})

    async def info_route(self, request: Request) -> Response:
        return JSONResponse({**self.info, "status": self.status})

    async def metrics_route(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def page_route(self, request: Request) -> Response:
        return Response(self.page, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """404 / 405 from routing, as JSON bodies like every other refusal."""
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            message = f"no route {request.url.path!r}; the routes are {_ROUTES_HELP}"
        elif status == 405:
            message = f"{request.method} is not allowed on {request.url.path}; the routes are " + (
                _ROUTES_HELP
            )
        else:
            message = str(getattr(exc, "detail", exc))
        self.metrics.requests.labels("other", str(status)).inc()
        headers = getattr(exc, "headers", None)
        return JSONResponse({"error": message, "error_type": "not_found"}, status, headers=headers)


def create_app(
    model: str | os.PathLike[str] | Classifier, config: ServeConfig | None = None
) -> Starlette:
    """The ASGI app serving ``model`` (an export directory, a ``.onnx`` file or a loaded
    :class:`~clf_runtime.Classifier`) with the limits of ``config``.

    A path is loaded here, with ``config.providers`` / ``threads`` / ``precision`` / ``spin``,
    so a bad
    model fails now (:class:`~clf_runtime.ModelLoadError`), not on the first request. The
    batcher starts, and the model warms up, when the app's lifespan starts; ``GET /health``
    answers 200 once that is done. Raises
    :class:`~clf_runtime.serve.config.ServeConfigError` for an invalid ``config``.
    """
    config = config or ServeConfig()
    config.validate()
    if isinstance(model, Classifier):
        classifier = model
    else:
        classifier = Classifier.load(
            model,
            providers=config.providers,
            threads=config.threads,
            precision=config.precision,
            spin=config.spin,
        )
    server = _Server(classifier, config)
    routes = [
        Route("/", server.endpoint("/", server.page_route, auth=False), methods=["GET"]),
        Route("/health", server.endpoint("/health", server.health, auth=False), methods=["GET"]),
        Route("/info", server.endpoint("/info", server.info_route), methods=["GET"]),
        Route("/metrics", server.endpoint("/metrics", server.metrics_route), methods=["GET"]),
        Route("/predict", server.endpoint("/predict", server.predict), methods=["POST"]),
        Route("/classify", server.endpoint("/classify", server.classify), methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=server.lifespan,
        exception_handlers={HTTPException: server.http_error},
    )
    app.state.clf_server = server
    return app
