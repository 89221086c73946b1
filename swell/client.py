"""The one HTTP client for a Swell server's API: every client command and ``swell advise`` use it.

It finds the server (``SWELL_URL``) and the key (``SWELL_API_KEY``), sends, and
reads the answer.  Whatever is not a result (the server cannot be reached, the
URL is malformed, the answer is an error or not Swell's) becomes one
:class:`ClientError` whose message says what to do; what a command does with it
(a red line and exit 1 in the CLI, a refusal with exit 2 in ``advise``) is the
caller's, through :meth:`Client.fail`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import httpx

__all__ = ["DEFAULT_URL", "Client", "ClientError", "describe_error"]

DEFAULT_URL = "http://127.0.0.1:8080"


class ClientError(Exception):
    """An answer that is not a result: ``message`` for people, ``payload`` for ``--json``."""

    def __init__(self, message: str, payload: dict[str, Any]) -> None:
        super().__init__(message)
        self.message = message
        self.payload = payload


def describe_error(payload: Any, status: int) -> str:
    """A server's error body as one message: ``error: reason``, then each field that was refused."""
    if not isinstance(payload, dict):
        return f"HTTP {status}: {payload}"
    text = str(payload.get("error", f"HTTP {status}"))
    reason = payload.get("reason")
    if reason:
        text += f": {reason}"
    for entry in payload.get("detail") or []:
        if isinstance(entry, dict):
            text += f"\n  {entry.get('field')}: {entry.get('value')!r} — {entry.get('allowed')}"
    return text


class Client:
    """A connection to one server; ``url`` and ``api_key`` default to the environment's."""

    def __init__(self, url: str | None = None, api_key: str | None = None) -> None:
        self.url = (url or os.environ.get("SWELL_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("SWELL_API_KEY", "")
        headers = {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else {}
        import httpx  # here, not at the top: `swell serve` and `--help` never load it
        # A malformed SWELL_URL surfaces as InvalidURL, here or at the first request.
        self.errors: tuple[type[Exception], ...] = (httpx.TransportError, httpx.InvalidURL)
        try:
            self.http = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(30.0, read=None))
        except self.errors as exc:
            self.fail(self._unreachable(exc))

    def fail(self, error: ClientError) -> NoReturn:
        """What a failed call does: raise (the CLI prints and exits instead)."""
        raise error

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The raw answer, whatever its status (only an unreachable server fails)."""
        try:
            return self.http.request(method, path, **kwargs)
        except self.errors as exc:
            self.fail(self._unreachable(exc))

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """The answer as it arrives (``check`` it once read); a connection lost midway fails too."""
        try:
            with self.http.stream(method, path, **kwargs) as response:
                yield response
        except self.errors as exc:
            self.fail(self._unreachable(exc))

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer's JSON (or text); an error status fails with the server's reason."""
        return self.check(self.send(method, path, **kwargs))

    def request_object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A request whose answer must be a JSON object (anything else is not Swell)."""
        payload = self.request(method, path, **kwargs)
        if not isinstance(payload, dict):
            self.fail(
                ClientError(
                    f"{self.url} answered {path} with something other than a JSON object; "
                    "it is not a Swell server (check SWELL_URL)",
                    {"error": "unexpected answer", "reason": str(payload)[:200], "url": self.url},
                )
            )
        return payload

    def check(self, response: httpx.Response) -> Any:
        try:
            payload = response.json()
        except ValueError:
            payload = response.text
        if response.status_code >= 400:
            if response.status_code == 401 and not self.api_key:
                message = "unauthorized: set SWELL_API_KEY to the key `swell serve` printed"
            else:
                message = describe_error(payload, response.status_code)
            self.fail(
                ClientError(
                    message,
                    payload if isinstance(payload, dict) else {"error": str(payload), "status": response.status_code},
                )
            )
        return payload

    def _unreachable(self, exc: Exception) -> ClientError:
        return ClientError(
            f"cannot reach the Swell server at {self.url} ({exc.__class__.__name__}: {exc}); "
            "is `swell serve` running? Set SWELL_URL to point elsewhere.",
            {"error": "server unreachable", "reason": str(exc), "url": self.url},
        )
