"""Webhook delivery: one signed POST per finished async request, retried with back-off.

The body is JSON (Baseten's shape, so existing receivers work)::

    {"request_id": "...", "model_id": "...", "deployment_id": "...",
     "type": "async_request_completed", "time": "2026-11-30T12:00:00Z",
     "status": "SUCCEEDED", "data": <the model's output>, "errors": []}

and ``X-Swell-Signature: v1=<hex>`` is the HMAC-SHA256 of exactly those bytes
under the workspace's webhook secret (``GET /v1/webhook_secret``).  A receiver
recomputes it over the raw body and compares in constant time.

Destinations are checked, because whoever holds an invoke key chooses them
(server-side request forgery): loopback, private, link-local, unspecified,
multicast and reserved addresses and the server's own addresses are refused
unless the operator allows the host (``swell serve --webhook-allow HOST``).
The check runs when a request is submitted (a ``422``) and again before every
try: the name is resolved once, every address it resolves to is checked, and
the connection goes to that checked address (the ``Host`` header and TLS name
stay the URL's), so a name that re-resolves to a private address later (DNS
rebinding) is refused too.  Redirects are never followed.  A refused
destination is never connected to, so its stored error is the same whether
anything listens there or not.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import httpx

__all__ = [
    "SIGNATURE_HEADER",
    "Destinations",
    "WebhookRefused",
    "WebhookSender",
    "check_webhook_url",
    "sign",
    "verify",
]

log = logging.getLogger("swell.webhooks")

SIGNATURE_HEADER = "X-Swell-Signature"
ATTEMPTS = 6  # the first try and five more, 1, 2, 4, 8 and 16 s apart
FIRST_DELAY = 1.0
ATTEMPT_TIMEOUT = 10.0  # seconds for one POST, connect to last byte
MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT = 5.0  # seconds for the DNS lookup of a destination
ALLOW_FLAG = "--webhook-allow"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPV4_FORMS = re.compile(r"^[0-9a-fA-FxX.]+\Z")  # 2130706433, 0177.0.0.1, 0x7f.1, 127.1


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


class WebhookRefused(ValueError):
    """A destination webhooks may not go to; the message says why and how to allow it."""


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells (any form the resolver reads: ``[::1]``, ``2130706433``,
    ``0177.0.0.1``, ``127.1``), or None for a name."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _IPV4_FORMS.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def own_addresses() -> frozenset[IPAddress]:
    """This machine's addresses: its name's, and every interface's (from /proc on Linux)."""
    found: set[IPAddress] = set()
    for name in {socket.gethostname(), socket.getfqdn()}:
        try:
            found.update(_address(info[4][0]) for info in socket.getaddrinfo(name, None))
        except OSError:
            pass
    try:  # "LOCAL" routes are the addresses of this machine's interfaces
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
        for before, line in zip(lines, lines[1:]):
            if "/32 host LOCAL" in line:
                found.add(ipaddress.IPv4Address(before.split()[-1]))
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            found.add(ipaddress.IPv6Address(int(line.split()[0], 16)))
    except (OSError, ValueError, IndexError):
        pass
    return frozenset(found)


def _address(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])


def _plain(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) is the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class Destinations:
    """Where webhooks may go: public addresses, and the hosts the operator allowed.

    ``allow`` holds host names, addresses or networks (``10.0.0.0/8``); a URL
    whose host is a listed name, or whose addresses are all listed, is allowed.
    """

    def __init__(self, allow: Iterable[str] = (), *, own: frozenset[IPAddress] | None = None) -> None:
        self.names: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow:
            entry = entry.strip().lower()
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self.names.add(entry.rstrip("."))
        self._own = own

    @property
    def own(self) -> frozenset[IPAddress]:
        if self._own is None:
            self._own = own_addresses()
        return self._own

    def allows_name(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def why_refused(self, address: IPAddress) -> str | None:
        """None if webhooks may go to ``address``, else what kind of address it is."""
        plain = _plain(address)
        if any(plain in net or address in net for net in self.networks):
            return None
        for test, kind in (
            ("is_unspecified", "an unspecified address (it reaches this machine)"),
            ("is_loopback", "a loopback address"),
            ("is_link_local", "a link-local address"),
            ("is_multicast", "a multicast address"),
            ("is_private", "a private address"),
            ("is_reserved", "a reserved address"),
        ):
            if getattr(plain, test):
                return kind
        if plain in self.own or address in self.own:
            return "one of this server's own addresses"
        if not plain.is_global:
            return "not a public address"
        return None

    def check(self, host: str, addresses: Iterable[IPAddress]) -> None:
        """WebhookRefused unless every address ``host`` resolved to may be sent to."""
        if self.allows_name(host):
            return
        for address in addresses:
            kind = self.why_refused(address)
            if kind is not None:
                shown = host if str(address) == host.strip("[]") else f"{host} ({address})"
                raise WebhookRefused(
                    f"{shown} is {kind}; webhooks go to public addresses only, "
                    f"unless the server allows the host ({ALLOW_FLAG} HOST)"
                )

    async def resolve(self, url: str) -> list[IPAddress]:
        """The addresses webhooks to ``url`` may connect to; WebhookRefused if any is refused.

        OSError if the name does not resolve (worth another try later).
        """
        parts = urlsplit(url)
        host = parts.hostname or ""
        literal = literal_address(host)
        if literal is not None:
            addresses = [literal]
        else:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            loop = asyncio.get_running_loop()
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT
            )
            addresses = list(dict.fromkeys(_address(info[4][0]) for info in infos))
            if not addresses:
                raise OSError(f"{host} resolves to no address")
        self.check(host, addresses)
        return addresses

    async def check_url(self, url: str) -> None:
        """At submission: WebhookRefused for a refused destination.  A name that does
        not resolve now is let through (it is checked again before each try)."""
        try:
            await self.resolve(url)
        except WebhookRefused:
            raise
        except (OSError, TimeoutError):
            pass


@dataclass
class Outcome:
    """How one delivery ended: ``delivered``, after ``attempts`` tries, the last error if not."""

    delivered: bool
    attempts: int
    error: str | None


class WebhookSender:
    """Sends webhooks from one shared HTTP client, a bounded number at once."""

    def __init__(
        self,
        *,
        concurrency: int = 32,
        first_delay: float = FIRST_DELAY,
        attempts: int = ATTEMPTS,
        destinations: Destinations | None = None,
    ) -> None:
        self.destinations = destinations or Destinations()
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
                    response = await self._post(url, body, headers)
                except WebhookRefused as exc:  # never connected: nothing to learn, nothing to retry
                    error = f"refused: {exc}"
                    log.warning("webhook for %s %s", request_id, error)
                    return Outcome(False, attempt, error)
                except Exception as exc:  # noqa: BLE001 (any transport failure is worth another try)
                    error = f"{type(exc).__name__}: {exc}".rstrip(": ")
                else:
                    if 200 <= response.status_code < 300:
                        return Outcome(True, attempt, None)
                    error = f"the receiver answered HTTP {response.status_code}"
                    if response.is_redirect:
                        error += " (a redirect: webhooks do not follow redirects)"
            log.info("webhook for %s: attempt %d of %d failed: %s", request_id, attempt, self.attempts, error)
            if on_attempt is not None and attempt < self.attempts:
                await on_attempt(attempt, error)
        return Outcome(False, attempt, error)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """POST to the address ``url`` resolved to, checked; the URL's name stays in
        the ``Host`` header and the TLS handshake."""
        import httpx

        addresses = await self.destinations.resolve(url)
        target = httpx.URL(url)
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        for i, address in enumerate(addresses):  # e.g. ::1 then 127.0.0.1 for localhost
            try:
                return await self._http().post(
                    target.copy_with(host=str(address)),
                    content=body,
                    headers={**headers, "host": target.netloc.decode("ascii")},
                    extensions=extensions,
                )
            except httpx.ConnectError:
                if i == len(addresses) - 1:
                    raise
        raise AssertionError("unreachable: resolve() returns at least one address")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
