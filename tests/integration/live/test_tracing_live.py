"""Traces over OTLP/HTTP from a real ``swell serve --otlp-endpoint`` and its replica, into a
collector stub on 127.0.0.1 that decodes what it is sent (protobuf on ``/v1/traces``): one
predict from a caller with a traceparent is one trace, caller → server → replica → model code."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from swell_live import Swell, start_server, stop_server  # type: ignore[import-not-found]

pytestmark = [pytest.mark.timeout(120)]

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"

# Model code as a Truss user writes it: its own provider, its exporter configured by the
# environment (OTEL_EXPORTER_OTLP_ENDPOINT, which the server sets for its replicas).
TRACED = """
import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


class Model:
    def load(self):
        provider = TracerProvider(resource=Resource.create({"service.name": "user-model"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
        self._tracer = provider.get_tracer("user")

    def predict(self, model_input):
        with self._tracer.start_as_current_span("model code"):
            return {"traced": "swell.modelserver.tracing" in sys.modules}
"""


class Collector:
    """Spans received, by name: (service, trace id, span id, parent span id), as hex."""

    def __init__(self) -> None:
        self.spans: dict[str, tuple[str, str, str, str]] = {}
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest.FromString(body)
                with collector.lock:
                    for resource_spans in request.resource_spans:
                        attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                        for scope_spans in resource_spans.scope_spans:
                            for span in scope_spans.spans:
                                collector.spans[span.name] = (
                                    attrs.get("service.name", ""), span.trace_id.hex(), span.span_id.hex(),
                                    span.parent_span_id.hex(),
                                )
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, names: set[str], timeout: float = 30) -> dict[str, tuple[str, str, str, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if names <= self.spans.keys():
                    return dict(self.spans)
            time.sleep(0.1)
        pytest.fail(f"spans received: {sorted(self.spans)}; wanted {sorted(names)}")


@pytest.fixture
def collector() -> Iterator[Collector]:
    stub = Collector()
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


@pytest.fixture
def traced_swell(tmp_path: Path, collector: Collector, monkeypatch: pytest.MonkeyPatch) -> Iterator[Swell]:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # batches go every 0.1 s, not 5 s
    process, server = start_server(tmp_path, "--otlp-endpoint", collector.url)
    try:
        yield server
    finally:
        stop_server(process, server)


def test_one_predict_is_one_trace_from_the_caller_through_the_replica_to_the_model(
    traced_swell: Swell, collector: Collector, make_model: Callable[..., Path]
) -> None:
    pushed = traced_swell.push(make_model(TRACED), name="traced")
    answer = traced_swell.http.post(
        traced_swell.predict_path(pushed), json={}, headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"traced": True}
    spans = collector.wait_for(
        {"swell.request", "swell.queue_wait", "swell.cold_start_wait", "swell.replica", "swell.model", "model code"}
    )
    assert {trace_id for _, trace_id, _, _ in spans.values()} == {CALLER_TRACE}
    service = {name: span[0] for name, span in spans.items()}
    assert service["swell.request"] == service["swell.replica"] == "swell"
    assert service["swell.model"] == "swell-replica" and service["model code"] == "user-model"
    span_id = {name: span[2] for name, span in spans.items()}
    parent = {name: span[3] for name, span in spans.items()}
    assert parent["swell.request"] == CALLER_SPAN
    assert parent["swell.queue_wait"] == parent["swell.cold_start_wait"] == parent["swell.replica"] == span_id["swell.request"]
    assert parent["swell.model"] == span_id["swell.replica"]
    assert parent["model code"] == span_id["swell.model"]
