"""The "batching off" competitor of ``bench_serve.py``: the server most people write first.

Same HTTP stack as ``clf-serve`` (Starlette on uvicorn) and the same ``POST /predict`` response
(TEI's shape), but every request runs its own ``Classifier.predict_proba(texts)`` in
Starlette's thread pool: one model call per request, and concurrent requests run concurrent
``session.run`` calls (each with the session's intra-op threads, each with its own arena).

Usage: ``python benchmarks/serve_naive.py EXPORT --port 0 --threads 2 --precision int8``
(prints uvicorn's "Uvicorn running on http://HOST:PORT" line, like ``clf-serve``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # this work tree's packages
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from clf_runtime import Classifier


def create_naive_app(clf: Classifier):  # -> starlette.applications.Starlette
    """``POST /predict`` and ``GET /health`` with one ``predict_proba`` call per request."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    labels = clf.labels

    async def predict(request: Request) -> JSONResponse:
        inputs = (await request.json())["inputs"]
        single = isinstance(inputs, str)
        probs = await run_in_threadpool(clf.predict_proba, [inputs] if single else inputs)
        order = np.argsort(-probs, axis=1, kind="stable").tolist()
        rows = [
            [{"label": labels[k], "score": row[k]} for k in best]
            for best, row in zip(order, probs.tolist(), strict=True)
        ]
        return JSONResponse(rows[0] if single else rows)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ready"})

    return Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precision", default=None)
    args = ap.parse_args(argv)
    import uvicorn

    clf = Classifier.load(
        args.model, providers="cpu", threads=args.threads, precision=args.precision
    )
    clf.predict_proba(["warm up"])
    uvicorn.run(
        create_naive_app(clf),
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=False,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
