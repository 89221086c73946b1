"""Packages written for Truss import what Truss's server image ships without declaring it
(TRUSS_CONTRACT.md §17): OpenTelemetry, requests, loguru, prometheus-client load as they do
there; a package that imports something the replica lacks fails its load with a last line
that names the module and says to declare it in ``requirements:``."""

from __future__ import annotations

import importlib.util

import pytest

# As a Truss user writes it: tracing with the OpenTelemetry SDK, a Prometheus counter and
# loguru, none of them in config.yaml's requirements.
TRACED = '''
import requests
from loguru import logger
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, Counter, generate_latest


class Model:
    def __init__(self, **kwargs):
        self._exporter = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": "traced"}))
        provider.add_span_processor(SimpleSpanProcessor(self._exporter))
        self._tracer = provider.get_tracer(__name__)
        self._registry = CollectorRegistry()
        self._predictions = Counter("predictions", "predict calls", registry=self._registry)

    def load(self):
        self._session = requests.Session()
        logger.info("loaded")

    def predict(self, model_input):
        with self._tracer.start_as_current_span("predict") as span:
            span.set_attribute("n", model_input["n"])
            self._predictions.inc()
        return {
            "spans": [s.name for s in self._exporter.get_finished_spans()],
            "attributes": dict(self._exporter.get_finished_spans()[-1].attributes),
            "metrics": "predictions_total 1.0" in generate_latest(self._registry).decode(),
        }
'''


def test_a_package_importing_opentelemetry_sdk_loads_and_traces(make_package, replica) -> None:
    r = replica(make_package(TRACED, {"model_name": "traced"}))
    r.wait_ready()
    with r.client() as client:
        answer = client.post("/v1/models/traced:predict", json={"n": 3})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"spans": ["predict"], "attributes": {"n": 3}, "metrics": True}


def test_a_missing_import_names_the_module_and_says_to_declare_it(make_package, replica) -> None:
    model = "import swell_test_not_installed_pkg\n\n\nclass Model:\n    def predict(self, x):\n        return x\n"
    r = replica(make_package(model), env={"NUM_LOAD_RETRIES_TRUSS": "0"})
    error = r.wait_event("failed")["error"]
    last = error.strip().splitlines()[-1]
    assert "'swell_test_not_installed_pkg'" in last and "requirements:" in last, error
    assert r.wait() != 0


def test_a_truss_server_package_the_replica_lacks_is_named_with_its_requirement(make_package, replica) -> None:
    if importlib.util.find_spec("aiohttp") is not None:
        pytest.skip("aiohttp is installed here (swell[truss-runtime]); the hint is for when it is not")
    model = "import aiohttp\n\n\nclass Model:\n    def predict(self, x):\n        return x\n"
    r = replica(make_package(model), env={"NUM_LOAD_RETRIES_TRUSS": "0"})
    last = r.wait_event("failed")["error"].strip().splitlines()[-1]
    assert "'aiohttp'" in last and "Truss's server image ships" in last
    assert "- aiohttp" in last and "pip install 'swell[truss-runtime]'" in last
    assert r.wait() != 0


def test_a_sibling_module_imported_by_its_own_name_fails_as_in_truss_saying_how_to_import_it(make_package, replica) -> None:
    model = "import helpers\n\n\nclass Model:\n    def predict(self, x):\n        return helpers.VALUE\n"
    r = replica(make_package(model, files={"model/helpers.py": "VALUE = 1\n"}), env={"NUM_LOAD_RETRIES_TRUSS": "0"})
    last = r.wait_event("failed")["error"].strip().splitlines()[-1]
    assert "`from model import helpers`" in last, last
    assert r.wait() != 0


def test_python3_and_console_scripts_in_load_are_the_replicas_own(make_package, replica) -> None:
    # Modelled on truss-examples' vLLM packages: load() runs `python3 -m vllm.entrypoints...` or
    # `vllm serve`, which in Truss's image are the Python its requirements went into.
    model = '''
import os
import shutil
import subprocess
import sys


class Model:
    def load(self):
        out = subprocess.check_output(["python3", "-c", "import sys; print(sys.prefix)"], text=True)
        self.child_prefix = out.strip()

    def predict(self, model_input):
        return {"child_prefix": self.child_prefix, "prefix": sys.prefix,
                "first_on_path": os.environ["PATH"].split(os.pathsep)[0], "bin": os.path.dirname(sys.executable)}
'''
    # A PATH whose python3, if any, is the machine's: as a server started without activating its venv.
    r = replica(make_package(model), env={"PATH": "/usr/bin:/bin"})
    r.wait_ready()
    with r.client() as client:
        body = client.post("/v1/models/test:predict", json={}).json()
    assert body["child_prefix"] == body["prefix"]
    assert body["first_on_path"] == body["bin"]
