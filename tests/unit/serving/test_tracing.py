"""The router's request spans and the replica's model span, joined through the traceparent the
router writes into the replica's request head, with the SDK's in-memory exporter (the replica
side runs in process here: a fake pool hands the head to the replica's real traced predict)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from serving_harness import Recorder  # type: ignore[import-not-found]

from swell.autoscaling import VirtualClock
from swell.config import AutoscalingSettings, ModelConfig
from swell.modelserver.tracing import ReplicaTracing, provider
from swell.serving import DeploymentRouter, ReplicaSpec, ReplicaState
from swell.serving._backend import Replica
from swell.serving._testing import FakeSupervisor
from swell.serving._tracing import RequestTracing

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = (b"traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01".encode())


class Answer:
    """A replica's whole JSON answer, as the pool hands it to the router."""

    status = 200
    chunked = False
    complete = True

    def __init__(self, body: bytes) -> None:
        self.headers = [(b"content-type", b"application/json")]
        self._body = body

    async def body(self) -> bytes:
        return self._body

    def abort(self) -> None:
        pass


class ReplicaInProcess:
    """A pool whose replica is the replica's traced predict, called with the head's headers."""

    def __init__(self, tracing: ReplicaTracing, user_tracer: trace.Tracer) -> None:
        self.heads: list[bytes] = []

        async def predict(scope: Any, receive: Any, send: Any, endpoint: str | None = None) -> None:
            with user_tracer.start_as_current_span("model code"):  # the model's own span
                pass
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        self.predict = tracing.traced(predict)

    async def request(self, head: bytes, body: bytes) -> Answer:
        self.heads.append(head)
        lines = head.split(b"\r\n")[1:]
        headers = [(n.strip().lower(), v.strip()) for n, _, v in (line.partition(b":") for line in lines if line)]
        scope = {"type": "http", "path": "/v1/models/model:predict", "headers": headers}

        async def ignore(message: Any) -> None:
            pass

        await self.predict(scope, None, ignore)
        return Answer(b'{"ok": true}')

    def close(self) -> None:
        pass


def _router(tracing: RequestTracing | None) -> DeploymentRouter:
    config = ModelConfig.model_validate({"runtime": {"predict_concurrency": 1}})
    supervisor = FakeSupervisor(ReplicaSpec("dep1", Path("/nowhere"), config, python="python"), AutoscalingSettings())
    return DeploymentRouter("dep1", name="m", supervisor=supervisor, now=VirtualClock().now, tracing=tracing)


def _memory() -> tuple[InMemorySpanExporter, TracerProvider, TracerProvider]:
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    return exporter, provider("swell", processor), provider("swell-replica", processor)


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


async def test_a_predict_woken_from_zero_gives_the_server_spans_and_the_replica_span_is_their_child() -> None:
    exporter, server, replica_side = _memory()
    router = _router(RequestTracing(server))
    user = TracerProvider()  # the model's own provider, exporting to the same place
    user.add_span_processor(SimpleSpanProcessor(exporter))
    send = Recorder()
    request = asyncio.ensure_future(router.serve([CALLER, (b"x-other", b"1")], b"{}", send, None))
    for _ in range(5):
        await asyncio.sleep(0)
    assert router.queued == 1  # no replica: it waits for one to start
    replica = Replica(id="r-a", deployment_id="dep1", state=ReplicaState.READY, address="unix:/nowhere/a.sock")
    replica.ready_at = time.monotonic()
    handle = router.add(replica)
    router.ready(handle)
    pool = handle.pool = ReplicaInProcess(ReplicaTracing(replica_side), user.get_tracer("model"))  # type: ignore[assignment]
    await request
    assert send.status == 200 and send.body == b'{"ok": true}'

    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {
        "swell.request", "swell.queue_wait", "swell.cold_start_wait", "swell.replica", "swell.model", "model code"
    }
    assert {_hex(s.context.trace_id, 32) for s in spans.values()} == {CALLER_TRACE}

    def parent(span: ReadableSpan) -> int | None:
        return span.parent.span_id if span.parent is not None else None

    root = spans["swell.request"]
    assert parent(root) is not None and _hex(parent(root) or 0, 16) == CALLER_SPAN  # the caller's child
    for name in ("swell.queue_wait", "swell.cold_start_wait", "swell.replica"):
        assert parent(spans[name]) == root.context.span_id, name
    assert parent(spans["swell.model"]) == spans["swell.replica"].context.span_id
    assert parent(spans["model code"]) == spans["swell.model"].context.span_id
    # What the replica was sent names the replica span, not the caller's (one traceparent line).
    head = pool.heads[0]
    sent = f"00-{CALLER_TRACE}-{_hex(spans['swell.replica'].context.span_id, 16)}-01".encode()
    assert head.count(b"traceparent:") == 1 and b"traceparent: " + sent + b"\r\n" in head
    assert b"x-other: 1\r\n" in head
    # The waits end when the slot was taken, where the replica's time begins.
    assert root.start_time == spans["swell.queue_wait"].start_time == spans["swell.cold_start_wait"].start_time
    assert spans["swell.queue_wait"].end_time == spans["swell.replica"].start_time
    assert spans["swell.cold_start_wait"].end_time <= spans["swell.queue_wait"].end_time  # type: ignore[operator]
    assert spans["swell.replica"].attributes == {"swell.replica_id": "r-a", "http.response.status_code": 200}
    assert root.attributes is not None and root.attributes["swell.deployment_id"] == "dep1"


async def test_a_warm_predict_has_no_cold_start_span_and_a_new_trace_without_a_caller_traceparent() -> None:
    exporter, server, replica_side = _memory()
    router = _router(RequestTracing(server))
    replica = Replica(id="r-a", deployment_id="dep1", state=ReplicaState.READY, address="unix:/nowhere/a.sock")
    handle = router.add(replica)
    router.ready(handle)
    handle.pool = ReplicaInProcess(ReplicaTracing(replica_side), trace.NoOpTracer())  # type: ignore[assignment]
    await router.serve([], b"{}", Recorder(), None)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"swell.request", "swell.queue_wait", "swell.replica", "swell.model"}
    assert spans["swell.request"].parent is None
    assert len({s.context.trace_id for s in spans.values()}) == 1


class Untraced:
    """A pool that keeps the heads it is sent (and answers at once)."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []

    async def request(self, head: bytes, body: bytes) -> Answer:
        self.heads.append(head)
        return Answer(b"{}")

    def close(self) -> None:
        pass


async def test_without_tracing_the_head_is_the_callers_and_no_span_is_made(monkeypatch: Any) -> None:
    def no_spans(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a span was made with tracing off")

    monkeypatch.setattr(RequestTracing, "serve", no_spans)
    monkeypatch.setattr(ReplicaTracing, "traced", no_spans)
    router = _router(None)
    handle = router.add(Replica(id="r-a", deployment_id="dep1", state=ReplicaState.READY, address="unix:/x"))
    router.ready(handle)
    pool = handle.pool = Untraced()  # type: ignore[assignment]
    send = Recorder()
    await router.serve([CALLER], b"{}", send, None)
    assert send.status == 200
    assert pool.heads == [router.request_head([CALLER], 2)]  # the caller's traceparent, passed on as before


def test_with_tracing_off_the_server_and_the_replica_import_no_span_machinery() -> None:
    """What ``swell serve`` and a replica import when tracing is off: no SDK, no exporter, neither
    tracing module (fastapi itself imports the bare opentelemetry API, which makes no span)."""
    import subprocess
    import sys

    code = (
        "import sys, swell.server, swell.cli, swell.modelserver._server, swell.modelserver._app\n"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter',"
        " 'swell.serving._tracing', 'swell.modelserver.tracing'))]\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
