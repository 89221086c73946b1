"""Dashboard sessions: the cookie, expiry, revoked keys and the same-site checks."""

from __future__ import annotations

import pytest

from swell.dashboard._session import COOKIE, Sessions, cookie_header, read_cookie, same_origin


def test_a_session_is_found_by_its_token_and_holds_no_key() -> None:
    sessions = Sessions(lambda key_id: True, lifetime=60)
    token, session = sessions.create("key1", now=100.0)
    assert sessions.get(token, now=120.0) is session
    assert session.key_id == "key1"
    assert sessions.get("not-a-token", now=120.0) is None
    assert sessions.get(None, now=120.0) is None


def test_a_session_ends_when_it_expires_or_its_key_is_revoked() -> None:
    alive = {"key1": True}
    sessions = Sessions(lambda key_id: alive[key_id], lifetime=60)
    token, _ = sessions.create("key1", now=100.0)
    assert sessions.get(token, now=160.0) is None  # expired
    token, _ = sessions.create("key1", now=200.0)
    alive["key1"] = False
    assert sessions.get(token, now=201.0) is None
    assert len(sessions) == 0


def test_sign_out_ends_the_session() -> None:
    sessions = Sessions(lambda key_id: True)
    token, _ = sessions.create("key1", now=0.0)
    sessions.end(token)
    assert sessions.get(token, now=1.0) is None


@pytest.mark.parametrize(
    ("sent", "ok"),
    [(None, False), ("", False), ("wrong", False), ("RIGHT", True)],
)
def test_csrf_token_must_match(sent: str | None, ok: bool) -> None:
    sessions = Sessions(lambda key_id: True)
    _, session = sessions.create("key1", now=0.0)
    assert Sessions.csrf_ok(session, session.csrf if sent == "RIGHT" else sent) is ok


@pytest.mark.parametrize(
    ("origin", "host", "scheme", "ok"),
    [
        (None, "127.0.0.1:8000", "http", True),  # no Origin: not a cross-site browser request
        ("http://127.0.0.1:8000", "127.0.0.1:8000", "http", True),
        ("https://evil.example", "127.0.0.1:8000", "http", False),
        ("http://127.0.0.1:8001", "127.0.0.1:8000", "http", False),
        ("https://127.0.0.1:8000", "127.0.0.1:8000", "http", False),
        ("null", "127.0.0.1:8000", "http", False),
        ("http://127.0.0.1:8000", None, "http", False),
    ],
)
def test_same_origin(origin: str | None, host: str | None, scheme: str, ok: bool) -> None:
    assert same_origin(origin, host, scheme) is ok


def test_the_cookie_is_httponly_samesite_strict_and_secure_over_https() -> None:
    plain = cookie_header("tok", secure=False).decode()
    assert plain.startswith(f"{COOKIE}=tok;") and "HttpOnly" in plain and "SameSite=Strict" in plain
    assert "Secure" not in plain
    assert "Secure" in cookie_header("tok", secure=True).decode()
    assert "Max-Age=0" in cookie_header("", secure=False, max_age=0).decode()


def test_read_cookie_finds_the_session_among_others() -> None:
    assert read_cookie(f"a=1; {COOKIE}=tok; b=2".encode()) == "tok"
    assert read_cookie(b"a=1") is None
    assert read_cookie(None) is None
