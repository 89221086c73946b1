"""One deployment's request path: its FIFO queue, its replicas' slots, the byte pipe.

Everything here runs on the event loop and costs a few integer updates per
request: the queue is a deque of futures, a slot is a counter on a replica,
and concurrency is integrated as it changes so the control loop can read the
tick's mean once per tick without any per-request record.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from bisect import bisect_left
from collections import deque
from collections.abc import AsyncIterator, Callable
from functools import partial
from heapq import heappop, heappush
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

from swell.config import AutoscalingSettings
from swell.http import Receive, Scope, Send, respond, websocket_refusal
from swell.serving._backend import Replica, ReplicaSpec, ReplicaState
from swell.serving._http_client import ReplicaGone, ReplicaPool, UpstreamResponse

if TYPE_CHECKING:
    from swell.serving._websocket import OpenSockets

__all__ = ["LATENCY_BUCKETS", "DeploymentRouter", "ReplicaHandle", "Supervisor", "Tracing", "Unavailable"]

log = logging.getLogger("swell.router")

_WATCH_AFTER = 1.0

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# Request headers that belong to the client → router hop (or to Swell itself).
_DROP_REQUEST_HEADERS = frozenset(
    {
        b"host",
        b"authorization",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"expect",
        b"te",
        b"upgrade",
        b"proxy-authorization",
        b"x-swell-timeout",
        b"x-swell-replica-token",  # the router's own, to a replica on a network
    }
)
_PREDICT_HEAD = b"POST /v1/models/model:predict HTTP/1.1\r\nhost: replica\r\n"
_JSON = [(b"content-type", b"application/json")]
_DEFAULT_RETRY_AFTER = 5.0  # seconds, before any replica of the deployment has started


class Unavailable(Exception):
    """A request that will not be served, with the status and reason to answer."""

    def __init__(self, status: int, error: str, reason: str | None = None, *, replica: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.reason = reason
        self.replica = replica  # the replica that failed, for a 502

    def body(self) -> bytes:
        payload = {"error": self.error, "reason": self.reason}
        if self.replica is not None:
            payload["replica"] = self.replica
        return json.dumps(payload).encode()


class ReplicaHandle:
    """The router's view of one replica: its slots and its connections."""

    __slots__ = ("broken", "draining", "in_flight", "pool", "replica", "slots", "sockets", "stopping")

    def __init__(self, replica: Replica, slots: int) -> None:
        self.replica = replica
        self.slots = slots
        self.in_flight = 0
        self.draining = False
        self.broken = False  # dropped a connection; routed no more, being replaced
        self.stopping = False  # the backend has been told to stop it
        self.pool: ReplicaPool | None = None  # connections, from the moment it is ready
        self.sockets: OpenSockets | None = None  # its open websockets, from the first

    @property
    def id(self) -> str:
        return self.replica.id

    @property
    def state(self) -> ReplicaState:
        return self.replica.state

    @property
    def ready(self) -> bool:
        return self.replica.state is ReplicaState.READY

    @property
    def serving(self) -> bool:
        """Counts toward the deployment's replicas: alive, not leaving."""
        return self.replica.state.alive and not self.draining and not self.broken and not self.stopping


class Supervisor(Protocol):
    """What a router needs from whoever owns its deployment (the controller), given at
    construction: the deployment's spec and status, read-only, and three pieces of news."""

    @property
    def settings(self) -> AutoscalingSettings: ...

    @property
    def replica_spec(self) -> ReplicaSpec: ...

    @property
    def pending_starts(self) -> int:
        """Starts asked of the backend that have not returned a replica yet."""
        ...

    @property
    def unavailable(self) -> str | None:
        """Answer 503 with this while no replica serves (``None``: queue and wait)."""
        ...

    @property
    def cold_start_estimate(self) -> float | None:
        """The last replica's start to ready (s), for a 202's ``Retry-After``."""
        ...

    def wake(self, demand: int = 0) -> None:
        """A request found no replica (``demand``: callers that did not queue, e.g. a 202)."""
        ...

    def broken(self, handle: ReplicaHandle) -> None:
        """``handle`` dropped a request: it is routed no more and wants replacing."""
        ...

    def drained(self, handle: ReplicaHandle) -> None:
        """A draining replica has no request left: it may stop."""
        ...


class Tracing(Protocol):
    """Spans for a router's requests (``swell/serving/_tracing.py``'s ``RequestTracing``): it
    serves each request by calling :meth:`DeploymentRouter.serve` back with ``on_start``."""

    async def serve(
        self,
        router: DeploymentRouter,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        send: Send,
        timeout: float | None,
        receive: Receive | None,
        query: bytes,
        target: bytes | None,
    ) -> None: ...

    def close(self) -> None:
        """Send what is still batched (the server is stopping)."""
        ...


class DeploymentRouter:
    """Queue, dispatch and counting for one deployment.

    The controller owns the replicas' lives and the deployment's spec and
    status: it tells this object which replicas to route to (:meth:`add`,
    :meth:`ready`, :meth:`drain`, :meth:`forget`), and this object tells its
    :class:`Supervisor` when a request finds no replica, when a replica
    dropped a request and when a draining replica has finished.
    """

    def __init__(
        self,
        deployment_id: str,
        *,
        name: str,
        supervisor: Supervisor,
        now: Callable[[], float],
        queue_limit: int | None = None,
        status_url: str | None = None,
        drain_grace: float = 30.0,
        tracing: Tracing | None = None,
    ) -> None:
        self.deployment_id = deployment_id
        self.name = name
        self._supervisor = supervisor
        self.queue_limit = queue_limit
        self.status_url = status_url  # where a caller told 202 can watch the deployment
        self.drain_grace = drain_grace  # a draining replica's websockets close (1001) after this many seconds
        self.tracing = tracing  # spans for each request (swell serve --otlp-endpoint); None: off
        self._now = now
        # The event loop it serves on, found on first need (each lookup of the
        # running loop is a getpid system call in CPython 3.11).
        self._loop: asyncio.AbstractEventLoop | None = None
        self.handles: dict[str, ReplicaHandle] = {}
        self._ready: list[ReplicaHandle] = []
        self._queue: deque[asyncio.Future[ReplicaHandle]] = deque()
        # Async requests wait in a lane of their own, by priority then arrival:
        # entries are [priority, seq, future]; a cancelled entry's future is
        # set to None and skipped (it was counted out when it left).
        self._lane: list[list[Any]] = []
        self._lane_seq = 0
        self._lane_turn = False  # both lanes waiting: the next free slot alternates
        # counting
        self.in_flight = 0
        self.queued = 0
        self._area = 0.0
        self._since = now()
        self._last_read = self._since
        # statistics, read by /metrics at scrape time
        self.responses: dict[int, int] = {}
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.retries = 0
        self.arrivals = 0  # requests ever received (the control loop reads the difference)

    # ------------------------------------------------------------------ counting

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    @property
    def concurrency(self) -> int:
        return self.in_flight + self.queued

    def _mark(self) -> None:
        t = self._now()
        self._area += (self.in_flight + self.queued) * (t - self._since)
        self._since = t

    def take_mean(self, now: float) -> float:
        """Mean concurrency since the last call (the control loop's tick)."""
        if now > self._since:
            self._area += (self.in_flight + self.queued) * (now - self._since)
            self._since = now
        span = now - self._last_read
        if span <= 0:
            return float(self.concurrency)
        mean = self._area / span
        self._area = 0.0
        self._last_read = now
        return mean

    @property
    def serving_count(self) -> int:
        """Replicas that serve or will serve: the rule's ``replicas``."""
        return self._supervisor.pending_starts + sum(1 for h in self.handles.values() if h.serving)

    @property
    def ready_count(self) -> int:
        """Ready replicas that take requests (not draining)."""
        return sum(1 for h in self.handles.values() if h.serving and h.ready)

    # Read-only views of the supervisor's spec (what the deployment runs, and how it scales).
    @property
    def spec(self) -> ReplicaSpec:
        return self._supervisor.replica_spec

    @property
    def settings(self) -> AutoscalingSettings:
        return self._supervisor.settings

    @property
    def slots(self) -> int:
        return self._supervisor.replica_spec.config.runtime.predict_concurrency

    @property
    def has_ready(self) -> bool:
        """A replica takes requests now (a request would not wait for a cold start)."""
        return bool(self._ready)

    def _unavailable(self) -> Unavailable | None:
        """The 503 to answer at once, while no replica serves and the supervisor says why."""
        reason = self._supervisor.unavailable
        if reason is None or self.serving_count:
            return None
        return Unavailable(503, "deployment unavailable", reason)

    # ------------------------------------------------------------------ replicas (told by the controller)

    def add(self, replica: Replica) -> ReplicaHandle:
        """Know a replica that is starting; it takes requests once :meth:`ready`."""
        handle = self.handles[replica.id] = ReplicaHandle(replica, self.slots)
        return handle

    def ready(self, handle: ReplicaHandle) -> None:
        """Open ``handle``'s connections and route to it, unless it is leaving already."""
        replica = handle.replica
        handle.pool = ReplicaPool(replica.address, max_idle=max(2, handle.slots), token=replica.token)
        handle.pool.on_abandon = partial(self._abandoned, handle)
        if not handle.draining and not handle.stopping:  # e.g. stopped for a load timeout
            self._ready.append(handle)
            self._pump()

    def forget(self, handle: ReplicaHandle) -> None:
        """``handle``'s replica has stopped: route no more to it, close its connections."""
        self.handles.pop(handle.id, None)
        if handle in self._ready:
            self._ready.remove(handle)
        if handle.pool is not None:
            handle.pool.close()

    def drain(self, handle: ReplicaHandle) -> bool:
        """Take no new request on ``handle``; True if it is idle already."""
        handle.draining = True
        if handle in self._ready:
            self._ready.remove(handle)
        if handle.sockets is not None:  # open websockets would hold it forever: they close after the grace
            handle.sockets.going_away(self.drain_grace, f"replica {handle.id} is draining")
        return handle.in_flight == 0

    def undrain(self, handle: ReplicaHandle) -> None:
        handle.draining = False
        if handle.sockets is not None:
            handle.sockets.staying()
        if handle.ready and handle.pool is not None and not handle.broken and handle not in self._ready:
            self._ready.append(handle)
            self._pump()

    def mark_broken(self, handle: ReplicaHandle) -> None:
        handle.broken = True
        if handle in self._ready:
            self._ready.remove(handle)

    def fail_queued(self, error: Unavailable) -> int:
        """Answer every queued request with ``error`` (nothing can serve them)."""
        failed = 0
        self._mark()
        while self._queue:
            fut = self._queue.popleft()
            self.queued -= 1
            if not fut.done():
                fut.set_exception(error)
                failed += 1
        while (lane_fut := self._pop_lane()) is not None:
            self.queued -= 1
            if not lane_fut.done():
                lane_fut.set_exception(error)
                failed += 1
        return failed

    # ------------------------------------------------------------------ dispatch

    def _pick(self) -> ReplicaHandle | None:
        best = None
        most = 0
        for handle in self._ready:
            free = handle.slots - handle.in_flight
            if free > most:
                best, most = handle, free
        return best

    def _pop_lane(self) -> asyncio.Future[ReplicaHandle] | None:
        """The async lane's next live waiter, taken out (None: the lane is empty).
        Entries cancelled while they waited were counted out then and are skipped."""
        while self._lane:
            entry = heappop(self._lane)
            fut: asyncio.Future[ReplicaHandle] | None = entry[2]
            if fut is not None:
                entry[2] = None
                return fut
        return None

    def _pump(self) -> None:
        queue = self._queue
        lane = self._lane
        while queue or lane:
            handle = self._pick()
            if handle is None:
                return
            if lane and (self._lane_turn or not queue):
                lane_fut = self._pop_lane()
                if lane_fut is None:  # only cancelled entries were left
                    continue
                fut = lane_fut
                self._lane_turn = False
            else:
                fut = queue.popleft()
                self._lane_turn = True
            self._mark()
            self.queued -= 1
            if fut.done():  # its caller gave up; it is counted out here
                continue
            self.in_flight += 1
            handle.in_flight += 1
            fut.set_result(handle)

    def _take(self) -> ReplicaHandle | None:
        """A free slot now, if nobody waits for one (:meth:`acquire` without its coroutine)."""
        if not self._queue and not self._lane:
            handle = self._pick()
            if handle is not None:
                self._mark()
                self.in_flight += 1
                handle.in_flight += 1
                return handle
        return None

    async def acquire(self, *, front: bool = False, priority: int | None = None) -> ReplicaHandle:
        """A replica slot for one request: at once if free and nobody waits, else queued.

        ``priority`` (lower first) puts an async request in the async lane,
        which shares free slots turn about with the FIFO queue of sync ones
        and is not subject to the queue limit (its requests are already kept).
        """
        return self._take() or await self._wait(front=front, priority=priority)

    async def _wait(self, *, front: bool = False, priority: int | None = None) -> ReplicaHandle:
        """:meth:`acquire` once :meth:`_take` has found no free slot: queued, or refused."""
        if (refused := self._unavailable()) is not None:
            raise refused
        if priority is None and not front and self.queue_limit is not None and self.queued >= self.queue_limit:
            raise Unavailable(
                429, "queue full", f"{self.queued} requests are waiting; the server's queue limit is {self.queue_limit}"
            )
        fut: asyncio.Future[ReplicaHandle] = self.loop.create_future()
        self._mark()
        self.queued += 1
        entry: list[Any] | None = None
        if priority is not None:
            self._lane_seq += 1
            entry = [priority, self._lane_seq, fut]
            heappush(self._lane, entry)
        elif front:
            self._queue.appendleft(fut)
        else:
            self._queue.append(fut)
        if self.serving_count == 0:
            self._supervisor.wake()
        elif self._lane and self._pick() is not None:
            self._pump()  # a free slot behind cancelled lane entries: they go, this one runs
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(fut.result())
            elif entry is not None:
                if entry[2] is not None:  # still in the lane: count it out now
                    entry[2] = None
                    self._mark()
                    self.queued -= 1
            else:
                try:
                    self._queue.remove(fut)
                except ValueError:
                    pass  # the pump already took it out and counted it
                else:
                    self._mark()
                    self.queued -= 1
            raise

    async def call(
        self,
        body: bytes,
        *,
        priority: int,
        queue_timeout: float | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> tuple[int, bytes]:
        """Run one async request: wait in the async lane, send, read the whole answer.

        Raises TimeoutError if no slot is free within ``queue_timeout``;
        ``on_start`` runs when one is.  A replica that drops the request is
        replaced and the request goes once more to the head of the lane (async
        requests are delivered at least once by contract).  Returns the
        model's status and body.
        """
        started = perf_counter()
        self.arrivals += 1
        head = self.request_head(_JSON, len(body))
        started_hook = None if on_start is None else _then_same_head(on_start)
        try:
            response, handle, _, out = await self._exchange(
                head, body, priority=priority, queue_timeout=queue_timeout, on_start=started_hook
            )
        except Unavailable as exc:
            if exc.replica is not None:  # a replica failed it (a refusal before any is not an answer)
                self._count(exc.status, started)
            raise
        self.release(handle)
        self._count(response.status, started)
        return response.status, out

    def _lost(self, handle: ReplicaHandle) -> None:
        """``handle`` dropped a request: free its slot, route no more to it, have it replaced."""
        self.release(handle)
        if not handle.broken:
            self.mark_broken(handle)
            self._supervisor.broken(handle)

    def release(self, handle: ReplicaHandle) -> None:
        self._mark()
        self.in_flight -= 1
        handle.in_flight -= 1
        if handle.draining:
            if handle.in_flight == 0:
                self._supervisor.drained(handle)
        elif self._queue or self._lane:
            self._pump()

    # ------------------------------------------------------------------ the byte pipe

    @staticmethod
    def request_head(headers: list[tuple[bytes, bytes]], body_length: int, target: bytes | None = None) -> bytes:
        """The replica request's head: the caller's headers less the hop's.

        ``target``: ``METHOD /path?query`` on the replica for a pass-through
        (Baseten's ``…/sync/{path}``); predict when None.
        """
        first = _PREDICT_HEAD if target is None else b"%s HTTP/1.1\r\nhost: replica\r\n" % target
        parts = [first, b"content-length: %d\r\n" % body_length]
        for name, value in headers:
            if name not in _DROP_REQUEST_HEADERS:
                parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    async def _exchange(
        self,
        head: bytes,
        body: bytes,
        *,
        priority: int | None = None,
        queue_timeout: float | None = None,
        on_start: Callable[[bytes, ReplicaHandle], bytes] | None = None,
    ) -> tuple[UpstreamResponse, ReplicaHandle, float, bytes]:
        """Send to a replica; if it drops us, retry once elsewhere, ahead of everyone
        waiting, when that is safe, else answer 502 naming the replica.

        A sync request (``priority`` None) waits in the FIFO queue; safe means
        the request provably never reached the replica (the connection or the
        write was refused), or the model declares predict idempotent
        (``runtime.predict_idempotent``): a request that may have run is not run
        twice behind its caller's back.  An async request waits in the lane by
        ``priority`` (at most ``queue_timeout`` s, then TimeoutError) and is
        always retried once: async requests are delivered at least once by
        contract.  ``on_start`` runs when the first slot is taken, with the
        head and the slot's replica, and gives the head to send (tracing adds
        its ``traceparent`` there).

        Returns the response, its replica (its slot still held), the seconds
        it waited for its first slot, and the whole body, read here unless a
        sync request's answer is streamed (then ``b""``: the caller streams it).
        """
        asynchronous = priority is not None
        asked = perf_counter()
        waited = 0.0
        first: str | None = None
        for attempt in (1, 2):
            if attempt == 2:
                handle = await (self.acquire(priority=-1) if asynchronous else self.acquire(front=True))
            elif asynchronous:
                async with asyncio.timeout(queue_timeout):
                    handle = await self.acquire(priority=priority)
            else:
                handle = self._take() or await self._wait()
            # A caller that gives up (its timeout, a hang-up) leaves the exchange
            # running: the slot stays taken until the replica has answered (the
            # pool tells _abandoned), not while it still works.
            try:
                if attempt == 1:
                    waited = perf_counter() - asked
                    if on_start is not None:
                        head = on_start(head, handle)
                # One request to the replica; its body read here unless a sync
                # answer is streamed.  Cancelled (the caller gave up), the exchange
                # is handed to the pool's on_abandon rather than cut.
                pool = handle.pool
                assert pool is not None
                response = await pool.request(head, body)
                try:
                    if not response.chunked:
                        out = await response.body()
                    elif asynchronous:
                        out = b"".join([chunk async for chunk in _chunks(response)])
                    else:
                        out = b""
                except asyncio.CancelledError:
                    pool.abandon(response)
                    raise
                return response, handle, waited, out
            except ReplicaGone as exc:
                self._lost(handle)
                if attempt == 2:
                    raise Unavailable(
                        502,
                        "replica failed",
                        f"the request failed on two replicas: {first}, then replica {handle.id} "
                        f"failed while serving it ({exc})",
                        replica=handle.id,
                    ) from None
                if exc.sent and not asynchronous and not self.spec.config.runtime.predict_idempotent:
                    raise Unavailable(
                        502,
                        "replica failed",
                        f"replica {handle.id} failed while serving this request ({exc}); the request "
                        "was not retried because predict is not declared idempotent "
                        "(runtime.predict_idempotent in config.yaml)",
                        replica=handle.id,
                    ) from None
                self.retries += 1
                first = f"replica {handle.id} ({exc})"
                log.warning(
                    "%s: replica %s dropped a request (%s); retrying it%s",
                    self.name,
                    handle.id,
                    exc,
                    "" if exc.sent else " (it never reached the replica)",
                )
            except Exception:
                self.release(handle)  # not an answer, not a hang-up: nothing is left running
                raise
        raise AssertionError("unreachable")

    def _abandoned(self, handle: ReplicaHandle, error: BaseException | None) -> None:
        """The exchange of a request whose caller gave up has ended: free its slot.

        A replica that dropped it is replaced as usual.
        """
        if isinstance(error, ReplicaGone):
            self._lost(handle)
        else:
            self.release(handle)

    async def serve(
        self,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        send: Send,
        timeout: float | None,
        receive: Receive | None = None,
        query: bytes = b"",
        target: bytes | None = None,
        on_start: Callable[[bytes, ReplicaHandle], bytes] | None = None,
    ) -> None:
        """Forward one predict request and copy the answer back to ``send``.

        ``target`` (``METHOD /path?query``) forwards to that route of the
        replica instead of predict (Baseten's ``…/sync/{path}`` pass-through),
        with the same queue, limits and streaming.

        With ``receive``, a caller that hangs up while its request waits in
        the queue is noticed (after a second of waiting) and the request leaves
        the queue instead of taking a replica's time.

        A request that finds no ready replica waits for a cold start; its answer
        carries ``x-swell-cold-start-wait`` (seconds).  If instead its caller
        asked not to wait (``Prefer: respond-async`` or ``?wait=false`` in
        ``query``), it is answered ``202`` at once, the deployment wakes, and
        the request is *not* kept: the caller sends it again once the
        deployment is ready (the body says where to look, and when).

        With tracing on, the request goes through its :class:`Tracing`,
        which comes back here with ``on_start`` (see :meth:`_exchange`).
        """
        if self.tracing is not None and on_start is None:
            await self.tracing.serve(self, headers, body, send, timeout, receive, query, target)
            return
        started = perf_counter()
        self.arrivals += 1
        cold = not self._ready
        if cold and _wants_no_wait(headers, query):
            await self._accepted(send, started)
            return
        head = self.request_head(headers, len(body), target)
        watch: _DisconnectWatch | None = None
        if receive is not None and (self._queue or self._pick() is None):
            watch = _DisconnectWatch(receive, self.loop)
        try:
            if timeout is None:
                response, handle, waited, whole = await self._exchange(head, body, on_start=on_start)
            else:
                try:
                    async with asyncio.timeout(timeout):
                        response, handle, waited, whole = await self._exchange(head, body, on_start=on_start)
                except TimeoutError:
                    raise Unavailable(
                        504, "timed out", f"no answer within the caller's timeout of {timeout:g} s"
                    ) from None
        except Unavailable as exc:
            await respond(send, exc.status, exc.body())
            self._count(exc.status, started)
            return
        except asyncio.CancelledError:
            if watch is not None and watch.fired:
                watch.forgive()
                self._count(499, started)  # the caller hung up; nobody to answer
                return
            raise
        finally:
            if watch is not None:
                watch.close()
        status = response.status
        if cold:
            response.headers.append((b"x-swell-cold-start-wait", b"%.3f" % waited))
        if not response.chunked:
            self.release(handle)
            await respond(send, status, whole, response.headers)
            self._count(status, started)
            return
        # Writes to a caller who hung up are dropped silently by the ASGI
        # server, so without this a stream would hold its slot to the end.
        stream_watch = _DisconnectWatch(receive, self.loop, after=0.0) if receive is not None else None
        try:
            await send({"type": "http.response.start", "status": status, "headers": response.headers})
            while (chunk := await response.next_chunk()) is not None:
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if stream_watch is not None:
                # The server answers a pending receive() with a disconnect
                # once the response is complete: stop listening first.
                stream_watch.close()
            await send({"type": "http.response.body", "body": b""})
        except asyncio.CancelledError:
            response.abort()
            if stream_watch is None or not stream_watch.fired:
                raise
            stream_watch.forgive()
            status = 499  # the caller hung up mid-stream
        except BaseException:
            response.abort()
            raise
        finally:
            if stream_watch is not None:
                stream_watch.close()
            self.release(handle)
            self._count(status, started)

    async def websocket(self, scope: Scope, receive: Receive, send: Send, timeout: float | None) -> None:
        """Serve one websocket (an ASGI ``websocket`` scope): a replica slot for as long
        as it is open, frames copied both ways.

        The handshake waits for a slot as a predict does (queued, waking a
        deployment at zero, ``timeout`` seconds at most); a refusal is the
        handshake's HTTP answer (503, 429, 504, or the replica's own).  The
        replica's ``accept`` (its subprotocol) is the caller's; the socket counts
        in flight until either side closes it, its replica drains (1001 after
        the drain grace) or dies (1011).
        """
        from swell.serving._websocket import OpenSockets, ReplicaRefused, WebSocketSession, open_replica_socket

        started = perf_counter()
        self.arrivals += 1
        cold = not self._ready
        refuse = websocket_refusal(scope, send)
        # A caller that gives up on a queued handshake (its open timeout) leaves the queue.
        watch = _DisconnectWatch(receive, self.loop) if self._queue or self._pick() is None else None
        try:
            async with asyncio.timeout(timeout):
                handle = await self.acquire()
        except asyncio.CancelledError:
            if watch is not None and watch.fired:
                watch.forgive()
                self._count(499, started)
                return
            raise
        except Unavailable as exc:
            await respond(refuse, exc.status, exc.body())
            self._count(exc.status, started)
            return
        except TimeoutError:
            error = Unavailable(504, "timed out", f"no replica took the websocket within the caller's timeout of {timeout:g} s")
            await respond(refuse, 504, error.body())
            self._count(504, started)
            return
        finally:
            if watch is not None:
                watch.close()
        try:
            query = scope.get("query_string", b"")
            target = "/v1/websocket" + ("?" + query.decode("latin-1") if query else "")
            upstream = await open_replica_socket(handle.replica, target, scope["headers"], scope.get("subprotocols", []))
        except ReplicaRefused as refused:
            self.release(handle)
            await respond(refuse, refused.status, refused.body)
            self._count(refused.status, started)
            return
        except BaseException:
            self.release(handle)
            raise
        session = WebSocketSession(upstream, receive, send, handle.id)
        sockets = handle.sockets
        if sockets is None:
            sockets = handle.sockets = OpenSockets()
        sockets.sessions.add(session)
        if handle.draining:
            sockets.going_away(self.drain_grace, f"replica {handle.id} is draining")
        try:
            extra = [(b"x-swell-cold-start-wait", b"%.3f" % (perf_counter() - started))] if cold else []
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol, "headers": extra})
            self.responses[101] = self.responses.get(101, 0) + 1
            await session.run()
        except OSError:  # the caller left before the accept reached it
            await upstream.close()
        finally:
            sockets.sessions.discard(session)
            self.release(handle)

    async def _accepted(self, send: Send, started: float) -> None:
        """``202``: the deployment wakes; the caller comes back after ``Retry-After``."""
        if (error := self._unavailable()) is not None:
            await respond(send, error.status, error.body())
            self._count(error.status, started)
            return
        if self.serving_count == 0:
            self._supervisor.wake(demand=1)
        retry = max(1, math.ceil(self._supervisor.cold_start_estimate or _DEFAULT_RETRY_AFTER))
        body = json.dumps(
            {
                "status": "accepted",
                "deployment_id": self.deployment_id,
                "status_url": self.status_url,
                "retry_after": retry,
                "detail": "no replica is ready; one is starting. This request was not run and is not "
                "kept: send it again once the deployment is Active (status_url shows it), "
                "or without Prefer: respond-async / wait=false to wait for it.",
            }
        ).encode()
        headers = [*_JSON, (b"retry-after", b"%d" % retry), (b"preference-applied", b"respond-async")]
        if self.status_url:
            headers.append((b"location", self.status_url.encode()))
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self._count(202, started)

    def _count(self, status: int, started: float) -> None:
        elapsed = perf_counter() - started
        responses = self.responses
        responses[status] = responses.get(status, 0) + 1
        self.latency_counts[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
        self.latency_sum += elapsed


class _DisconnectWatch:
    """Cancel the current request if its caller disconnects.

    Requests that had to queue get one that starts listening only after
    :data:`_WATCH_AFTER` seconds, so the common path costs one timer; a
    streamed answer gets one that listens from its first chunk.
    """

    __slots__ = ("_loop", "_receive", "_task", "_timer", "_watcher", "fired")

    def __init__(self, receive: Receive, loop: asyncio.AbstractEventLoop, *, after: float | None = None) -> None:
        self._receive = receive
        self._loop = loop  # the running one, given: looking it up costs a system call
        self._task = asyncio.current_task(loop)
        self._watcher: asyncio.Task[None] | None = None
        self.fired = False
        delay = _WATCH_AFTER if after is None else after
        self._timer = loop.call_later(delay, self._start)

    def _start(self) -> None:
        self._watcher = self._loop.create_task(self._watch())

    async def _watch(self) -> None:
        message = await self._receive()
        kind = message.get("type")
        if kind == "websocket.connect":  # a websocket handshake waiting for a slot: its hang-up comes next
            kind = (await self._receive()).get("type")
        if (kind == "http.disconnect" or kind == "websocket.disconnect") and self._task is not None:
            self.fired = True
            self._task.cancel()

    def forgive(self) -> None:
        if self._task is not None:
            self._task.uncancel()

    def close(self) -> None:
        self._timer.cancel()
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()


def _then_same_head(on_start: Callable[[], None]) -> Callable[[bytes, ReplicaHandle], bytes]:
    def started(head: bytes, _handle: ReplicaHandle) -> bytes:
        on_start()
        return head

    return started


async def _chunks(response: UpstreamResponse) -> AsyncIterator[bytes]:
    while (chunk := await response.next_chunk()) is not None:
        yield chunk


def _wants_no_wait(headers: list[tuple[bytes, bytes]], query: bytes) -> bool:
    """``Prefer: respond-async`` (RFC 7240) or ``wait=false`` in the query."""
    for name, value in headers:
        if name == b"prefer" and b"respond-async" in value.lower():
            return True
    if query and b"wait=" in query:
        for wait in parse_qs(query.decode("latin-1")).get("wait", ()):
            if wait.lower() in ("false", "0", "no"):
                return True
    return False
