"""A websocket through the router: the leg to the replica, and the frames copied both ways.

A websocket is a request that lasts.  The router gives it a replica slot the
way it gives one to a predict (queued, waking a deployment at zero) and keeps
the slot for as long as the socket is open, so the autoscaler sees it as one
request in flight.  This module holds what is particular to it: the leg to the
replica (a ``websockets`` client over the replica's Unix socket, or its TCP
port with the replica token), the copying of frames, and how the socket ends:

- either side closes: the close (code and reason) is passed on to the other;
- the replica goes away without a close (it died): the caller gets 1011;
- Swell closes it (its replica drains, :class:`OpenSockets`): both sides get
  1001, "going away".

Nothing here runs for a predict: the router imports it on the first websocket.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State
from websockets.typing import Subprotocol

from swell.http import WS_MAX_MESSAGE_BYTES, Receive, Send
from swell.serving._backend import Replica

__all__ = ["OpenSockets", "ReplicaRefused", "WebSocketSession", "open_replica_socket"]

log = logging.getLogger("swell.router")

#: How long the replica has to answer the handshake, or a close.
_OPEN_TIMEOUT = 30.0
_CLOSE_TIMEOUT = 5.0
# The caller's handshake and hop headers: the leg to the replica makes its own.
_DROP = frozenset(
    {
        b"host", b"authorization", b"connection", b"upgrade", b"keep-alive", b"te", b"content-length",
        b"transfer-encoding", b"proxy-authorization", b"x-swell-timeout", b"x-swell-replica-token",
        b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol",
        b"user-agent",  # the client sets its own (below: none)
    }
)
# Close codes a close frame may carry (RFC 6455 §7.4); 1005/1006/1015 only describe a close.
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


class ReplicaRefused(Exception):
    """The replica did not open the socket: answer the caller ``status`` with ``body``."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def sendable(code: int) -> int:
    """``code`` if a close frame may carry it, else 1000."""
    return code if code in _SENDABLE or 3000 <= code < 5000 else 1000


async def open_replica_socket(
    replica: Replica, target: str, headers: list[tuple[bytes, bytes]], subprotocols: list[str]
) -> ClientConnection:
    """Open ``target`` (``/v1/websocket?query``) on ``replica`` with the caller's headers
    (less the hop's) and subprotocols; :class:`ReplicaRefused` when it cannot be opened."""
    extra = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers if name not in _DROP]
    if replica.token:
        extra.append(("x-swell-replica-token", replica.token))
    options: dict[str, Any] = {
        "additional_headers": extra,
        "subprotocols": [Subprotocol(p) for p in subprotocols] or None,
        "compression": None,  # a local hop: deflating costs CPU and saves nothing
        "max_size": WS_MAX_MESSAGE_BYTES,
        "ping_interval": None,  # the replica pings us; the caller's side has uvicorn's pings
        "open_timeout": _OPEN_TIMEOUT,
        "close_timeout": _CLOSE_TIMEOUT,
        "user_agent_header": None,
    }
    address = replica.address
    try:
        if address.startswith("unix:"):
            return await unix_connect(address.removeprefix("unix:"), f"ws://replica{target}", **options)
        return await connect(f"ws://{address.removeprefix('http://')}{target}", **options)
    except InvalidStatus as exc:  # the replica answered the handshake with an HTTP status: pass it on
        raise ReplicaRefused(exc.response.status_code, bytes(exc.response.body or b"")) from None
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        reason = f"replica {replica.id} did not open the websocket: {exc or type(exc).__name__}"
        raise ReplicaRefused(502, json.dumps({"error": "replica failed", "reason": reason}).encode()) from None


def close_reason(text: str) -> str:
    """``text`` cut to what a close frame holds (123 bytes of UTF-8)."""
    data = text.encode()
    return text if len(data) <= 123 else data[:120].decode(errors="ignore") + "..."


class WebSocketSession:
    """One open socket: frames both ways until a side closes, or :meth:`close` ends both."""

    def __init__(self, upstream: ClientConnection, receive: Receive, send: Send, replica_id: str) -> None:
        self.upstream = upstream
        self._receive = receive
        self._send = send
        self.replica_id = replica_id
        self._ending: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self._caller_gone = False

    def close(self, code: int, reason: str) -> None:
        """End the socket on both sides with ``code`` (Swell's decision, e.g. 1001 on drain)."""
        if not self._ending.done():
            self._ending.set_result((code, reason))

    async def run(self) -> None:
        """Copy frames until the socket ends; both sides are closed on return."""
        inbound = asyncio.ensure_future(self._from_caller())
        outbound = asyncio.ensure_future(self._from_replica())
        try:
            await asyncio.wait((inbound, outbound, self._ending), return_when=asyncio.FIRST_COMPLETED)
            if self._ending.done() and not (inbound.done() or outbound.done()):
                code, reason = self._ending.result()
                inbound.cancel()
                outbound.cancel()
                await self._close_caller(code, reason)
                await self.upstream.close(code, close_reason(reason))
        finally:
            for task in (inbound, outbound):
                task.cancel()
            await asyncio.gather(inbound, outbound, return_exceptions=True)
            if self.upstream.state is not State.CLOSED:
                self.upstream.transport.abort()  # cancelled: no closing handshake to wait for
            if not self._ending.done():
                self._ending.cancel()

    async def _from_caller(self) -> None:
        upstream = self.upstream
        while True:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                try:
                    await upstream.send(text if text is not None else message.get("bytes") or b"")
                except ConnectionClosed:
                    return  # the replica's side ended: _from_replica passes its close on
            elif kind == "websocket.disconnect":
                self._caller_gone = True
                await upstream.close(sendable(message.get("code") or 1000), message.get("reason") or "")
                return

    async def _from_replica(self) -> None:
        upstream = self.upstream
        try:
            async for message in upstream:
                if isinstance(message, str):
                    await self._send({"type": "websocket.send", "text": message})
                else:
                    await self._send({"type": "websocket.send", "bytes": message})
        except ConnectionClosed:
            pass  # read below
        except OSError:  # uvicorn's ClientDisconnected: the caller's side ended
            return
        if self._caller_gone or self._ending.done():
            return
        received = upstream.protocol.close_rcvd
        if received is None:
            # No close frame: the replica went away (died, or its connection broke).
            log.warning("replica %s dropped a websocket; closing it with 1011", self.replica_id)
            await self._close_caller(1011, f"replica {self.replica_id} failed")
        else:
            await self._close_caller(sendable(received.code), received.reason)

    async def _close_caller(self, code: int, reason: str) -> None:
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": close_reason(reason)})
        except (OSError, RuntimeError):  # gone already, or closed already
            pass


class OpenSockets:
    """The websockets open on one replica, and the timer that closes them when it drains."""

    __slots__ = ("_timer", "sessions")

    def __init__(self) -> None:
        self.sessions: set[WebSocketSession] = set()
        self._timer: asyncio.TimerHandle | None = None

    def going_away(self, grace: float, reason: str) -> None:
        """Close every socket with 1001 after ``grace`` seconds, unless they end before."""
        if self._timer is None and self.sessions:
            self._timer = asyncio.get_running_loop().call_later(grace, self.close_all, 1001, reason)

    def staying(self) -> None:
        """The replica serves again (undrained): its sockets stay open."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close_all(self, code: int, reason: str) -> None:
        self._timer = None
        for session in list(self.sessions):
            session.close(code, reason)
