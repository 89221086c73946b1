"""Dashboard sign-in: sessions, their cookie, and the checks that keep edits same-site.

The browser never holds the API key: signing in trades it for a random session
token (the cookie), and the server keeps only the token's SHA-256 beside the key's
id, so a revoked key ends its sessions at the next request.  The cookie is
HttpOnly and SameSite=Strict (Secure over https).  A request that changes
something must also carry the session's CSRF token in ``X-CSRF-Token`` (the page
holds it; another site cannot read it) and, when the browser sends one, an
``Origin`` that is this server's own.

Pure: the time comes in as an argument.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["COOKIE", "Session", "Sessions", "cookie_header", "read_cookie", "same_origin"]

COOKIE = "swell_session"
SESSION_SECONDS = 12 * 3600.0
MAX_SESSIONS = 1000  # the oldest is signed out past this


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Session:
    key_id: str
    csrf: str
    expires_at: float


class Sessions:
    """Live sessions by the digest of their token; ``key_alive`` says whether a key id still is."""

    def __init__(self, key_alive: Callable[[str], bool], *, lifetime: float = SESSION_SECONDS) -> None:
        self._key_alive = key_alive
        self._lifetime = lifetime
        self._by_digest: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_digest)

    def create(self, key_id: str, now: float) -> tuple[str, Session]:
        """A new session for a (workspace) key: its token, for the cookie, and the session."""
        token = secrets.token_urlsafe(32)
        session = Session(key_id, secrets.token_urlsafe(24), now + self._lifetime)
        self._by_digest[_digest(token)] = session
        while len(self._by_digest) > MAX_SESSIONS:
            self._by_digest.popitem(last=False)
        return token, session

    def get(self, token: str | None, now: float) -> Session | None:
        """The session a cookie names, if it has not expired and its key is still live."""
        if not token:
            return None
        digest = _digest(token)
        session = self._by_digest.get(digest)
        if session is None:
            return None
        if session.expires_at <= now or not self._key_alive(session.key_id):
            del self._by_digest[digest]
            return None
        return session

    def end(self, token: str | None) -> None:
        if token:
            self._by_digest.pop(_digest(token), None)

    @staticmethod
    def csrf_ok(session: Session, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode())


def same_origin(origin: str | None, host: str | None, scheme: str) -> bool:
    """Whether a request's ``Origin`` (absent: an old browser or not a browser) is this server."""
    if origin is None:
        return True
    if not host or origin == "null":
        return False
    return origin == f"{scheme}://{host}"


def cookie_header(token: str, *, secure: bool, max_age: int = int(SESSION_SECONDS)) -> bytes:
    """The ``Set-Cookie`` value for a session (an empty token with max_age 0 clears it)."""
    parts = [f"{COOKIE}={token}", "Path=/", "HttpOnly", "SameSite=Strict", f"Max-Age={max_age}"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts).encode()


def read_cookie(header: bytes | None) -> str | None:
    """The session token in a ``Cookie`` header."""
    if not header:
        return None
    for part in header.decode("latin-1").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value or None
    return None
