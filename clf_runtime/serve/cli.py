"""``clf-serve EXPORT``: serve an exported classifier over HTTP with dynamic batching.

Thin by design: parse flags into :class:`~clf_runtime.serve.config.ServeConfig`, load the
model (a bad one fails before the port is opened), hand :func:`~clf_runtime.serve.app.create_app`
to uvicorn. SIGTERM / Ctrl-C stop accepting connections, finish every request in flight and
every queued text, then end the process by that signal, as uvicorn does (status 143 after
SIGTERM, 130 after Ctrl-C). Other exit codes: 1 model or server failure (e.g. the port is
taken), 2 invalid flags or the ``serve`` extra missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence

from ..cli_types import positive_int
from ..contract import PRECISIONS
from ..errors import ClassifierError
from .config import ServeConfig

__all__ = ["API_KEY_ENV", "build_parser", "main"]

API_KEY_ENV = "CLF_SERVE_API_KEY"
"""Environment variable read for the API key when --api-key is not given (keeps the key out of
the process list)."""
_EXTRA = ("starlette", "uvicorn", "prometheus_client")

_EPILOG = f"""\
routes:
  GET  /          web page: type texts, see each label's probability
  GET  /health    200 once the model is loaded and warmed up
  GET  /info      labels, max_length, precision, provider, versions, limits
  GET  /metrics   Prometheus metrics
  POST /predict   {{"inputs": "text" | ["text", ...], "raw_scores": false, "truncate": true}}
  POST /classify  {{"input": "text" | ["text", ...]}}  (vLLM / OpenAI style)

batching:
  Concurrent requests share model calls: the batcher takes every queued text, sorts by length
  and runs batches of at most --max-batch-requests texts and --max-batch-tokens padded tokens.
  A text's result does not depend on its batch mates: answers equal offline predict_proba.

api key:
  --api-key KEY (or ${API_KEY_ENV}, which keeps it out of the process list) makes every route
  but / and /health require the header 'Authorization: Bearer KEY'.

example:
  clf-serve exports/sms --port 8000
  curl -s localhost:8000/predict -H 'content-type: application/json' -d '{{"inputs": "WINNER!!"}}'
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``clf-serve`` argument parser; defaults are :class:`ServeConfig`'s."""
    d = ServeConfig()
    p = argparse.ArgumentParser(
        prog="clf-serve",
        description="Serve an exported gpt-clf classifier over HTTP, with dynamic batching, "
        "Prometheus metrics and a web page.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="EXPORT", help="export directory or .onnx file")
    p.add_argument("--host", default=d.host, help=f"interface to listen on ({d.host})")
    p.add_argument("--port", type=int, default=d.port, help=f"TCP port ({d.port})")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="model file of an export directory (default: int8 on CPU, fp16 on CUDA)",
    )
    p.add_argument(
        "--providers", default=d.providers, help="auto, cpu, cuda or provider names (auto)"
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="onnxruntime intra-op threads (default: every CPU; one model call runs at a time)",
    )
    p.add_argument(
        "--spin",
        action="store_true",
        help="let onnxruntime's threads busy-wait between model calls (default off: frees the "
        "cores for the event loop and other programs)",
    )
    b = p.add_argument_group("batching and limits")
    b.add_argument(
        "--max-batch-tokens",
        type=positive_int,
        default=d.max_batch_tokens,
        help=f"most padded tokens (texts x longest) per model call ({d.max_batch_tokens})",
    )
    b.add_argument(
        "--max-batch-requests",
        type=positive_int,
        default=d.max_batch_requests,
        help=f"most texts per model call, from any number of requests ({d.max_batch_requests})",
    )
    b.add_argument(
        "--max-wait-ms",
        type=float,
        default=d.max_wait_ms,
        help="how long a batch may wait for more texts after its oldest request; "
        f"0 runs what is queued at once ({d.max_wait_ms:g})",
    )
    b.add_argument(
        "--max-queue",
        type=positive_int,
        default=d.max_queue,
        help=f"most texts waiting for the model; beyond it 429 ({d.max_queue})",
    )
    b.add_argument(
        "--max-client-batch",
        type=positive_int,
        default=d.max_client_batch,
        help=f"most texts in one request; beyond it 413 ({d.max_client_batch})",
    )
    b.add_argument(
        "--payload-limit",
        type=positive_int,
        default=d.payload_limit,
        help=f"largest request body in bytes; beyond it 413 ({d.payload_limit})",
    )
    s = p.add_argument_group("access and logs")
    s.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY' (or set ${API_KEY_ENV})",
    )
    s.add_argument(
        "--log-level",
        default=d.log_level,
        choices=["critical", "error", "warning", "info", "debug"],
        help=f"server log level ({d.log_level})",
    )
    s.add_argument("--access-log", action="store_true", help="log one line per request")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``clf-serve``; returns the exit status once the server has stopped."""
    missing = [m for m in _EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"clf-serve: error: {', '.join(missing)} not installed. The server needs the extra: "
            "pip install 'gpt-clf[serve]'",
            file=sys.stderr,
        )
        return 2
    args = build_parser().parse_args(argv)
    config = ServeConfig(
        host=args.host,
        port=args.port,
        precision=args.precision,
        providers=args.providers,
        threads=args.threads,
        spin=args.spin,
        max_batch_tokens=args.max_batch_tokens,
        max_batch_requests=args.max_batch_requests,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_client_batch=args.max_client_batch,
        payload_limit=args.payload_limit,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        log_level=args.log_level,
        access_log=args.access_log,
    )
    problems = config.problems()
    if problems:
        for problem in problems:
            print(f"clf-serve: error: {problem}", file=sys.stderr)
        return 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    pkg_logger = logging.getLogger("clf_runtime")
    pkg_logger.addHandler(handler)
    pkg_logger.setLevel(logging.INFO)

    import uvicorn

    from ..classifier import Classifier
    from .app import create_app

    try:
        clf = Classifier.load(
            args.model,
            providers=config.providers,
            threads=config.threads,
            precision=config.precision,
            spin=config.spin,
        )
    except ClassifierError as e:
        print(f"clf-serve: error: {e}", file=sys.stderr)
        return 1
    app = create_app(clf, config)
    print(
        f"clf-serve: serving {clf.model_path} ({clf.metadata.precision} on {clf.provider}, "
        f"labels {', '.join(clf.labels)})",
        file=sys.stderr,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level=config.log_level,
            access_log=config.access_log,
            lifespan="on",
            server_header=False,
            # Wait for every request in flight, however long: an accepted request is never
            # dropped (the batcher's queue is bounded, so this ends).
            timeout_graceful_shutdown=None,
        )
    )
    try:
        server.run()
    except SystemExit as e:  # uvicorn exits this way (status 3) when it cannot start
        return 1 if e.code else 0
    except KeyboardInterrupt:
        return 130
    return 0 if server.started else 1
