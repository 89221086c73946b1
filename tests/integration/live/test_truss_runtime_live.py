"""What Truss's server image lets model code import undeclared (TRUSS_CONTRACT.md §17), through a
real ``swell serve``: Truss's own tracing test package loads and streams, and a package with
``requirements:`` (its own virtual environment) still imports Truss's server packages beside
what it declared."""

from __future__ import annotations

from pathlib import Path

import pytest
from swell_live import Swell, package_archive  # type: ignore[import-not-found]

# truss/tests/test_data/test_streaming_truss_with_tracing/model/model.py, as its authors wrote it.
TRUSS_TRACING_MODEL = '''
import json
import pathlib
import time
from typing import Any, Generator, Sequence

import opentelemetry.sdk.resources as resources
import opentelemetry.sdk.trace as sdk_trace
import opentelemetry.sdk.trace.export as trace_export
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


class JSONFileExporter(trace_export.SpanExporter):
    # Copied form truss/templates/server/_truss_common/tracing.py.

    def __init__(self, file_path: pathlib.Path):
        self._file = file_path.open("a")

    def export(
        self, spans: Sequence[sdk_trace.ReadableSpan]
    ) -> trace_export.SpanExportResult:
        for span in spans:
            # Get rid of newlines and whitespace.
            self._file.write(json.dumps(json.loads(span.to_json())))
            self._file.write("\\n")
        self._file.flush()
        return trace_export.SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._file.close()


trace.set_tracer_provider(
    TracerProvider(resource=Resource.create({resources.SERVICE_NAME: "UserModel"}))
)
tracer = trace.get_tracer(__name__)
file_exporter = JSONFileExporter(pathlib.Path("/tmp/otel_user_traces.ndjson"))
span_processor = SimpleSpanProcessor(file_exporter)
trace.get_tracer_provider().add_span_processor(span_processor)


class Model:
    def __init__(self, **kwargs) -> None:
        self._data_dir = kwargs["data_dir"]
        self._config = kwargs["config"]
        self._secrets = kwargs["secrets"]
        self._model = None

    @tracer.start_as_current_span("load_model")
    def load(self):
        pass

    @tracer.start_as_current_span("predict")
    def predict(self, model_input: Any) -> Generator[str, None, None]:
        with tracer.start_as_current_span("start-predict") as span:

            def inner():
                time.sleep(0.02)
                for i in range(5):
                    span.add_event("yield")
                    yield str(i)

            return inner()
'''

TRUSS_TRACING_CONFIG = """\
apply_library_patches: true
base_image: null
build:
  arguments: {}
  model_server: TrussServer
  secret_to_path_mapping: {}
build_commands: []
bundled_packages_dir: packages
cache_internal: []
data_dir: data
description: null
docker_server: null
environment_variables:
  OTEL_TRACING_NDJSON_FILE: /tmp/otel_traces.ndjson
examples_filename: examples.yaml
external_data: null
external_package_dirs: []
input_type: Any
live_reload: false
model_cache: []
model_class_filename: model.py
model_class_name: Model
model_framework: custom
model_metadata: {}
model_module_dir: model
model_name: Test Streaming
model_type: Model
requirements: []
requirements_file: null
resources:
  accelerator: null
  cpu: "1"
  memory: 2Gi
  use_gpu: false
runtime:
  enable_debug_logs: false
  enable_tracing_data: false
  health_checks:
    restart_check_delay_seconds: null
    restart_threshold_seconds: null
    stop_traffic_threshold_seconds: null
  predict_concurrency: 1
  streaming_read_timeout: 60
  transport:
    kind: websocket
  truss_server_version_override: null
secrets: {}
spec_version: "2.0"
system_packages: []
use_local_src: false
"""

# Declares joblib only; the rest is what Truss's image (and Swell's replicas) offer undeclared.
DECLARED_AND_UNDECLARED = '''
import joblib
import msgpack
import numpy as np
import requests
import yaml
from fastapi import HTTPException
from loguru import logger
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Counter


class Model:
    def __init__(self, **kwargs):
        self._counter = Counter("calls", "calls", registry=CollectorRegistry())

    def load(self):
        self._memory = joblib.Memory(location=None)
        logger.info("loaded with requests {}", requests.__version__)

    def predict(self, model_input):
        if "x" not in model_input:
            raise HTTPException(status_code=400, detail="x is required")
        self._counter.inc()
        provider = TracerProvider()
        with provider.get_tracer("m").start_as_current_span("predict"):
            total = float(np.sum(model_input["x"]))
        return {"sum": total, "joblib": joblib.__file__, "yaml": yaml.safe_dump({"a": 1}).strip(),
                "msgpack": len(msgpack.packb(model_input))}
'''


def test_truss_tracing_package_loads_and_streams(swell: Swell, tmp_path: Path) -> None:
    root = tmp_path / "tracing"
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text(TRUSS_TRACING_MODEL)
    (root / "config.yaml").write_text(TRUSS_TRACING_CONFIG)
    pushed = swell.push(root)
    assert pushed["model_name"] == "Test Streaming"
    with swell.http.stream("POST", swell.predict_path(pushed), json={}, timeout=120) as answer:
        assert answer.status_code == 200, answer.read()
        assert "".join(answer.iter_text()) == "01234"


@pytest.mark.slow
def test_a_package_with_its_own_requirements_still_imports_truss_server_packages(
    swell: Swell, tmp_path: Path
) -> None:
    root = tmp_path / "declared"
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text(DECLARED_AND_UNDECLARED)
    (root / "config.yaml").write_text("model_name: Declared And Not\nrequirements:\n  - joblib\n")
    # The push builds the venv (pip, from the package index): slow on a busy machine.
    push = swell.http.post("/v1/models/push", params={"publish": "true", "model_name": "declared-and-not"},
                           content=package_archive(root), timeout=600)
    assert push.status_code == 201, push.text
    pushed = push.json()
    answer = swell.http.post(swell.predict_path(pushed), json={"x": [1, 2, 3.5]}, timeout=120)
    assert answer.status_code == 200, f"{answer.text}\n{swell.tail()}"
    body = answer.json()
    assert body["sum"] == 6.5 and body["yaml"] == "a: 1" and body["msgpack"] > 0
    assert "/envs/" in body["joblib"]  # from the package's own environment, the rest from Swell's
    refused = swell.http.post(swell.predict_path(pushed), json={}, timeout=60)
    assert refused.status_code == 400 and "x is required" in refused.text
