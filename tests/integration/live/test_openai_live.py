"""Baseten's pass-through routes against a real ``swell serve``: the ``openai`` Python client,
pointed at ``…/sync/v1`` with the workspace key as its (Bearer) API key, gets a chat
completion, a streamed one and embeddings from a pushed Truss model's OpenAI-compatible
methods; the routes go through the same queue, wake-from-zero, auth and limits as predict."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from openai import AuthenticationError, OpenAI
from swell_live import KEY, Swell  # type: ignore[import-not-found]

# As a Truss user writes an OpenAI-compatible model (Truss calls the methods by route).
OPENAI_MODEL = '''
import json
import time

from fastapi.responses import StreamingResponse


class Model:
    def __init__(self, **kwargs):
        pass

    def predict(self, model_input):
        return {"predict": model_input}

    async def chat_completions(self, inputs):
        text = " ".join(m["content"] for m in inputs["messages"])
        if inputs.get("stream"):
            async def events():
                for word in text.split():
                    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": int(time.time()),
                             "model": inputs["model"],
                             "choices": [{"index": 0, "delta": {"content": word.upper()}, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\\n\\n"
                yield "data: [DONE]\\n\\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        return {"id": "c1", "object": "chat.completion", "created": int(time.time()), "model": inputs["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text.upper()}}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}}

    def embeddings(self, inputs):
        texts = inputs["input"] if isinstance(inputs["input"], list) else [inputs["input"]]
        return {"object": "list", "model": inputs["model"],
                "data": [{"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0]}
                         for i, t in enumerate(texts)],
                "usage": {"prompt_tokens": 1, "total_tokens": 1}}
'''


@pytest.fixture(scope="module")
def pushed(swell: Swell, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("openai-model")
    (root / "model").mkdir()
    (root / "model" / "model.py").write_text(OPENAI_MODEL)
    (root / "config.yaml").write_text("model_name: OpenAI compatible\nruntime: {predict_concurrency: 4}\n")
    return swell.push(root, name="openai-compat", publish=True, promote=True)


def _client(swell: Swell, base: str, key: str = KEY) -> OpenAI:
    return OpenAI(base_url=f"{swell.url}{base}/sync/v1", api_key=key, max_retries=0, timeout=60)


def test_openai_client_chat_streamed_chat_and_embeddings(swell: Swell, pushed: dict) -> None:
    client = _client(swell, f"/model/{pushed['model_id']}/environments/production")
    chat = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello there"}])
    assert chat.choices[0].message.content == "HELLO THERE"
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "one two three"}], stream=True)
    words = [chunk.choices[0].delta.content for chunk in stream]
    assert words == ["ONE", "TWO", "THREE"]
    embeddings = client.embeddings.create(model="m", input=["ab", "abcd"])
    assert [e.embedding for e in embeddings.data] == [[2.0, 1.0], [4.0, 1.0]]


def test_every_pass_through_route_shape_and_auth(swell: Swell, pushed: dict) -> None:
    model, deployment = pushed["model_id"], pushed["deployment_id"]
    client = _client(swell, f"/model/{model}/deployment/{deployment}")
    assert client.embeddings.create(model="m", input="abc").data[0].embedding == [3.0, 1.0]
    with pytest.raises(AuthenticationError):
        _client(swell, f"/model/{model}/deployment/{deployment}", key="wrong").embeddings.create(model="m", input="x")
    body = {"model": "m", "input": "ab"}
    for auth in (f"Api-Key {KEY}", f"Bearer {KEY}"):
        answer = httpx.post(f"{swell.url}/model/{model}/environments/production/sync/v1/embeddings",
                            json=body, headers={"Authorization": auth}, timeout=60)
        assert answer.status_code == 200 and answer.json()["data"][0]["embedding"] == [2.0, 1.0], answer.text
    # The predict route is unchanged beside them; an unknown replica route is the replica's 404.
    predict = swell.http.post(f"/model/{model}/environments/production/predict", json={"x": 1})
    assert predict.json() == {"predict": {"x": 1}}
    missing = swell.http.post(f"/model/{model}/environments/production/sync/v1/nothing", json={})
    assert missing.status_code == 404
    no_path = swell.http.post(f"/model/{model}/environments/production/sync", json={})
    assert no_path.status_code == 404 and "sync/PATH" in no_path.json()["reason"]


def test_a_pass_through_wakes_a_deployment_from_zero(swell: Swell, make_model: Callable[..., Path]) -> None:
    root = make_model(OPENAI_MODEL, {"runtime": {"predict_concurrency": 1}})
    cold = swell.push(root, name="openai-dev", publish=False)  # development: min_replica 0
    client = _client(swell, f"/model/{cold['model_id']}/development")
    chat = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "wake up"}])
    assert chat.choices[0].message.content == "WAKE UP"
