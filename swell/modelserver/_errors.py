"""Truss's error classes and how each maps to a reply (TRUSS_CONTRACT.md §10)."""

from __future__ import annotations

import json
import sys
from typing import Any

MODEL_ERROR_MESSAGE = "Internal Server Error (in model/chainlet)."

# Baseten error codes carried in X-BASETEN-ERROR-CODE.
UNEXPECTED_ERROR = 500
DOWNSTREAM_ERROR = 600
CLIENT_ERROR = 700


class ModelNotReady(RuntimeError):
    def __init__(self, model_name: str = "model", detail: str | None = None) -> None:
        msg = f"Model with name {model_name} is not ready."
        super().__init__(msg + (" " + detail if detail else ""))


class InputParsingError(ValueError):
    pass


class UserCodeError(Exception):
    pass


class ModelMethodNotImplemented(Exception):
    pass


class ModelDefinitionError(TypeError):
    """The user's model does not meet the Truss contract."""


class ClientGone(Exception):
    """The client disconnected before a user step ran (answered 499)."""


def error_headers(code: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-baseten-error-source", b"04"),
        (b"x-baseten-error-code", b"%03d" % code),
    ]


def compact_json(content: Any) -> bytes:
    """The body FastAPI's ``JSONResponse`` would write."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def http_exception_class() -> type[BaseException] | None:
    """``fastapi.HTTPException`` if the model imported fastapi; only that class passes through."""
    module = sys.modules.get("fastapi.exceptions")
    return getattr(module, "HTTPException", None) if module is not None else None


def error_reply(exc: BaseException) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """(status, body, extra headers) for an exception, as Truss's exception handler answers."""
    if isinstance(exc, ModelNotReady):
        status, msg, code = 503, str(exc), DOWNSTREAM_ERROR
    elif isinstance(exc, InputParsingError):
        status, msg, code = 400, str(exc), CLIENT_ERROR
    elif isinstance(exc, ModelDefinitionError):
        status, msg, code = 412, f"{type(exc).__name__}: {exc}", DOWNSTREAM_ERROR
    elif isinstance(exc, UserCodeError):
        status, msg, code = 500, MODEL_ERROR_MESSAGE, DOWNSTREAM_ERROR
    elif isinstance(exc, ModelMethodNotImplemented):
        status, msg, code = 404, str(exc), CLIENT_ERROR
    elif isinstance(exc, ClientGone):
        status, msg, code = 499, str(exc), DOWNSTREAM_ERROR
    else:
        http_exc = http_exception_class()
        if http_exc is not None and isinstance(exc, http_exc):
            status, msg, code = exc.status_code, exc.detail, DOWNSTREAM_ERROR  # type: ignore[attr-defined]
        else:
            status, msg, code = 500, f"Unhandled exception: {type(exc).__name__}: {exc}", UNEXPECTED_ERROR
    try:
        body = compact_json({"error": msg})
    except (TypeError, ValueError):
        body = compact_json({"error": str(msg)})
    return status, body, error_headers(code)
