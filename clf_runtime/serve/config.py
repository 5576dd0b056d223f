"""``ServeConfig``: every knob of ``clf-serve``, one field per CLI flag, validated at once.

Torch-free and web-stack-free (plain dataclass), so the CLI can validate flags before it
imports Starlette or loads a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..contract import PRECISIONS

__all__ = ["ServeConfig", "ServeConfigError"]


class ServeConfigError(ValueError):
    """The server configuration is invalid; each line names the flag to fix."""


@dataclass(frozen=True)
class ServeConfig:
    """How ``clf-serve`` (and :func:`clf_runtime.serve.create_app`) serves a model."""

    host: str = "127.0.0.1"
    """Interface to listen on (--host); 0.0.0.0 listens on every interface."""
    port: int = 8000
    """TCP port (--port)."""
    precision: str | None = None
    """Model file of an export directory (--precision); default int8 on CPU, fp16 on CUDA."""
    providers: str = "auto"
    """onnxruntime providers (--providers): auto, cpu, cuda or names, comma separated."""
    threads: int | None = None
    """onnxruntime intra-op threads (--threads); default every CPU: one model call runs at a
    time, so it should use them all."""
    spin: bool = False
    """Let onnxruntime's intra-op threads busy-wait between model calls (--spin). Off by
    default: spinning threads take the cores the event loop and other programs need (measured
    2x the CPU per text on a busy machine); on a dedicated machine it may save a little
    latency."""
    max_batch_tokens: int = 8192
    """Most padded tokens (rows x longest text) in one model call (--max-batch-tokens)."""
    max_batch_requests: int = 32
    """Most texts in one model call (--max-batch-requests), from any number of requests."""
    max_wait_ms: float = 0.0
    """How long a batch may wait for more texts after its oldest request (--max-wait-ms);
    0 runs what is queued at once."""
    max_queue: int = 512
    """Most texts waiting for the model (--max-queue); beyond it requests get 429."""
    max_client_batch: int = 32
    """Most texts in one request (--max-client-batch); beyond it 413."""
    payload_limit: int = 2_000_000
    """Largest request body in bytes (--payload-limit); beyond it 413."""
    api_key: str | None = None
    """When set, every route but / and /health needs ``Authorization: Bearer KEY`` (--api-key)."""
    log_level: str = "info"
    """uvicorn's log level (--log-level)."""
    access_log: bool = False
    """Log one line per request (--access-log); off by default: it costs time per request."""

    def problems(self) -> list[str]:
        """Every invalid value, one message per flag (empty when the config is valid)."""
        out: list[str] = []

        def positive(flag: str, value: object) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                out.append(f"{flag} must be a positive integer, got {value!r}")

        if not isinstance(self.host, str) or not self.host:
            out.append(f"--host must be a host name or address, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            out.append(f"--port must be an integer 0-65535, got {self.port!r}")
        elif not 0 <= self.port <= 65535:
            out.append(f"--port must be 0-65535, got {self.port}")
        if self.precision is not None and self.precision not in PRECISIONS:
            choices = ", ".join(PRECISIONS)
            out.append(f"--precision must be one of {choices}, got {self.precision!r}")
        if self.threads is not None:
            positive("--threads", self.threads)
        for flag, value in (
            ("--max-batch-tokens", self.max_batch_tokens),
            ("--max-batch-requests", self.max_batch_requests),
            ("--max-queue", self.max_queue),
            ("--max-client-batch", self.max_client_batch),
            ("--payload-limit", self.payload_limit),
        ):
            positive(flag, value)
        wait = self.max_wait_ms
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait < math.inf:
            out.append(f"--max-wait-ms must be a number >= 0, got {wait!r}")
        if (
            isinstance(self.max_client_batch, int)
            and isinstance(self.max_queue, int)
            and self.max_client_batch > self.max_queue
        ):
            out.append(
                f"--max-client-batch ({self.max_client_batch}) must not exceed --max-queue "
                f"({self.max_queue}): a full request could never be queued"
            )
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            out.append("--api-key must be a non-empty string")
        if self.log_level not in ("critical", "error", "warning", "info", "debug", "trace"):
            out.append(
                f"--log-level must be critical, error, warning, info or debug, got "
                f"{self.log_level!r}"
            )
        return out

    def validate(self) -> None:
        """Raise :class:`ServeConfigError` listing every problem at once."""
        problems = self.problems()
        if problems:
            raise ServeConfigError("invalid server configuration:\n  " + "\n  ".join(problems))
