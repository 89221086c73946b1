"""The front door's limits against slow and idle clients.

A client that opens connections and never finishes a request would otherwise
hold a file descriptor each until it lets go: enough of them and nobody else
gets in.  :class:`ConnectionGuard` holds what one server allows -- how long a
request's head may take to arrive (``header_timeout``), how long a body may
stall between two pieces (``body_timeout``), how many connections may be open
(``max_connections``) -- and counts the connections closed for each reason.

Over the cap, the connections closed are those that cost the server nothing to
lose: first the ones still sending a request (oldest first), then idle
keep-alive ones, the newcomer itself only when every other connection has a
request in flight; never one with a request in flight (:func:`pick_victim`).
The protocol (``FastPathProtocol``) enforces the deadlines; this module is
pure bookkeeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["BUSY", "IDLE", "READING", "REASONS", "ConnectionGuard", "pick_victim"]

log = logging.getLogger("swell.http")

#: A connection's state as the cap sees it.
READING = "reading"  # a request's head or body on its way, nothing in flight
IDLE = "idle"  # between requests (keep-alive)
BUSY = "busy"  # a request in flight: never closed by the cap

#: Why the server closed a connection (the ``reason`` label on /metrics).
REASONS = ("header_timeout", "body_timeout", "idle", "cap")
_LOG_EVERY = 10.0  # seconds between two log lines about closed connections


class Guarded(Protocol):
    def guard_state(self) -> str: ...
    def guard_close(self) -> None: ...


def pick_victim(states: Iterable[tuple[Any, str]]) -> Any | None:
    """The connection to close over the cap, from ``(connection, state)`` oldest first.

    The oldest still sending a request; else the oldest idle one; never a busy one
    (``None`` when every connection has a request in flight).
    """
    idle = None
    for conn, state in states:
        if state == READING:
            return conn
        if state == IDLE and idle is None:
            idle = conn
    return idle


class ConnectionGuard:
    """One server's connection limits, the connections open, and what was closed why."""

    def __init__(self, header_timeout: float | None, body_timeout: float | None, max_connections: int | None) -> None:
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections
        self.closed = dict.fromkeys(REASONS, 0)
        self._open: dict[Guarded, None] = {}  # oldest first
        self._logged = 0
        self._next_log = 0.0

    @property
    def open(self) -> int:
        return len(self._open)

    def opened(self, conn: Guarded) -> None:
        """``conn`` is open; over the cap, close the connections that matter least."""
        opened = self._open
        opened[conn] = None
        limit = self.max_connections
        while limit is not None and len(opened) > limit:
            # The newcomer last: it has had no time to send anything yet.
            victim = pick_victim((c, c.guard_state()) for c in opened if c is not conn)
            if victim is None:
                victim = conn  # every other one is serving a request: the cap never takes capacity
            self.close(victim, "cap")
            if victim is conn:
                return

    def gone(self, conn: Guarded) -> None:
        self._open.pop(conn, None)

    def close(self, conn: Guarded, reason: str) -> None:
        """Close ``conn`` for ``reason``, count it, and say so at most every 10 s."""
        self._open.pop(conn, None)
        conn.guard_close()
        self.closed[reason] += 1
        if reason == "idle":
            return  # the keep-alive timeout: routine, not worth a line
        now = time.monotonic()
        if now >= self._next_log:
            total = sum(count for name, count in self.closed.items() if name != "idle")
            log.warning(
                "closed %d slow, idle or surplus connection(s) since the last such line (%s; %d open, cap %s); "
                "swell_connections_closed_total counts them",
                total - self._logged,
                ", ".join(f"{name}={count}" for name, count in self.closed.items() if count and name != "idle"),
                len(self._open),
                self.max_connections,
            )
            self._logged = total
            self._next_log = now + _LOG_EVERY
