"""The server's ASGI application.

Predict requests never touch a framework: a hand-written ASGI function checks
the key, finds the router and hands it the body bytes.  Every ``/model/…`` route
(async_predict too) is dispatched there, the path parsed once and the deployment
looked up once; async_predict's body is validated as FastAPI would and refused
by the management app's own exception handlers.  Everything under
``/v1`` is a FastAPI app (``_routes.py``, so ``/openapi.json`` documents it),
reached only after the hot path has ruled the request out.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from swell import __version__
from swell.control._async import AsyncPredictRequest
from swell.control._errors import ApiError
from swell.control._keys import KeyRecord
from swell.control._limits import BodyLimit, BodyTooLarge, Limit, read_body
from swell.control._plane import ControlPlane
from swell.control._registry import NotFound
from swell.control._routes import management_app
from swell.control._secrets import SecretKeyError
from swell.control._store import StoreError
from swell.control._throttle import FailureThrottle
from swell.http import (
    JSON_HEADERS,
    BodyOverLimit,
    ClientDisconnected,
    ConnectionGuard,
    Receive,
    Scope,
    Send,
    header,
    respond,
    websocket_refusal,
)
from swell.http import read_body as read_whole_body
from swell.serving import METRICS_CONTENT_TYPE, MetricFamily, render_metrics

__all__ = ["SwellApp", "create_app"]

log = logging.getLogger("swell.app")

_METRICS_HEADERS = [(b"content-type", METRICS_CONTENT_TYPE.encode())]
_UNAUTHORIZED = json.dumps(
    {"error": "unauthorized", "reason": "send the header 'Authorization: Api-Key <key>' with a live API key"}
).encode()
_FORBIDDEN = json.dumps(
    {"error": "forbidden", "reason": "this is an invoke key: it may only call predict; manage with a workspace key"}
).encode()


class _Refused(Exception):
    """A ``/model/…`` request refused before it reaches a router: ``status`` and ``payload``."""

    def __init__(self, status: int, payload: Any) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload


class SwellApp:
    """Raw ASGI at the front; management behind it."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.keys = plane.keys  # one object for the server's life; read on every request
        settings = plane.settings
        self.request_limit = Limit(settings.max_request_bytes)
        upload = Limit(settings.max_upload_bytes, "package upload", "--max-upload-mb")
        api = management_app(plane)
        self.management = BodyLimit(
            api,  # type: ignore[arg-type]
            lambda scope: upload if scope["path"] == "/v1/models/push" else self.request_limit,
        )
        # What the management API answers for each exception; async_predict answers alike.
        self._handlers = api.exception_handlers
        # The fast path buffers a predict body before the app sees it: one
        # declared over the limit goes to uvicorn, and from there to the 413.
        self.max_request_bytes = settings.max_request_bytes
        # The front door's guard (set by the server), counted on /metrics.
        self.connections: ConnectionGuard | None = None
        # Clients that keep naming no live key are answered 429 for a while (docs/security.md).
        self.throttle = FailureThrottle(burst=settings.auth_failure_burst, rate=settings.auth_failure_rate)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith("/model/"):
                await self._model(scope, receive, send)
                return
            if path == "/health":
                await respond(send, 200, {"status": "ok", "version": __version__})
                return
            key = await self._authenticate(scope, send)
            if key is None:
                return
            if path.startswith("/async_request/"):  # invoke keys may follow their requests
                scope.setdefault("state", {})["key"] = key
                await self.management(scope, receive, send)  # type: ignore[arg-type]
                return
            if not key.can_manage():
                await respond(send, 403, _FORBIDDEN)
                return
            if path == "/metrics":
                body = render_metrics(
                    self.plane.controller,
                    (
                        *self.plane.async_queue.metric_families(),
                        *self.plane.keys.metric_families(),
                        _throttle_family(self.throttle),
                        *_connection_families(self.connections),
                    ),
                )
                await respond(send, 200, body, _METRICS_HEADERS)
                return
            await self.management(scope, receive, send)  # type: ignore[arg-type]
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.plane.start()
                except (StoreError, SecretKeyError) as exc:  # a bad --database-url or key: say so, no traceback
                    log.error("%s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.plane.close()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    async def _authenticate(self, scope: Scope, send: Send) -> KeyRecord | None:
        """The request's live key; or None, with the 401 (or, for a client that keeps
        naming no live key, the 429) already sent."""
        value = header(scope, b"authorization")
        # A header already checked and accepted passes at once, even from a held
        # client (a real caller behind a guesser's NAT): the hot path reads no clock.
        key = self.keys.accepted(value)
        if key is not None:
            return key
        return await self._check_key(scope, send, value)

    async def _check_key(self, scope: Scope, send: Send, value: bytes | None) -> KeyRecord | None:
        """:meth:`_authenticate` for a header not accepted before: held clients, hashing, refusals."""
        client = scope.get("client")
        address = client[0] if client else ""
        now = time.monotonic()
        wait = self.throttle.retry_after(address, now)
        if wait is not None:  # nothing is checked for a held client
            self.throttle.refused += 1
            await respond(
                send,
                429,
                {"error": "too many requests without a live API key",
                 "reason": f"this client sent too many unknown or revoked keys; try again in {wait} s"},
                [*JSON_HEADERS, (b"retry-after", b"%d" % wait)],
            )
            return None
        key = self.keys.authenticate(value)
        if key is None:
            if value:  # a key that names nothing: a guess (no header at all costs no check)
                self.throttle.failed(address, now)
            await respond(send, 401, _UNAUTHORIZED)
        return key

    async def _model(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every ``/model/…`` route, sync and async predict alike: the path is parsed
        here once, and the deployment looked up once."""
        # The two request headers read here, in one pass (each the first of its name, as header() gives).
        value = raw_timeout = None
        for name, field in scope["headers"]:
            if name == b"authorization":
                if value is None:
                    value = field
            elif name == b"x-swell-timeout" and raw_timeout is None:
                raw_timeout = field
        key = self.keys.accepted(value)  # _authenticate's first step, inline: no coroutine
        if key is None:
            key = await self._check_key(scope, send, value)
            if key is None:
                return
        parts = scope["path"].split("/")
        # ['', 'model', ref, kind, (name,) verb], or Baseten's pass-through: verb 'sync' and a path after it
        n = len(parts)
        target: bytes | None = None
        if n >= 6 and parts[3] in ("environments", "deployment"):
            kind, ref, verb = parts[3], parts[4], parts[5]
            if verb != "sync" and n > 6:
                verb = "/".join(parts[5:])
        elif n >= 5 and parts[3] == "development":
            kind, ref, verb = "development", None, parts[4]
            if verb != "sync" and n > 5:
                verb = "/".join(parts[4:])
        else:
            await respond(send, 404, {"error": "not found", "reason": f"no route {scope['path']}"})
            return
        if verb == "sync":
            target = _sync_target(scope, 6 if kind != "development" else 5)
            if target is None:
                reason = f"no route {scope['path']} (use …/sync/PATH, e.g. …/sync/v1/chat/completions)"
                await respond(send, 404, {"error": "not found", "reason": reason})
                return
        elif verb == "async_predict":
            await self._async_predict(scope, receive, send, key, parts[2], kind, ref)
            return
        elif verb != "predict":
            reason = f"no route {scope['path']} (use …/predict, …/async_predict or …/sync/PATH)"
            await respond(send, 404, {"error": "not found", "reason": reason})
            return
        elif scope["method"] != "POST":
            await respond(send, 405, {"error": "method not allowed", "reason": "predict takes POST"})
            return
        try:
            router = self.plane.router(parts[2], kind, ref, key)
        except NotFound as exc:
            await respond(send, 404, {"error": "not found", "reason": str(exc)})
            return
        except ApiError as exc:
            await respond(send, exc.status, exc.payload)
            return
        timeout: float | None = None
        if raw_timeout is not None or scope.get("query_string"):  # no call on the common path
            try:
                timeout = _caller_timeout(scope, raw_timeout)
            except _Refused as refused:
                await respond(send, refused.status, refused.payload)
                return
        try:  # swell.http's reader, not _limits' wrapper: one coroutine less per request
            body = await read_whole_body(scope, receive, self.request_limit.bytes)
        except BodyOverLimit as exc:
            await respond(send, 413, BodyTooLarge(self.request_limit, exc.size).payload)
            return
        except ClientDisconnected:
            return  # nobody is left to answer
        await router.serve(scope["headers"], body, send, timeout, receive, scope.get("query_string", b""), target)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Baseten's websocket routes, ``/model/{id}/environments/{env}/websocket``,
        ``…/deployment/{id}/websocket`` and ``…/development/websocket``: the key and
        the deployment as for predict, refusals as the handshake's HTTP answer."""
        refuse = websocket_refusal(scope, send)
        key = await self._authenticate(scope, refuse)
        if key is None:
            return
        parts = scope["path"].split("/")
        n = len(parts)
        if n == 6 and parts[1] == "model" and parts[3] in ("environments", "deployment") and parts[5] == "websocket":
            kind, ref = parts[3], parts[4]
        elif n == 5 and parts[1] == "model" and parts[3] == "development" and parts[4] == "websocket":
            kind, ref = "development", None
        else:
            reason = (f"no websocket route {scope['path']} (use /model/ID/environments/ENV/websocket, "
                      "/model/ID/deployment/ID/websocket or /model/ID/development/websocket)")
            await respond(refuse, 404, {"error": "not found", "reason": reason})
            return
        try:
            router = self.plane.router(parts[2], kind, ref, key)
            timeout = _caller_timeout(scope, header(scope, b"x-swell-timeout"))
        except NotFound as exc:
            await respond(refuse, 404, {"error": "not found", "reason": str(exc)})
            return
        except (ApiError, _Refused) as exc:
            await respond(refuse, exc.status, exc.payload)
            return
        await router.websocket(scope, receive, send, timeout)

    async def _async_predict(
        self, scope: Scope, receive: Receive, send: Send, key: KeyRecord, model_ref: str, kind: str, ref: str | None
    ) -> None:
        """Read and validate the body as the management API reads its bodies, then keep the
        request (before the 201: it survives a restart of the server)."""
        if scope["method"] != "POST":
            allowed = [(b"allow", b"POST")]
            reason = f"{scope['method']} {scope['path']} is not allowed; allowed: POST"
            await respond(send, 405, {"error": "method not allowed", "reason": reason, "allowed": ["POST"]}, [*JSON_HEADERS, *allowed])
            return
        try:
            body = await read_body(scope, receive, self.request_limit)
            request = _async_request(header(scope, b"content-type"), body)
            accepted = await self.plane.async_predict(key, model_ref, kind, ref, request)
        except ClientDisconnected:
            return  # nobody is left to answer
        except Exception as exc:  # noqa: BLE001 (answered by the management API's own handler, or re-raised)
            await self._refuse(scope, receive, send, exc)
            return
        await respond(send, 201, accepted)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        """Answer ``exc`` with the management API's handler for its class (a 4xx/5xx JSON body);
        one it has no handler for goes on to the server (a 500)."""
        for cls in type(exc).__mro__:
            handler = self._handlers.get(cls)
            if handler is not None:
                response = handler(Request(scope, receive), exc)
                if inspect.isawaitable(response):
                    response = await response
                await response(scope, receive, send)  # type: ignore[arg-type]
                return
        raise exc


def _caller_timeout(scope: Scope, raw: bytes | None) -> float | None:
    """The caller's timeout in seconds: ``raw`` (``X-Swell-Timeout``) or ``?timeout=``,
    None when neither is given; :class:`_Refused` (400) when it is not seconds > 0."""
    if raw is None and scope.get("query_string"):
        values = parse_qs(scope["query_string"].decode("latin-1")).get("timeout")
        raw = values[0].encode() if values else None
    if raw is None:
        return None
    try:
        timeout = float(raw)
    except ValueError:
        timeout = 0.0
    if not timeout > 0:
        raise _Refused(400, {"error": "invalid timeout",
                             "reason": f"timeout must be seconds > 0, got {raw.decode('latin-1')!r}"})
    return timeout


def _async_request(content_type: bytes | None, body: bytes) -> AsyncPredictRequest:
    """The body of ``…/async_predict``, read and validated as FastAPI reads a JSON body
    parameter, with FastAPI's exceptions, so that its refusals are the management API's."""
    text_type = content_type.decode("latin-1") if content_type is not None else None
    if not body:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing], body=None)
    value: Any = body  # not declared JSON: refused below as "not an object", with a hint
    if text_type is not None and _is_json(text_type):
        try:
            value = json.loads(body)
        except json.JSONDecodeError as exc:
            error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {},
                     "ctx": {"error": exc.msg}}
            raise RequestValidationError([error], body=exc.doc) from exc
        except Exception as exc:  # not UTF-8, nested too deep, ...: FastAPI answers any of them 400
            raise StarletteHTTPException(400, "There was an error parsing the body") from exc
    try:
        return AsyncPredictRequest.model_validate(value, from_attributes=True)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=value) from None


def _is_json(content_type: str) -> bool:
    """``application/json`` or ``application/…+json``: the bodies FastAPI parses as JSON."""
    maintype, _, subtype = content_type.split(";", 1)[0].strip().lower().partition("/")
    return maintype == "application" and (subtype == "json" or subtype.endswith("+json"))


def _sync_target(scope: Scope, skip: int) -> bytes | None:
    """``METHOD /path?query`` on the replica for Baseten's ``…/sync/{path}``: the caller's
    path after ``sync`` as it was sent (still escaped), or None when there is none."""
    raw = scope.get("raw_path") or scope["path"].encode()
    rest = raw.split(b"/", skip)[skip] if raw.count(b"/") >= skip else b""
    if not rest or any(c in rest for c in b" \r\n"):
        return None
    query = scope.get("query_string", b"")
    return scope["method"].encode() + b" /" + rest + (b"?" + query if query else b"")


def create_app(plane: ControlPlane) -> SwellApp:
    return SwellApp(plane)


def _throttle_family(throttle: FailureThrottle) -> MetricFamily:
    refused = MetricFamily(
        "swell_auth_throttled", "counter",
        "Requests answered 429 without a key check: their client had sent too many unknown or revoked keys",
    )
    refused.add((), throttle.refused)
    return refused


def _connection_families(guard: ConnectionGuard | None) -> tuple[MetricFamily, ...]:
    if guard is None:
        return ()
    closed = MetricFamily(
        "swell_connections_closed", "counter",
        "Connections the server closed: a request head or body too slow, idle past keep-alive, or over the cap",
    )
    for reason, count in guard.closed.items():
        closed.add((("reason", reason),), count)
    open_now = MetricFamily("swell_connections_open", "gauge", "Client connections open now")
    open_now.add((), guard.open)
    return closed, open_now
