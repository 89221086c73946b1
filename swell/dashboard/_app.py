"""The dashboard as an ASGI layer in front of the server's app.

It answers ``/`` (sign-in or the models page), ``/ui/…`` (pages, live fragments,
its static files, and ``/ui/api/…``: the management API for a signed-in browser)
and ``/docs`` with Swagger UI from files in this package, so the API docs work
without internet.  Everything else goes to the server's app untouched: a predict
costs one ``str.startswith`` more.

The pages read the same JSON a client gets, by calling the management app in
process; ``/ui/api/…`` hands a request to it with the signed-in key, so an edit
answers exactly what the API answers (a 422's field/value/allowed, ``ACCEPTED``).
"""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from fastapi.openapi.docs import get_swagger_ui_html

from swell.control import SwellApp
from swell.dashboard._advise import AdviseError, run_advise
from swell.dashboard._charts import Sample, Sampler, async_requests, latency_buckets
from swell.dashboard._pages import (
    deployment_fragment,
    deployment_page,
    index_fragment,
    index_page,
    signin_page,
)
from swell.dashboard._session import (
    Session,
    Sessions,
    cookie_header,
    read_cookie,
    same_origin,
)
from swell.http import Receive, Scope, Send, header, respond
from swell.serving import render_metrics

__all__ = ["DashboardPages"]

STATIC = Path(__file__).parent / "static"
_SAFE_METHODS = frozenset({"GET", "HEAD"})
_MAX_FORM = 8192
_SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
_CSP = b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; object-src 'none'; frame-ancestors 'none'"


def _text(scope: Scope, name: bytes) -> str | None:
    value = header(scope, name)
    return None if value is None else value.decode("latin-1")


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await respond(send, status, body, [(b"content-type", content_type), *_SECURITY_HEADERS, *(headers or [])])


async def _html(send: Send, body: str, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await _respond(send, status, body.encode(), b"text/html; charset=utf-8", [(b"content-security-policy", _CSP), *(headers or [])])


async def _json(send: Send, status: int, payload: dict[str, Any]) -> None:
    await _respond(send, status, json.dumps(payload).encode(), b"application/json")


async def _redirect(send: Send, location: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await _respond(send, 303, b"", b"text/plain", [(b"location", location.encode()), *(headers or [])])


class DashboardPages:
    """ASGI: the dashboard's routes, then ``app`` for everything else (what
    :class:`swell.dashboard.Dashboard` hands it: the requests for its pages)."""

    def __init__(self, app: SwellApp, *, now: Callable[[], float] = time.time) -> None:
        self.app = app
        self.keys = app.plane.keys
        self.now = now
        self.sessions = Sessions(self._key_alive)
        self.sampler = Sampler()

    def _key_alive(self, key_id: str) -> bool:
        record = self.keys.records.get(key_id)
        return record is not None and record.revoked_at is None and record.can_manage()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One request :class:`swell.dashboard.Dashboard` handed over: a page, or
        ``/openapi.json`` without an ``Authorization`` header."""
        path: str = scope["path"]
        if path == "/" or path.startswith("/ui/") or path == "/docs" or path.startswith("/docs/"):
            await self._route(scope, receive, send, path)
        elif path == "/openapi.json" and self._session(scope):
            await self.app.management(scope, receive, send)  # type: ignore[arg-type]
        else:
            await self.app(scope, receive, send)

    # ------------------------------------------------------------------ plumbing

    def _session(self, scope: Scope) -> Session | None:
        return self.sessions.get(read_cookie(header(scope, b"cookie")), self.now())

    def _same_origin(self, scope: Scope) -> bool:
        return same_origin(_text(scope, b"origin"), _text(scope, b"host"), scope.get("scheme", "http"))

    def _secure(self, scope: Scope) -> bool:
        return scope.get("scheme") == "https"

    async def _get(self, path: str, query: bytes = b"") -> tuple[int, Any]:
        """A GET on the management app, in process: its status and JSON."""
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query,
            "headers": [],
            "client": None,
            "server": None,
            "state": {},
        }
        status = 500
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app.management(scope, receive, send)  # type: ignore[arg-type]
        return status, json.loads(b"".join(chunks) or b"null")

    # ------------------------------------------------------------------ routes

    async def _route(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        method = scope["method"]
        if path.startswith("/ui/static/") or path.startswith("/docs/static/"):
            await self._static(send, path)
            return
        if path == "/ui/signin" and method == "POST":
            await self._signin(scope, receive, send)
            return
        session = self._session(scope)
        if session is None:
            if path.startswith("/ui/api/") or path.startswith("/ui/fragment/"):
                await _json(send, 401, {"error": "unauthorized", "reason": "sign in again at /"})
            elif path == "/":
                await _html(send, signin_page())
            else:
                await _redirect(send, "/")
            return
        if method not in _SAFE_METHODS and not self._same_origin(scope):
            await _json(send, 403, {"error": "forbidden", "reason": "a change must come from this server's own pages (Origin)"})
            return
        if path == "/ui/signout" and method == "POST":
            await self._signout(scope, receive, send, session)
            return
        if path.startswith("/ui/api/"):
            await self._api(scope, receive, send, session, path)
            return
        if path.startswith("/ui/advise/") and method == "POST":
            await self._advise(scope, send, session, path)
            return
        if method not in _SAFE_METHODS:
            await _json(send, 405, {"error": "method not allowed", "reason": f"{method} {path} is not allowed"})
            return
        if path == "/docs":
            page = get_swagger_ui_html(
                openapi_url="/openapi.json",
                title="Swell API",
                swagger_js_url="/docs/static/swagger-ui-bundle.js",
                swagger_css_url="/docs/static/swagger-ui.css",
                swagger_favicon_url="/docs/static/favicon-32x32.png",
            )
            await _respond(send, 200, bytes(page.body), b"text/html; charset=utf-8")
            return
        if path == "/":
            status, body = await self._get("/v1/models")
            await _html(send, index_page(body.get("models", []) if status == 200 else [], session.csrf))
            return
        if path == "/ui/fragment/index":
            status, body = await self._get("/v1/models")
            self.sampler.forget({d["id"] for m in body.get("models", []) for d in m.get("deployments", [])})
            await _html(send, index_fragment(body.get("models", [])))
            return
        parts = [unquote(p) for p in path.split("/")]
        # ['', 'ui', ('fragment',) 'models', m, 'deployments', d]
        if len(parts) == 6 and parts[2] == "models" and parts[4] == "deployments":
            await self._deployment(send, parts[3], parts[5], session, fragment=False)
            return
        if len(parts) == 7 and parts[2] == "fragment" and parts[3] == "models" and parts[5] == "deployments":
            await self._deployment(send, parts[4], parts[6], session, fragment=True)
            return
        await _json(send, 404, {"error": "not found", "reason": f"no page {path}"})

    async def _static(self, send: Send, path: str) -> None:
        name = path.split("/static/", 1)[1]
        folder = STATIC / ("swagger" if path.startswith("/docs/") else "")
        try:
            target = (folder / name).resolve()
            found = "/" not in name and target.is_file() and target.parent == folder.resolve()
        except (OSError, ValueError):  # a NUL byte, a name too long for the file system: a 500 before
            found = False
        if not found:
            await _json(send, 404, {"error": "not found", "reason": f"no file {path}"})
            return
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", kind.encode()),
                    (b"cache-control", b"public, max-age=3600"),
                    (b"x-content-type-options", b"nosniff"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": target.read_bytes()})

    async def _signin(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._same_origin(scope):
            await _html(send, signin_page("Sign in from this server's own page."), 403)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > _MAX_FORM:
                await _html(send, signin_page("That form is too large."), 413)
                return
            if not message.get("more_body"):
                break
        key = (parse_qs(body.decode("latin-1")).get("key") or [""])[0].strip()
        record = self.keys.authenticate(b"Api-Key " + key.encode("latin-1", "replace")) if key else None
        if record is None:
            await _html(send, signin_page("That is not a live API key."), 401)
            return
        if not record.can_manage():
            await _html(
                send,
                signin_page(
                    "This is an invoke key: it may only call predict. Sign in with a workspace key "
                    "(the one swell serve printed, or swell keys create --type workspace)."
                ),
                403,
            )
            return
        token, _ = self.sessions.create(record.id, self.now())
        await _redirect(send, "/", [(b"set-cookie", cookie_header(token, secure=self._secure(scope)))])

    async def _signout(self, scope: Scope, receive: Receive, send: Send, session: Session) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body") or len(body) > _MAX_FORM:
                break
        sent = (parse_qs(body.decode("latin-1")).get("csrf") or [None])[0]
        if not Sessions.csrf_ok(session, sent):
            await _json(send, 403, {"error": "forbidden", "reason": "missing or wrong CSRF token"})
            return
        self.sessions.end(read_cookie(header(scope, b"cookie")))
        await _redirect(send, "/", [(b"set-cookie", cookie_header("", secure=self._secure(scope), max_age=0))])

    async def _api(self, scope: Scope, receive: Receive, send: Send, session: Session, path: str) -> None:
        if scope["method"] not in _SAFE_METHODS and not Sessions.csrf_ok(session, _text(scope, b"x-csrf-token")):
            await _json(send, 403, {"error": "forbidden", "reason": "missing or wrong X-CSRF-Token"})
            return
        inner = path[len("/ui/api") :]
        if not inner.startswith("/v1/"):
            await _json(send, 404, {"error": "not found", "reason": f"no route {inner}"})
            return
        record = self.keys.records[session.key_id]
        forwarded = dict(scope)
        forwarded["path"] = inner
        forwarded["raw_path"] = inner.encode()
        forwarded["headers"] = [(k, v) for k, v in scope["headers"] if k != b"cookie"]
        forwarded["state"] = {**scope.get("state", {}), "key": record}
        await self.app.management(forwarded, receive, send)  # type: ignore[arg-type]

    async def _deployment(self, send: Send, model_id: str, deployment_id: str, session: Session, *, fragment: bool) -> None:
        base = f"/v1/models/{model_id}/deployments/{deployment_id}"
        status, view = await self._get(base)
        if status != 200:
            await _json(send, status, view if isinstance(view, dict) else {"error": "not found"})
            return
        _, traffic = await self._get(base + "/traffic")
        plane = self.app.plane
        metrics = render_metrics(plane.controller, plane.async_queue.metric_families()).decode()
        self.sampler.add(
            view["id"],
            Sample(
                at=self.now(),
                replicas_ready=int(view.get("replicas_ready", 0)),
                replicas_total=int(view.get("replicas_total", 0)),
                in_flight=int(view.get("in_flight", 0)),
                queued=int(view.get("queued", 0)),
                buckets=latency_buckets(metrics, view["id"]),
            ),
        )
        samples = self.sampler.series(view["id"])
        traffic = traffic if isinstance(traffic, dict) else {}
        waiting = async_requests(metrics, view["id"])
        if fragment:
            await _html(send, deployment_fragment(view, traffic, samples, waiting))
        else:
            await _html(send, deployment_page(view, traffic, samples, waiting, session.csrf))

    async def _advise(self, scope: Scope, send: Send, session: Session, path: str) -> None:
        """``swell advise`` over the deployment's recorded traffic: findings, each with its PATCH body."""
        if not Sessions.csrf_ok(session, _text(scope, b"x-csrf-token")):
            await _json(send, 403, {"error": "forbidden", "reason": "missing or wrong X-CSRF-Token"})
            return
        parts = [unquote(p) for p in path.split("/")]
        # ['', 'ui', 'advise', 'models', m, 'deployments', d]
        if len(parts) != 7 or parts[3] != "models" or parts[5] != "deployments":
            await _json(send, 404, {"error": "not found", "reason": f"no route {path}"})
            return
        base = f"/v1/models/{parts[4]}/deployments/{parts[6]}"
        status, view = await self._get(base)
        if status != 200:
            await _json(send, status, view)
            return
        _, traffic = await self._get(base + "/traffic")
        try:
            advice = await run_advise(view, traffic, self.app.plane.settings.max_replica_cap)
        except AdviseError as exc:
            await _json(send, 409, {"error": "no advice", "reason": str(exc)})
            return
        await _json(send, 200, advice)
