"""Async predict against a real server and real replicas: accepted, kept, run, reported,
signed webhooks, cancel, expiry, retries, and the errors a caller gets for bad input."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from swell_live import KEY, SLEEPY, Swell  # type: ignore[import-not-found]
from webhook_receiver import WebhookReceiver  # type: ignore[import-not-found]

from swell.control._webhooks import SIGNATURE_HEADER, verify

FLAKY = '''
from pathlib import Path


class Model:
    def __init__(self, **kwargs):
        self.count = Path(kwargs["data_dir"]) / "tries"

    def predict(self, model_input):
        tries = int(self.count.read_text()) if self.count.exists() else 0
        self.count.write_text(str(tries + 1))
        if tries < model_input["fail_times"]:
            raise RuntimeError(f"try {tries + 1} fails")
        return {"tries": tries + 1}
'''


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    try:
        yield r
    finally:
        r.close()


def async_path(pushed: dict[str, Any]) -> str:
    return f"/model/{pushed['model_id']}/deployment/{pushed['deployment_id']}/async_predict"


def wait_status(swell: Swell, request_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = swell.http.get(f"/async_request/{request_id}").json()
        if view["status"] in statuses:
            return dict(view)
        if time.monotonic() > deadline:
            pytest.fail(f"request {request_id} stayed {view['status']}: {view}\n{swell.tail()}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def sleepy(swell: Swell, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("sleepy")
    (root / "model").mkdir()
    (root / "model" / "model.py").write_text(SLEEPY)
    (root / "config.yaml").write_text("runtime:\n  predict_concurrency: 1\n")
    return swell.push(root, name="async-sleepy")


def test_async_request_runs_and_its_webhook_is_signed(
    swell: Swell, sleepy: dict[str, Any], receiver: WebhookReceiver
) -> None:
    answer = swell.http.post(
        async_path(sleepy), json={"model_input": {"i": 7}, "webhook_endpoint": receiver.url, "priority": 0}
    )
    assert answer.status_code == 201, answer.text
    request_id = answer.json()["request_id"]
    view = wait_status(swell, request_id, {"SUCCEEDED"})
    assert view["result"]["i"] == 7 and view["attempts"] == 1 and view["errors"] == []
    (headers, body), = [(h, b) for h, b in receiver.wait_for(lambda p: len(p) == 1) and receiver.received]
    secret = swell.http.get("/v1/webhook_secret").json()["webhook_secret"]
    assert verify(secret, body, headers[SIGNATURE_HEADER.lower()])
    assert not verify(secret, body + b" ", headers[SIGNATURE_HEADER.lower()])
    payload = receiver.payloads()[0]
    assert payload["request_id"] == request_id and payload["status"] == "SUCCEEDED"
    assert payload["data"]["i"] == 7 and payload["type"] == "async_request_completed"
    delivered = wait_status(swell, request_id, {"SUCCEEDED"})
    deadline = time.monotonic() + 10
    while delivered["webhook_status"] != "SUCCEEDED" and time.monotonic() < deadline:
        time.sleep(0.05)
        delivered = wait_status(swell, request_id, {"SUCCEEDED"})
    assert delivered["webhook_status"] == "SUCCEEDED" and delivered["webhook_attempts"] == 1
    metrics = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(swell.http.get("/metrics").text)
        for sample in family.samples
    }
    assert metrics[("swell_async_requests_finished_total", (("status", "SUCCEEDED"),))] >= 1
    assert metrics[("swell_webhook_deliveries_total", (("outcome", "delivered"),))] >= 1


def test_webhook_is_retried_until_the_receiver_takes_it(swell: Swell, sleepy: dict[str, Any]) -> None:
    receiver = WebhookReceiver(fail_first=2)
    try:
        request_id = swell.http.post(
            async_path(sleepy), json={"model_input": {"i": 1}, "webhook_endpoint": receiver.url}
        ).json()["request_id"]
        receiver.wait_for(lambda p: len(p) == 1, timeout=30)  # after 1 s and 2 s of back-off
        deadline = time.monotonic() + 10
        while (view := wait_status(swell, request_id, {"SUCCEEDED"}))["webhook_status"] != "SUCCEEDED":
            assert time.monotonic() < deadline, view
            time.sleep(0.05)
        assert view["webhook_attempts"] == 3
    finally:
        receiver.close()


def test_queued_request_can_be_canceled_but_a_running_one_cannot(swell: Swell, sleepy: dict[str, Any]) -> None:
    running = swell.http.post(async_path(sleepy), json={"model_input": {"sleep": 3}}).json()["request_id"]
    wait_status(swell, running, {"IN_PROGRESS"})
    queued = swell.http.post(async_path(sleepy), json={"model_input": {"i": 2}}).json()["request_id"]
    assert wait_status(swell, queued, {"QUEUED"})["status"] == "QUEUED"
    busy = swell.http.delete(f"/async_request/{running}")
    assert busy.status_code == 409 and "IN_PROGRESS" in busy.json()["reason"]
    canceled = swell.http.delete(f"/async_request/{queued}")
    assert canceled.status_code == 200 and canceled.json()["status"] == "CANCELED"
    assert wait_status(swell, running, {"SUCCEEDED"})["result"]["i"] is None
    view = swell.http.get(f"/async_request/{queued}").json()
    assert view["status"] == "CANCELED" and view["attempts"] == 0  # it never ran
    again = swell.http.delete(f"/async_request/{queued}")
    assert again.status_code == 409 and again.json()["status"] == "CANCELED"


BUSY = '''
import time


class Model:
    def predict(self, model_input):
        time.sleep(min(float(model_input.get("sleep", 0)), 30))
        return {"slept": model_input.get("sleep", 0)}
'''


@pytest.mark.slow
def test_request_left_in_the_queue_past_its_limit_expires(
    swell: Swell, make_model: Callable[..., Path], receiver: WebhookReceiver
) -> None:
    pushed = swell.push(make_model(BUSY), name="async-busy")
    blocker = swell.http.post(async_path(pushed), json={"model_input": {"sleep": 14}, "priority": 0}).json()["request_id"]
    wait_status(swell, blocker, {"IN_PROGRESS"})
    late = swell.http.post(
        async_path(pushed),
        json={"model_input": {}, "max_time_in_queue_seconds": 10, "webhook_endpoint": receiver.url},
    ).json()["request_id"]
    view = wait_status(swell, late, {"EXPIRED", "SUCCEEDED"}, timeout=30)
    assert view["status"] == "EXPIRED" and view["errors"][0]["code"] == "TIMEOUT_IN_QUEUE" and view["attempts"] == 0
    payload = receiver.wait_for(lambda p: len(p) == 1)[0]
    assert payload["status"] == "EXPIRED" and payload["data"] is None


def test_failed_inference_is_retried_as_configured(swell: Swell, make_model: Callable[..., Path]) -> None:
    pushed = swell.push(make_model(FLAKY), name="async-flaky")
    retry = {"max_attempts": 3, "initial_delay_ms": 100, "max_delay_ms": 200}
    ok = swell.http.post(
        async_path(pushed), json={"model_input": {"fail_times": 2}, "inference_retry_config": retry}
    ).json()["request_id"]
    view = wait_status(swell, ok, {"SUCCEEDED", "FAILED"})
    assert view["status"] == "SUCCEEDED" and view["result"] == {"tries": 3} and view["attempts"] == 3
    once = swell.http.post(async_path(pushed), json={"model_input": {"fail_times": 10}}).json()["request_id"]
    failed = wait_status(swell, once, {"SUCCEEDED", "FAILED"})
    assert failed["status"] == "FAILED" and failed["attempts"] == 1
    assert "HTTP 500" in failed["errors"][0]["message"]  # the model's own message stays in its log, as on Truss


def test_async_request_wakes_a_deployment_at_zero(swell: Swell, make_model: Callable[..., Path]) -> None:
    pushed = swell.push(make_model(SLEEPY), name="async-wake")
    assert swell.deployment(pushed)["status"] == "Scaled to zero"
    request_id = swell.http.post(async_path(pushed), json={"model_input": {"i": 3}}).json()["request_id"]
    assert wait_status(swell, request_id, {"SUCCEEDED"})["result"]["i"] == 3


@pytest.mark.parametrize(
    ("body", "field", "allowed"),
    [
        ({"model_input": {}, "webhook_endpoint": "ftp://example.com/x"}, "webhook_endpoint", "http"),
        ({"model_input": {}, "webhook_endpoint": "not a url"}, "webhook_endpoint", "http"),
        ({"model_input": {}, "priority": 3}, "priority", "less than or equal to 2"),
        ({"model_input": {}, "priority": -1}, "priority", "greater than or equal to 0"),
        ({"model_input": {}, "max_time_in_queue_seconds": 72 * 3600 + 1}, "max_time_in_queue_seconds", "259200"),
        ({"model_input": {}, "max_time_in_queue_seconds": 5}, "max_time_in_queue_seconds", "10"),
        ({"model_input": {}, "inference_retry_config": {"max_attempts": 0}}, "inference_retry_config.max_attempts", "1"),
        ({"model_input": {}, "priorty": 1}, "priorty", "Extra inputs"),
        ({"webhook_endpoint": None}, "model_input", "required"),
    ],
)
def test_bad_async_request_is_refused_naming_the_field(
    swell: Swell, sleepy: dict[str, Any], body: dict[str, Any], field: str, allowed: str
) -> None:
    answer = swell.http.post(async_path(sleepy), json=body)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert any(d["field"].endswith(field) and allowed in d["allowed"] for d in detail), detail


def test_nan_in_the_input_is_refused_before_it_is_kept(swell: Swell, sleepy: dict[str, Any]) -> None:
    answer = swell.http.post(
        async_path(sleepy), content=b'{"model_input": {"x": NaN}}', headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    (detail,) = answer.json()["detail"]
    assert detail["field"].endswith("model_input") and "NaN" in detail["allowed"]


def test_async_routes_answer_clearly_for_unknown_things_and_keys(swell: Swell, sleepy: dict[str, Any]) -> None:
    missing = swell.http.get("/async_request/nosuchrequest")
    assert missing.status_code == 404 and "nosuchrequest" in missing.json()["reason"]
    assert swell.http.delete("/async_request/nosuchrequest").status_code == 404
    unknown_model = swell.http.post("/model/nosuchmodel/development/async_predict", json={"model_input": {}})
    assert unknown_model.status_code == 404
    anonymous = httpx.post(f"{swell.url}{async_path(sleepy)}", json={"model_input": {}})
    assert anonymous.status_code == 401
    request_id = swell.http.post(async_path(sleepy), json={"model_input": {"i": 5}}).json()["request_id"]
    other_model = swell.http.post("/v1/models", json={"name": "async-other"}).json()["id"]
    other = swell.http.post("/v1/api_keys", json={"type": "invoke", "model_ids": [other_model]}).json()["key"]
    scoped = {"Authorization": f"Api-Key {other}"}
    assert httpx.get(f"{swell.url}/async_request/{request_id}", headers=scoped).status_code == 404
    assert httpx.post(f"{swell.url}{async_path(sleepy)}", json={"model_input": {}}, headers=scoped).status_code == 403
    own = swell.http.post("/v1/api_keys", json={"type": "invoke", "model_ids": [sleepy["model_id"]]}).json()["key"]
    view = httpx.get(f"{swell.url}/async_request/{request_id}", headers={"Authorization": f"Api-Key {own}"})
    assert view.status_code == 200 and view.json()["request_id"] == request_id
    assert KEY  # the workspace key saw everything above
