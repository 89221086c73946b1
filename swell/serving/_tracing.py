"""The router's spans for each request it serves, when tracing is on (``swell serve --otlp-endpoint``).

Imported only then: a router without tracing pays one attribute check per
request (:meth:`DeploymentRouter.serve`) and never imports opentelemetry.

One sync request (predict, or a ``…/sync/{path}`` pass-through) gives

    swell.request          SERVER   arrival → answer sent; the child of the caller's traceparent, if any
    ├─ swell.queue_wait             arrival → a replica slot taken (a cold start included)
    ├─ swell.cold_start_wait        arrival → the replica that woke became ready (only when none was ready)
    └─ swell.replica       CLIENT   slot taken → answer sent; its traceparent goes to the replica, whose
       └─ swell.model (replica)     span (swell/modelserver/tracing.py) is its child, and the model's spans theirs

The waits are known only once they are over, so their spans are made with
the times they had; the replica span starts when the slot is taken, because
the replica needs its id in the request head.  Async requests are not traced.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from swell.http import Receive, Send
from swell.modelserver.tracing import (
    StatusSend,
    end_span,
    incoming_context,
    otlp_provider,
    trace_headers,
)

if TYPE_CHECKING:
    from swell.serving._router import DeploymentRouter, ReplicaHandle

__all__ = ["RequestTracing", "otlp_tracing"]

_CARRIED = (b"traceparent", b"tracestate")


class RequestTracing:
    """Spans for the requests of every router given this object (one per server)."""

    def __init__(self, tracer_provider: TracerProvider) -> None:
        self.provider = tracer_provider
        self._tracer = tracer_provider.get_tracer("swell.router")

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
    ) -> None:
        """:meth:`DeploymentRouter.serve`, in spans."""
        tracer = self._tracer
        arrived = time.time_ns()
        arrived_mono = time.monotonic()
        cold = not router.has_ready
        request = tracer.start_span(
            "swell.request",
            context=incoming_context(headers),
            kind=SpanKind.SERVER,
            start_time=arrived,
            attributes={
                "swell.model": router.name,
                "swell.deployment_id": router.deployment_id,
                "swell.route": target.decode("latin-1") if target is not None else "predict",
            },
        )
        under_request = trace.set_span_in_context(request)
        hop = _Hop(tracer, under_request)
        observed = StatusSend(send)

        # The caller's traceparent names the caller's span; the replica's parent is ours.
        forwarded = [(name, value) for name, value in headers if name not in _CARRIED]
        try:
            await router.serve(forwarded, body, observed, timeout, receive, query, target, on_start=hop.start)
        except BaseException as exc:
            request.record_exception(exc)
            raise
        finally:
            ended = time.time_ns()
            status = observed.status
            slot_at = hop.started_at or ended
            waited = status != 202  # a 202 (the caller asked not to wait) did not queue
            if waited:
                tracer.start_span("swell.queue_wait", context=under_request, start_time=arrived).end(end_time=slot_at)
            if cold and waited:
                woke = _ready_after(router.handles.values(), arrived_mono)
                ready_at = slot_at if woke is None else min(slot_at, arrived + int((woke - arrived_mono) * 1e9))
                tracer.start_span("swell.cold_start_wait", context=under_request, start_time=arrived).end(
                    end_time=max(arrived, ready_at)
                )
            if hop.span is not None:
                end_span(hop.span, status, ended)
            end_span(request, status, ended)

    def close(self) -> None:
        """Send what is still batched (the server is stopping)."""
        self.provider.shutdown()


class _Hop:
    """The replica span of one request: started when its slot is taken."""

    __slots__ = ("_parent", "_tracer", "span", "started_at")

    def __init__(self, tracer: trace.Tracer, parent: Any) -> None:
        self._tracer = tracer
        self._parent = parent
        self.span: trace.Span | None = None
        self.started_at: int | None = None

    def start(self, head: bytes, handle: ReplicaHandle) -> bytes:
        """The router took a slot on ``handle``: the head to send, with our traceparent."""
        self.started_at = time.time_ns()
        self.span = span = self._tracer.start_span(
            "swell.replica",
            context=self._parent,
            kind=SpanKind.CLIENT,
            start_time=self.started_at,
            attributes={"swell.replica_id": handle.id},
        )
        line_end = head.index(b"\r\n") + 2
        return head[:line_end] + trace_headers(span) + head[line_end:]


def _ready_after(handles: Iterable[ReplicaHandle], since: float) -> float | None:
    """When the first replica that became ready after ``since`` did (monotonic s), if one did."""
    times = [h.replica.ready_at for h in handles if h.replica.ready_at is not None and h.replica.ready_at >= since]
    return min(times) if times else None


def otlp_tracing(endpoint: str) -> RequestTracing:
    """The server's tracing, exporting to the OTLP/HTTP collector at ``endpoint`` (its base URL)."""
    return RequestTracing(otlp_provider("swell", endpoint))
