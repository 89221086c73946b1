"""OpenTelemetry for Swell: imported only when tracing is on (``swell serve --otlp-endpoint URL``).

Nothing else in Swell imports ``opentelemetry``; with tracing off neither the
server nor a replica pays anything for it.  The server's side (the router's
spans) is ``swell.serving``'s; this module holds what both sides share (a
tracer provider exporting over OTLP/HTTP, the W3C ``traceparent`` on raw
headers) and the replica's side: one span around the model call, the child
of the ``traceparent`` the router sent, current while the model runs, so spans
the model code makes (with a provider of its own) are its children.

Unlike Truss, which detaches its own context before it calls model code, the
model sees Swell's span as current: a trace then reads caller → server →
replica → the model's own spans.  Swell's provider is not made the global one,
so a package that sets ``trace.set_tracer_provider`` itself (as Truss allows)
still can.  See docs/observability.md.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from swell.modelserver._otlp import OTLP_ENDPOINT_ENV

__all__ = [
    "ReplicaTracing",
    "StatusSend",
    "end_span",
    "incoming_context",
    "otlp_provider",
    "replica_tracing",
    "trace_headers",
]

_W3C = TraceContextTextMapPropagator()
_CARRIED = (b"traceparent", b"tracestate")

Predict = Callable[..., Awaitable[None]]


def otlp_provider(service: str, endpoint: str, attributes: Mapping[str, str] | None = None) -> TracerProvider:
    """A tracer provider that sends its spans in batches to ``endpoint`` (an OTLP/HTTP
    collector's base URL, as ``OTEL_EXPORTER_OTLP_ENDPOINT``: ``/v1/traces`` is added)."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )
    except ImportError as exc:  # the exporter is the `otel` extra
        raise RuntimeError(
            f"exporting traces needs the OTLP exporter ({exc}): pip install 'swell[otel]'"
        ) from None
    return provider(service, BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")), attributes)


def provider(service: str, processor: SpanProcessor, attributes: Mapping[str, str] | None = None) -> TracerProvider:
    """A tracer provider of Swell's (never the global one) handing its spans to ``processor``."""
    made = TracerProvider(resource=Resource.create({"service.name": service, **(attributes or {})}))
    made.add_span_processor(processor)
    return made


def incoming_context(headers: Iterable[tuple[bytes, bytes]]) -> otel_context.Context:
    """The trace context a request's ``traceparent``/``tracestate`` name (empty when none)."""
    carrier = {name.decode(): value.decode("latin-1") for name, value in headers if name in _CARRIED}
    return _W3C.extract(carrier)


def trace_headers(span: trace.Span) -> bytes:
    """``traceparent`` (and ``tracestate``) header lines naming ``span`` as the parent."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span))
    return b"".join(b"%s: %s\r\n" % (name.encode(), value.encode("latin-1")) for name, value in carrier.items())


class StatusSend:
    """An ASGI ``send`` that notes the response's status on its way through."""

    __slots__ = ("_send", "status")

    def __init__(self, send: Callable[[Any], Awaitable[None]]) -> None:
        self._send = send
        self.status = 0  # none sent

    async def __call__(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)


def end_span(span: trace.Span, status: int, end_time: int | None = None) -> None:
    """End ``span`` with the response's status; a 5xx, or no answer at all, is an error."""
    span.set_attribute("http.response.status_code", status)
    if status >= 500 or status == 0:
        span.set_status(StatusCode.ERROR)
    span.end(end_time=end_time)


class ReplicaTracing:
    """The replica's span around each model call (predict or an OpenAI-style route)."""

    def __init__(self, tracer_provider: TracerProvider) -> None:
        self.provider = tracer_provider
        self._tracer = tracer_provider.get_tracer("swell.modelserver")

    def traced(self, predict: Predict) -> Predict:
        """``predict`` (the app's, ``(scope, receive, send, endpoint)``) inside a span."""
        tracer = self._tracer

        async def traced_predict(scope: Any, receive: Any, send: Any, endpoint: str | None = None) -> None:
            observed = StatusSend(send)
            span = tracer.start_span(
                "swell.model",
                context=incoming_context(scope["headers"]),
                kind=SpanKind.SERVER,
                attributes={"swell.endpoint": endpoint or "predict", "url.path": scope["path"]},
            )
            token = otel_context.attach(trace.set_span_in_context(span))
            try:
                await predict(scope, receive, observed, endpoint)
            except BaseException as exc:
                span.record_exception(exc)
                raise
            finally:
                otel_context.detach(token)
                end_span(span, observed.status)

        return traced_predict

    def close(self) -> None:
        """Send what is still batched (the replica is stopping)."""
        self.provider.shutdown()


def replica_tracing(environ: Mapping[str, str] = os.environ) -> ReplicaTracing | None:
    """The replica's tracing when the server asked for it (``SWELL_OTLP_ENDPOINT``), else None."""
    endpoint = environ.get(OTLP_ENDPOINT_ENV)
    if not endpoint:
        return None
    attributes = {
        key: environ[name]
        for key, name in (("swell.deployment_id", "SWELL_DEPLOYMENT_ID"), ("swell.replica_id", "SWELL_REPLICA_ID"))
        if environ.get(name)
    }
    return ReplicaTracing(otlp_provider("swell-replica", endpoint, attributes))
