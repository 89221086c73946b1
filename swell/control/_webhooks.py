"""Webhook delivery: one signed POST per finished async request, retried with back-off.

The body is JSON (Baseten's shape, so existing receivers work)::

    {"request_id": "...", "model_id": "...", "deployment_id": "...",
     "type": "async_request_completed", "time": "2026-11-30T12:00:00Z",
     "status": "SUCCEEDED", "data": <the model's output>, "errors": []}

and ``X-Swell-Signature: v1=<hex>`` is the HMAC-SHA256 of exactly those bytes
under the workspace's webhook secret (``GET /v1/webhook_secret``).  A receiver
recomputes it over the raw body and compares in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import httpx

__all__ = ["SIGNATURE_HEADER", "WebhookSender", "check_webhook_url", "sign", "verify"]

log = logging.getLogger("swell.webhooks")

SIGNATURE_HEADER = "X-Swell-Signature"
ATTEMPTS = 6  # the first try and five more, 1, 2, 4, 8 and 16 s apart
FIRST_DELAY = 1.0
ATTEMPT_TIMEOUT = 10.0  # seconds for one POST, connect to last byte
MAX_URL_LENGTH = 2048


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """True if ``header`` is a valid signature of ``body`` (what a receiver runs)."""
    return hmac.compare_digest(sign(secret, body), header.strip())


def check_webhook_url(url: str) -> str:
    """``url`` if it can be a webhook, else ValueError saying what is allowed."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"a webhook URL has at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc}); give an http:// or https:// URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("only http:// or https:// URLs are allowed")
    if not parts.hostname:
        raise ValueError("the URL has no host; give e.g. https://example.com/hook")
    if port == 0:
        raise ValueError("port 0 is not a port to send to")
    if any(c.isspace() for c in url):
        raise ValueError("a URL has no spaces")
    return url


@dataclass
class Outcome:
    """How one delivery ended: ``delivered``, after ``attempts`` tries, the last error if not."""

    delivered: bool
    attempts: int
    error: str | None


class WebhookSender:
    """Sends webhooks from one shared HTTP client, a bounded number at once."""

    def __init__(self, *, concurrency: int = 32, first_delay: float = FIRST_DELAY, attempts: int = ATTEMPTS) -> None:
        self._client: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self.first_delay = first_delay
        self.attempts = attempts

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx  # only a server that sends webhooks pays for it

            self._client = httpx.AsyncClient(timeout=ATTEMPT_TIMEOUT, follow_redirects=False, trust_env=False)
        return self._client

    async def send(
        self,
        url: str,
        body: bytes,
        *,
        secret: str,
        request_id: str,
        already: int = 0,
        on_attempt: Callable[[int, str | None], Awaitable[None]] | None = None,
    ) -> Outcome:
        """POST ``body`` until a 2xx answer or the attempts run out.

        ``already`` counts attempts made before (by a server that stopped);
        ``on_attempt(attempts, error)`` runs after every failed try so the
        request shows how its delivery goes.
        """
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(secret, body),
            "x-swell-request-id": request_id,
            "user-agent": "swell-webhooks",
        }
        attempt = already
        error: str | None = None
        while attempt < self.attempts:
            if attempt > 0:
                await asyncio.sleep(self.first_delay * 2 ** (attempt - 1))
            attempt += 1
            async with self._slots:
                try:
                    response = await self._http().post(url, content=body, headers=headers)
                except Exception as exc:  # noqa: BLE001 (any transport failure is worth another try)
                    error = f"{type(exc).__name__}: {exc}".rstrip(": ")
                else:
                    if 200 <= response.status_code < 300:
                        return Outcome(True, attempt, None)
                    error = f"the receiver answered HTTP {response.status_code}"
            log.info("webhook for %s: attempt %d of %d failed: %s", request_id, attempt, self.attempts, error)
            if on_attempt is not None and attempt < self.attempts:
                await on_attempt(attempt, error)
        return Outcome(False, attempt, error)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
