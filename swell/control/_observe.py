"""What an operator reads about a deployment: its logs and its events.

``GET …/deployments/{id}/logs`` merges every replica's log (kept by the
backend, capped and rotated: ``swell.serving.ReplicaLogs``) with the server's
own lines about that deployment (its events: wake, scale, failures) in time
order.  ``GET …/events`` lists the events.  With ``?follow=true`` both stream
(NDJSON, or server-sent events for ``Accept: text/event-stream``) until the
caller hangs up or the server stops; a log follow picks up new replicas (a
restart, a scale-up) and rotated files as they come.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import StreamingResponse

from swell.config import FieldError
from swell.control._events import EVENTS_KEPT, event_view
from swell.control._plane import ApiError, ControlPlane
from swell.control._time import iso
from swell.serving import LogFollower, LogLine

__all__ = ["observe_routes", "parse_since"]

MAX_LINES = 10_000
POLL_SECONDS = 0.25  # how often a log follow looks at the files
KEEPALIVE_SECONDS = 15.0  # a server-sent events comment, so proxies keep the stream open
# Follows open at once (logs and events together; a dashboard page holds two).
# Each log follow reads its files every POLL_SECONDS: 500 of them took half of
# the server's core, and a few thousand would slow every request.
MAX_FOLLOWS = 256
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LAST_SECOND = 253402300799.0  # 9999-12-31T23:59:59Z: later has no ISO form
_REPLICA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # a file name in the log folder, nothing more
SINCE_ALLOWED = "a duration back from now (30s, 10m, 1h, 2d) or an ISO 8601 time (2026-12-03T09:00:00Z)"


def parse_since(value: str | None, now: float) -> float | None:
    """``?since=`` as unix seconds: ``10m`` is ten minutes before ``now``; an ISO time without a zone is UTC."""
    if value is None or value == "":
        return None
    match = _DURATION.match(value)
    if match:  # longer ago than 1970 is everything
        return max(0.0, now - float(match.group(1)) * _UNIT[match.group(2)])
    try:
        when = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise ApiError(422, "invalid since", detail=[FieldError("since", value, SINCE_ALLOWED).as_dict()]) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, when.timestamp()), _LAST_SECOND)


def _streams(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


class _Follows:
    """The follows open now, each counted from its request until its response ends."""

    def __init__(self) -> None:
        self.open = 0

    def take(self) -> None:
        if self.open >= MAX_FOLLOWS:
            raise ApiError(
                429, "too many follows",
                reason=f"{self.open} log and event follows are open, the most this server keeps at once "
                f"({MAX_FOLLOWS}): close one, or read without follow=true",
            )
        self.open += 1

    def release(self) -> None:
        self.open -= 1


class _FollowResponse(StreamingResponse):
    """A follow's stream, which gives its place back however it ends."""

    def __init__(self, *args: Any, release: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _stream(
    request: Request, items: AsyncIterator[tuple[int | None, dict[str, Any]]], follows: _Follows
) -> StreamingResponse:
    """Each item as an NDJSON line, or as a server-sent event (``id:`` when it has one)."""
    follows.take()
    sse = _streams(request)

    async def body() -> AsyncIterator[bytes]:
        async for ident, item in items:
            if item is _KEEPALIVE:
                if sse:
                    yield b": keepalive\n\n"
                continue
            data = json.dumps(item, ensure_ascii=False)
            if sse:
                yield (f"id: {ident}\n" if ident is not None else "").encode() + f"data: {data}\n\n".encode()
            else:
                yield f"{data}\n".encode()

    media = "text/event-stream" if sse else "application/x-ndjson"
    return _FollowResponse(
        body(), media_type=media, headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        release=follows.release,
    )


_KEEPALIVE: dict[str, Any] = {}


def _server_lines(events: Iterable[Mapping[str, Any]], replica: str | None) -> list[LogLine]:
    """The server's events as log lines (stream ``swell``)."""
    lines = []
    for row in events:
        replica_id = (row.get("details") or {}).get("replica_id")
        if replica is not None and replica_id != replica:
            continue
        lines.append(LogLine(iso(row["at"]), replica_id, "swell", row["message"]))
    return lines


def observe_routes(plane: ControlPlane) -> APIRouter:
    router = APIRouter()
    prefix = "/v1/models/{model_id}/deployments/{deployment_id}"
    follows = _Follows()

    def resolve(model_id: str, ref: str) -> str:
        return plane.registry.deployment(plane.registry.model(model_id), ref).id

    def log_folder(deployment: str) -> Any:
        # Backends that keep replica logs on this machine expose them (both
        # built-in ones: a Ray replica's output is shipped here from its node).
        logs = getattr(plane.controller.backend, "logs", None)
        return None if logs is None else logs.root / deployment

    @router.get(prefix + "/logs")
    async def logs(
        request: Request,
        model_id: str,
        deployment_id: str,
        replica: str | None = None,
        since: str | None = None,
        follow: bool = False,
        limit: int = Query(1000, ge=1, le=MAX_LINES),
    ) -> Any:
        """Replica output and the server's lines about the deployment, in time order.

        ``replica`` keeps one replica's; ``since`` is 10m, 1h … or an ISO time;
        ``limit`` the last lines to show (before following)."""
        deployment = resolve(model_id, deployment_id)
        if replica is not None and not _REPLICA_ID.match(replica):
            raise ApiError(
                422, "invalid replica", detail=[FieldError("replica", replica, "a replica id such as r-3f9a1c").as_dict()]
            )
        start = parse_since(since, plane.wall())
        since_iso = iso(start) if start is not None else ""
        folder = log_folder(deployment)
        follower = LogFollower(folder, replica) if folder is not None else None

        async def read_files() -> list[LogLine]:
            return await asyncio.to_thread(follower.poll) if follower is not None else []

        def chosen(lines: list[LogLine]) -> list[LogLine]:
            lines = [line for line in lines if line.time >= since_iso]
            lines.sort(key=lambda line: line.time)
            return lines[-limit:]

        if not follow:
            events = await plane.events.history(deployment, since=start)
            lines = chosen(await read_files() + _server_lines(events, replica))
            return {"deployment_id": deployment, "lines": [line.as_dict() for line in lines]}

        async def items() -> AsyncIterator[tuple[int | None, dict[str, Any]]]:
            with plane.events.follow(deployment) as queue:
                events = await plane.events.history(deployment, since=start)
                last_id = events[-1]["id"] if events else 0
                for line in chosen(await read_files() + _server_lines(events, replica)):
                    yield None, line.as_dict()
                quiet = 0.0
                while not plane.should_stop():
                    await asyncio.sleep(POLL_SECONDS)
                    fresh = []
                    while not queue.empty():
                        row = queue.get_nowait()
                        if row["id"] > last_id:
                            fresh.append(row)
                            last_id = row["id"]
                    lines = await read_files() + _server_lines(fresh, replica)
                    lines.sort(key=lambda line: line.time)
                    for line in lines:
                        yield None, line.as_dict()
                    quiet = 0.0 if lines else quiet + POLL_SECONDS
                    if quiet >= KEEPALIVE_SECONDS:
                        quiet = 0.0
                        yield None, _KEEPALIVE

        return _stream(request, items(), follows)

    @router.get(prefix + "/events")
    async def events(
        request: Request,
        model_id: str,
        deployment_id: str,
        since: str | None = None,
        follow: bool = False,
        limit: int = Query(EVENTS_KEPT, ge=1, le=EVENTS_KEPT),
    ) -> Any:
        """Scaling decisions with their reasons and the replicas' lifecycle, oldest first.

        With ``follow=true`` new ones stream as they happen (a server-sent
        event's ``id`` is the event's; ``Last-Event-ID`` resumes after it)."""
        deployment = resolve(model_id, deployment_id)
        start = parse_since(since, plane.wall())
        after = _last_event_id(request)
        if not follow:
            rows = await plane.events.history(deployment, since=start, after_id=after, limit=limit)
            return {"deployment_id": deployment, "events": [event_view(row) for row in rows]}

        async def items() -> AsyncIterator[tuple[int | None, dict[str, Any]]]:
            with plane.events.follow(deployment) as queue:
                rows = await plane.events.history(deployment, since=start, after_id=after, limit=limit)
                last_id = rows[-1]["id"] if rows else after
                for row in rows:
                    yield row["id"], event_view(row)
                quiet = 0.0
                while not plane.should_stop():
                    try:
                        row = await asyncio.wait_for(queue.get(), timeout=1.0)
                    except TimeoutError:
                        quiet += 1.0
                        if quiet >= KEEPALIVE_SECONDS:
                            quiet = 0.0
                            yield None, _KEEPALIVE
                        continue
                    quiet = 0.0
                    if row["id"] > last_id:
                        last_id = row["id"]
                        yield row["id"], event_view(row)

        return _stream(request, items(), follows)

    return router


def _last_event_id(request: Request) -> int:
    raw = request.headers.get("last-event-id", "")
    return int(raw) if raw.isdigit() else 0
