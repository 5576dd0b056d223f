"""Refusals of the HTTP server: one exception type carrying the status and a message that
says what to change. The body follows Hugging Face TEI: ``{"error": ..., "error_type": ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ApiError"]


class ApiError(Exception):
    """An HTTP error response: status, a message that says what to change, an error type."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.headers = dict(headers or {})

    def body(self) -> dict[str, str]:
        """The JSON body of the response."""
        return {"error": self.message, "error_type": self.error_type}
