"""The control plane's one error type: an answer other than success, with its JSON body."""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError"]


class ApiError(Exception):
    """An answer other than success, with the JSON body to send."""

    def __init__(self, http_status: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status = http_status
        self.payload = {"error": error, **extra}
