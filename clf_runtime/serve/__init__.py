"""``clf-serve``: an HTTP classification server with dynamic batching (the ``serve`` extra).

>>> from clf_runtime.serve import ServeConfig, create_app        # doctest: +SKIP
>>> app = create_app("exports/sms", ServeConfig(max_wait_ms=2))  # an ASGI app  # doctest: +SKIP

Concurrent requests share model calls through :class:`clf_runtime.Batcher`, and every text
still gets exactly what offline ``Classifier.predict_proba`` gives. The web stack (Starlette,
uvicorn, prometheus-client) is imported only by :mod:`clf_runtime.serve.app` and the CLI, never
by ``import clf_runtime``; :func:`create_app` and :func:`main` are loaded on first use, so
``clf-serve`` can explain a missing extra instead of crashing on import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import ServeConfig, ServeConfigError

if TYPE_CHECKING:
    from .app import create_app
    from .cli import main

__all__ = ["ServeConfig", "ServeConfigError", "create_app", "main"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "main":
        from .cli import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
