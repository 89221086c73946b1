"""The predict chain over real HTTP against a real replica process (TRUSS_CONTRACT.md §5-12)."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import decimal
import itertools
import json
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import pytest
import yaml

from swell.modelserver._codec import decode_msgpack, encode_msgpack
from swell.modelserver._testing import ReplicaProcess

KITCHEN = '''
import numpy as np
import starlette.exceptions
from fastapi import HTTPException
from starlette.requests import Request
from starlette.responses import Response


class Model:
    def __init__(self):
        self.calls = 0

    def predict(self, model_input, request: Request):
        self.calls += 1
        kind = model_input.get("kind") if isinstance(model_input, dict) else None
        if kind == "raise":
            raise ValueError("secret detail")
        if kind == "http":
            raise HTTPException(status_code=422, detail="bad thing")
        if kind == "starlette_http":
            raise starlette.exceptions.HTTPException(status_code=418)
        if kind == "response":
            return Response(content=b"raw", media_type="text/plain", status_code=201)
        if kind == "error_response":
            return Response(content=b"nope", status_code=409)
        if kind == "numpy":
            return {"a": np.arange(3), "f": np.float32(0.5), "i": np.int64(7)}
        if kind == "unserialisable":
            return {"x": object()}
        if kind == "stream":
            return (f"tok{i} " for i in range(3))
        if kind == "headers":
            return {"x": request.headers.get("x-test"), "path": request.url.path}
        if kind == "nan":
            return {"v": float("nan")}
        if kind == "stream_error":
            return self._broken_stream()
        return {"input": model_input, "calls": self.calls}

    def _broken_stream(self):
        yield b"tok0 "
        raise RuntimeError("mid-stream")

    async def chat_completions(self, inputs):
        return {"chat": inputs}
'''


def _write(root: Path, model: str, config: dict) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text(textwrap.dedent(model))
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root


@pytest.fixture(scope="module")
def kitchen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    root = _write(tmp_path_factory.mktemp("kitchen"), KITCHEN, {"model_name": "kitchen"})
    with ReplicaProcess(root) as replica:
        replica.wait_ready()
        with replica.client() as client:
            yield client


@pytest.mark.parametrize("value", [{"a": [1, 2]}, [1, "x"], "text", 3, None])
def test_any_json_value_is_the_model_input(kitchen: httpx.Client, value: object) -> None:
    r = kitchen.post("/v1/models/anything:predict", content=json.dumps(value))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json()["input"] == value


def test_success_body_uses_json_dumps_default_separators(kitchen: httpx.Client) -> None:
    r = kitchen.post("/v1/models/model:predict", content=b"[1,2]")
    assert r.text.startswith('{"input": [1, 2], "calls": ')


@pytest.mark.parametrize("path", ["/v1/models/m:predict_binary", "/invocations"])
def test_aliases_serve_the_same_chain(kitchen: httpx.Client, path: str) -> None:
    assert kitchen.post(path, json={"a": 1}).json()["input"] == {"a": 1}


def test_invalid_json_is_400_with_baseten_headers(kitchen: httpx.Client) -> None:
    r = kitchen.post("/v1/models/m:predict", content=b"{bad")
    assert r.status_code == 400
    assert r.text == ('{"error":"Invalid JSON payload: Expecting property name enclosed in double '
                      'quotes: line 1 column 2 (char 1)"}')
    assert r.headers["x-baseten-error-source"] == "04"
    assert r.headers["x-baseten-error-code"] == "700"


def test_model_exception_is_500_hidden_and_the_instance_keeps_serving(kitchen: httpx.Client) -> None:
    r = kitchen.post("/v1/models/m:predict", json={"kind": "raise"})
    assert r.status_code == 500
    assert r.text == '{"error":"Internal Server Error (in model/chainlet)."}'
    assert r.headers["x-baseten-error-code"] == "600"
    first = kitchen.post("/v1/models/m:predict", json=1).json()["calls"]
    assert kitchen.post("/v1/models/m:predict", json=1).json()["calls"] == first + 1


def test_fastapi_http_exception_passes_through(kitchen: httpx.Client) -> None:
    r = kitchen.post("/v1/models/m:predict", json={"kind": "http"})
    assert (r.status_code, r.json()) == (422, {"error": "bad thing"})
    assert r.headers["x-baseten-error-code"] == "600"


def test_plain_starlette_http_exception_is_a_500(kitchen: httpx.Client) -> None:
    r = kitchen.post("/v1/models/m:predict", json={"kind": "starlette_http"})
    assert r.status_code == 500


def test_response_passthrough(kitchen: httpx.Client) -> None:
    r = kitchen.post("/v1/models/m:predict", json={"kind": "response"})
    assert (r.status_code, r.content, r.headers["content-type"]) == (201, b"raw", "text/plain; charset=utf-8")
    assert "x-baseten-error-code" not in r.headers
    r = kitchen.post("/v1/models/m:predict", json={"kind": "error_response"})
    assert (r.status_code, r.content, r.headers["x-baseten-error-code"]) == (409, b"nope", "700")


def test_numpy_results_are_converted_and_nan_is_bare(kitchen: httpx.Client) -> None:
    assert kitchen.post("/v1/models/m:predict", json={"kind": "numpy"}).json() == {"a": [0, 1, 2], "f": 0.5, "i": 7}
    assert kitchen.post("/v1/models/m:predict", json={"kind": "nan"}).text == '{"v": NaN}'


def test_unserialisable_result_is_unhandled_500(kitchen: httpx.Client) -> None:
    r = kitchen.post("/v1/models/m:predict", json={"kind": "unserialisable"})
    assert r.status_code == 500
    assert r.json() == {"error": "Unhandled exception: TypeError: Object of type object is not JSON serializable"}
    assert r.headers["x-baseten-error-code"] == "500"


def test_request_annotated_argument_gets_the_starlette_request(kitchen: httpx.Client) -> None:
    r = kitchen.post("/v1/models/m:predict", json={"kind": "headers"}, headers={"x-test": "hi"})
    assert r.json() == {"x": "hi", "path": "/v1/models/m:predict"}


def test_returned_generator_streams_and_accept_json_gathers(kitchen: httpx.Client) -> None:
    with kitchen.stream("POST", "/v1/models/m:predict", json={"kind": "stream"}) as r:
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers.get("transfer-encoding") == "chunked"
        assert b"".join(r.iter_raw()) == b"tok0 tok1 tok2 "
    r = kitchen.post("/v1/models/m:predict", json={"kind": "stream"}, headers={"accept": "application/json"})
    assert r.json() == "tok0 tok1 tok2 "


def test_exception_mid_stream_ends_the_stream_with_200(kitchen: httpx.Client) -> None:
    r = kitchen.post("/v1/models/m:predict", json={"kind": "stream_error"})
    assert (r.status_code, r.content) == (200, b"tok0 ")
    assert kitchen.post("/v1/models/m:predict", json=1).status_code == 200


def test_openai_style_route_calls_the_method_directly(kitchen: httpx.Client) -> None:
    assert kitchen.post("/v1/chat/completions", json={"m": 1}).json() == {"chat": {"m": 1}}


def test_msgpack_in_and_out(kitchen: httpx.Client) -> None:
    value = {"when": dt.datetime(2024, 1, 2, 3, 4, 5), "d": decimal.Decimal("1.5"),
             "u": uuid.UUID(int=7), "dur": dt.timedelta(seconds=3), "raw": b"\x00\x01"}
    r = kitchen.post("/v1/models/m:predict", content=encode_msgpack(value),
                     headers={"content-type": "application/octet-stream; charset=x"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert decode_msgpack(r.content)["input"] == value


def test_bad_msgpack_is_400(kitchen: httpx.Client) -> None:
    r = kitchen.post("/v1/models/m:predict", content=msgpack.packb(1) + b"\xc1",
                     headers={"content-type": "application/octet-stream"})
    assert r.status_code == 400
    assert r.headers["x-baseten-error-code"] == "700"


def test_health_and_unknown_routes(kitchen: httpx.Client) -> None:
    assert kitchen.get("/").json() is True
    assert (kitchen.get("/v1/models/any").status_code, kitchen.get("/v1/models/any").json()) == (200, {})
    assert kitchen.get("/v1/models/any/loaded").json() == {}
    assert kitchen.get("/ping").json() == {}
    assert kitchen.get("/health/live").status_code == 200
    assert kitchen.get("/health/ready").json() == {"status": "ready"}
    assert kitchen.get("/nope").status_code == 404
    assert kitchen.get("/v1/models/m:predict").status_code == 405
    r = kitchen.post("/v1/embeddings", json={})
    assert r.status_code == 404 and r.headers["x-baseten-error-code"] == "700"


CHAIN = '''
import threading


class Model:
    async def preprocess(self, model_input):
        return {"n": model_input["n"] + 1, "pre_thread": threading.current_thread().name}

    def predict(self, model_input):
        # Not JSON-serialisable: values pass between steps as plain objects.
        return {"n": model_input["n"] * 10, "seen": {model_input["pre_thread"]},
                "predict_thread": threading.current_thread().name}

    async def postprocess(self, result):
        return {"n": result["n"], "pre_thread": result["seen"].pop(),
                "predict_thread": result["predict_thread"], "post_thread": threading.current_thread().name}
'''


def test_pre_predict_post_chain_mixes_sync_and_async(make_package, replica) -> None:
    r = replica(make_package(CHAIN))
    r.wait_ready()
    with r.client() as client:
        body = client.post("/v1/models/m:predict", json={"n": 1}).json()
    assert body["n"] == 20
    assert body["pre_thread"] == body["post_thread"] == "MainThread"  # async: awaited on the loop
    assert body["predict_thread"] != "MainThread"  # sync: in a worker thread


CONCURRENCY = '''
import asyncio
import threading
import time

PARALLEL = 4
lock = threading.Lock()
barrier = threading.Barrier(PARALLEL, timeout=10)
state = {"active": 0, "max": 0, "spans": []}


def enter():
    with lock:
        state["active"] += 1
        state["max"] = max(state["max"], state["active"])
        return time.monotonic()


def leave(start):
    with lock:
        state["active"] -= 1
        state["spans"].append((start, time.monotonic()))
        return {"max_active": state["max"], "spans": list(state["spans"])}


class Model:
    def preprocess(self, model_input):
        # Outside the semaphore: all PARALLEL requests must be in here at once.
        barrier.wait()
        return model_input

    {predict}
'''

SYNC_PREDICT = '''def predict(self, model_input):
        start = enter()
        time.sleep(0.05)
        return leave(start)'''

ASYNC_PREDICT = '''async def predict(self, model_input):
        start = enter()
        deadline = time.monotonic() + 5
        while state["active"] < 2 and time.monotonic() < deadline:  # wait for a partner
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.02)
        return leave(start)'''


def _parallel_predicts(client: httpx.Client, n: int) -> list[dict]:
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(client.post, "/v1/models/m:predict", json={"i": i}) for i in range(n)]
        responses = [f.result(timeout=30) for f in futures]
    assert [r.status_code for r in responses] == [200] * n, [r.text for r in responses]
    return [r.json() for r in responses]


def test_predict_concurrency_1_serialises_predict_but_not_preprocess(make_package, replica) -> None:
    model = CONCURRENCY.replace("{predict}", SYNC_PREDICT)
    r = replica(make_package(model, {"runtime": {"predict_concurrency": 1}}))
    r.wait_ready()
    with r.client() as client:
        bodies = _parallel_predicts(client, 4)
    final = max(bodies, key=lambda b: len(b["spans"]))
    spans = sorted(final["spans"])
    assert len(spans) == 4 and final["max_active"] == 1
    assert all(prev_end <= next_start for (_, prev_end), (next_start, _) in itertools.pairwise(spans))


def test_predict_concurrency_2_lets_exactly_two_async_predicts_overlap(make_package, replica) -> None:
    model = CONCURRENCY.replace("{predict}", ASYNC_PREDICT)
    r = replica(make_package(model, {"runtime": {"predict_concurrency": 2}}))
    r.wait_ready()
    with r.client() as client:
        bodies = _parallel_predicts(client, 4)
    assert max(b["max_active"] for b in bodies) == 2


STREAM = '''
import asyncio


class Model:
    async def predict(self, model_input):
        for i in range(model_input["n"]):
            yield f"tok{i} "
            await asyncio.sleep(0.01)
'''


def test_async_generator_streams_chunk_by_chunk(make_package, replica) -> None:
    r = replica(make_package(STREAM))
    r.wait_ready()
    with r.client() as client, client.stream("POST", "/v1/models/m:predict", json={"n": 5}) as resp:
        chunks = [c for c in resp.iter_raw() if c]
    assert b"".join(chunks) == b"tok0 tok1 tok2 tok3 tok4 "
    assert len(chunks) > 1
    json.dumps(chunks[0].decode())  # text chunks


RAW_REQUEST = '''
from pathlib import Path

from starlette.requests import Request


class Model:
    async def predict(self, request: Request):
        body = await request.body()  # not parsed by the server: any bytes are fine
        return {"length": len(body), "content_type": request.headers.get("content-type")}

    def is_healthy(self):
        return False if Path("unhealthy").exists() else None
'''


def test_request_only_predict_reads_the_raw_body_and_is_healthy_gates_readiness(make_package, replica) -> None:
    package = make_package(RAW_REQUEST)
    r = replica(package)
    r.wait_ready()
    with r.client() as client:
        resp = client.post("/v1/models/m:predict", content=b"{not json", headers={"content-type": "text/plain"})
        assert resp.json() == {"length": 9, "content_type": "text/plain"}
        assert client.get("/v1/models/m").status_code == 200  # None: the load status decides
        (package / "unhealthy").touch()
        assert client.get("/v1/models/m").status_code == 503
        assert client.get("/v1/models/m/loaded").status_code == 200  # ignores is_healthy
        assert client.post("/v1/models/m:predict", content=b"x").status_code == 200  # so does predict


PYDANTIC = '''
import pydantic


class In(pydantic.BaseModel):
    a: int
    tags: list[str] = []


class Out(pydantic.BaseModel):
    doubled: int


class Model:
    def predict(self, model_input: In) -> Out:
        assert isinstance(model_input, In)
        return Out(doubled=model_input.a * 2)
'''


def test_pydantic_input_is_validated_and_output_serialised(make_package, replica) -> None:
    r = replica(make_package(PYDANTIC))
    r.wait_ready()
    with r.client() as client:
        assert client.post("/v1/models/m:predict", json={"a": 2}).json() == {"doubled": 4}
        bad = client.post("/v1/models/m:predict", json={"a": "x"})
        assert bad.status_code == 400
        assert bad.json()["error"].startswith("Input Parsing Error:\n  `a`: ")
        packed = client.post("/v1/models/m:predict", content=encode_msgpack({"a": 5}),
                             headers={"content-type": "application/octet-stream"})
        assert decode_msgpack(packed.content) == {"doubled": 10}
        schema = client.get("/v1/models/m/schema").json()
        assert schema["input_schema"]["properties"]["a"]["type"] == "integer"
        assert schema["output_schema"]["properties"]["doubled"]["type"] == "integer"


SCHEMA_MODEL = """
from typing import Generator, Union

from pydantic import BaseModel


class In(BaseModel):
    input: str
    stream: bool


class Out(BaseModel):
    output: str


class Model:
    def predict(self, request: In) -> Union[Out, Generator[str, None, None]]:
        if request.stream:
            return (token for token in ["a", "b"])
        return Out(output=request.input)
"""


def test_schema_is_truss_schema_for_a_model_that_may_stream(make_package, replica) -> None:
    # Modelled on Truss's streaming-or-object LLM packages (test_schema.py's union case).
    r = replica(make_package(SCHEMA_MODEL))
    r.wait_ready()
    with r.client() as client:
        schema = client.get("/v1/models/model/schema").json()
        assert schema["input_schema"]["title"] == "In" and schema["output_schema"]["title"] == "Out"
        assert schema["supports_streaming"] is True
        assert client.post("/v1/models/model:predict", json={"input": "q", "stream": True}).content == b"ab"


def test_no_schema_is_truss_error_body(make_package, replica) -> None:
    r = replica(make_package("class Model:\n    def predict(self, x):\n        return x\n"))
    r.wait_ready()
    with r.client() as client:
        answer = client.get("/v1/models/model/schema")
    assert (answer.status_code, answer.json()) == (404, {"error": "No schema found"})
    assert answer.headers["x-baseten-error-code"] == "600"
