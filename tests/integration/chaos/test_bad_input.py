"""Malformed input against a real server: every refusal is a 4xx whose JSON body
says what was wrong (field, value, what is allowed), and nothing is half-applied.

Bodies over the limit are answered 413 as soon as the server knows: from the
``content-length`` before any body byte arrives, or once the count of a chunked
body passes the limit.
"""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from click.testing import CliRunner
from fuzz_support import (  # type: ignore[import-not-found]
    KEY,
    MAX_REQUEST_BYTES,
    MAX_UPLOAD_BYTES,
    Live,
    assert_names_the_problem,
    live_server,
)

from swell.cli import cli

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    yield from live_server(tmp_path_factory.mktemp("swell-bad-input"))


def _models(live: Live) -> list[str]:
    return sorted(m["name"] for m in live.http.get("/v1/models").json()["models"])


# --------------------------------------------------------------------------- body size limits


def _assert_too_large(response: httpx.Response, limit: int, flag: str) -> None:
    assert response.status_code == 413, response.text
    body = response.json()
    assert body["error"] == "request too large"
    assert body["limit"] == limit
    assert f"the limit is {limit} bytes" in body["reason"] and flag in body["reason"]


def _chunks(total: int, size: int = 8192) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


def test_predict_at_the_limit_is_served(live: Live) -> None:
    payload = b'{"pad": "' + b"x" * (MAX_REQUEST_BYTES - 11) + b'"}'
    assert len(payload) == MAX_REQUEST_BYTES
    response = live.http.post(live.predict_url, content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert len(response.json()["echo"]["pad"]) == MAX_REQUEST_BYTES - 11


def test_predict_over_the_limit_is_413(live: Live) -> None:
    declared = live.http.post(live.predict_url, content=b"x" * (MAX_REQUEST_BYTES + 1))
    _assert_too_large(declared, MAX_REQUEST_BYTES, "--max-request-mb")
    assert f"is {MAX_REQUEST_BYTES + 1} bytes" in declared.json()["reason"]
    chunked = live.http.post(live.predict_url, content=_chunks(MAX_REQUEST_BYTES * 2))
    _assert_too_large(chunked, MAX_REQUEST_BYTES, "--max-request-mb")
    assert f"is more than {MAX_REQUEST_BYTES} bytes" in chunked.json()["reason"]


def test_management_body_over_the_limit_is_413_and_changes_nothing(live: Live) -> None:
    before = live.settings()
    padded = b'{"scale_down_delay": 61' + b" " * MAX_REQUEST_BYTES + b"}"
    response = live.http.patch(live.settings_url, content=padded, headers={"content-type": "application/json"})
    _assert_too_large(response, MAX_REQUEST_BYTES, "--max-request-mb")
    chunked = live.http.patch(
        live.settings_url, content=_chunks(MAX_REQUEST_BYTES * 2), headers={"content-type": "application/json"}
    )
    _assert_too_large(chunked, MAX_REQUEST_BYTES, "--max-request-mb")
    assert live.settings() == before


def test_push_over_the_upload_limit_is_413_and_creates_nothing(live: Live) -> None:
    before = _models(live)
    params = {"model_name": "too-big", "publish": "true"}
    declared = live.http.post("/v1/models/push", params=params, content=b"\0" * (MAX_UPLOAD_BYTES + 1))
    _assert_too_large(declared, MAX_UPLOAD_BYTES, "--max-upload-mb")
    assert "package upload" in declared.json()["reason"]
    chunked = live.http.post("/v1/models/push", params=params, content=_chunks(MAX_UPLOAD_BYTES + 65536, 65536))
    _assert_too_large(chunked, MAX_UPLOAD_BYTES, "--max-upload-mb")
    assert _models(live) == before
    # The upload limit, not the (smaller) request limit, applies to push.
    between = live.http.post("/v1/models/push", params=params, content=b"\0" * (MAX_REQUEST_BYTES * 2))
    assert between.status_code in (400, 422), between.text  # not a package, but not too large
    assert_names_the_problem(between)


def _raw(live: Live, head: str, body: bytes = b"", *, wait: float = 10.0) -> tuple[float, bytes]:
    """Send a request head (and the start of a body) on a raw socket; the answer and how long it took."""
    host, port = live.swell.url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer or b'"limit"' not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return time.monotonic() - started, answer


@pytest.mark.parametrize(
    "target",
    ["predict", "/v1/models/{model_id}/deployments/{deployment_id}/autoscaling_settings", "/v1/models/push"],
)
def test_a_declared_length_over_the_limit_is_refused_before_the_body_arrives(live: Live, target: str) -> None:
    path = live.predict_url if target == "predict" else target.format(**live.pushed)
    method = "PATCH" if "autoscaling" in path else "POST"
    # A terabyte announced, one byte sent: the answer must not wait for the rest.
    head = (
        f"{method} {path} HTTP/1.1\nHost: swell\nAuthorization: Api-Key {KEY}\n"
        f"Content-Type: application/json\nContent-Length: {10**12}\n"
    )
    took, answer = _raw(live, head, b"{")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    body = answer.split(b"\r\n\r\n", 1)[1]
    payload = json.loads(body[body.index(b"{") : body.rindex(b"}") + 1])  # chunked or not
    assert payload["error"] == "request too large" and f"is {10**12} bytes" in payload["reason"]
    assert took < 5


def test_a_chunked_body_is_refused_once_it_passes_the_limit(live: Live) -> None:
    # Chunks up to just past the limit, and no terminating chunk: the server
    # must answer from the count, not wait for the end of the body.
    head = (
        f"POST {live.predict_url} HTTP/1.1\nHost: swell\nAuthorization: Api-Key {KEY}\n"
        "Content-Type: application/json\nTransfer-Encoding: chunked\n"
    )
    chunk = b"x" * 4096
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_REQUEST_BYTES // 4096 + 1))
    took, answer = _raw(live, head, body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"is more than" in answer
    assert took < 5


# --------------------------------------------------------------------------- malformed JSON, content types, methods


def test_malformed_json_to_a_model_is_the_model_servers_400(live: Live) -> None:
    for body, content_type in [
        (b'{"text": ', "application/json"),
        (b"hello", "text/plain"),
        (b"\xff\xfe\x00", "application/json"),
    ]:
        response = live.http.post(live.predict_url, content=body, headers={"content-type": content_type})
        assert response.status_code == 400, response.text
        assert "Invalid JSON payload" in response.json()["error"], response.text
        assert response.headers["x-baseten-error-code"] == "700"  # a client error, as Truss marks it


def test_json_nested_30k_deep_is_a_400_on_predict_and_async_predict(live: Live) -> None:
    # The router forwards a predict body unparsed: the replica's parser is where it recursed.
    deep = b"[" * 30_000 + b"]" * 30_000  # within this server's 64 KiB body limit
    response = live.http.post(live.predict_url, content=deep, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "Invalid JSON payload: nested more than 1000 levels deep"
    queued = live.http.post(
        live.predict_url.replace("/predict", "/async_predict"),
        content=b'{"model_input": ' + deep + b"}",
        headers={"content-type": "application/json"},
    )
    assert queued.status_code == 400, queued.text
    assert queued.json()["error"] == "invalid JSON"


def test_malformed_json_on_management_routes_says_where(live: Live) -> None:
    before = live.settings()
    response = live.http.patch(
        live.settings_url, content=b'{"min_replica": 1,, }', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    body = assert_names_the_problem(response)
    assert body["error"] == "invalid JSON"
    (entry,) = body["detail"]
    assert entry["field"] == "body" and "at character 18" in entry["allowed"], entry
    assert '"min_replica": 1,, }' in entry["value"]
    assert live.settings() == before


def test_a_body_not_sent_as_json_names_the_content_type(live: Live) -> None:
    before = live.settings()
    response = live.http.patch(live.settings_url, content=b"min_replica=1", headers={"content-type": "text/plain"})
    assert response.status_code == 422
    (entry,) = assert_names_the_problem(response)["detail"]
    assert "application/json" in entry["allowed"] and "text/plain" in entry["allowed"], entry
    assert entry["value"] == "min_replica=1"
    assert live.settings() == before


def test_a_body_that_is_not_utf8_says_so(live: Live) -> None:
    before = live.settings()
    response = live.http.patch(
        live.settings_url, content=b'{"min_replica": "\xe9"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    body = assert_names_the_problem(response)
    assert body["error"] == "invalid JSON" and "not UTF-8" in body["reason"] and "byte 17" in body["reason"]
    assert live.settings() == before


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"null", b"42"])
def test_a_settings_body_that_is_not_an_object_is_refused(live: Live, body: bytes) -> None:
    before = live.settings()
    response = live.http.patch(live.settings_url, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert_names_the_problem(response)
    assert live.settings() == before


def test_wrong_methods_name_the_allowed_ones(live: Live) -> None:
    predict = live.http.get(live.predict_url)
    assert predict.status_code == 405 and "POST" in assert_names_the_problem(predict)["reason"]
    put = live.http.put("/v1/models")
    assert put.status_code == 405
    assert set(assert_names_the_problem(put)["allowed"]) == {"GET", "POST"}


@pytest.mark.parametrize("timeout", ["abc", "-1", "0", "nan", "", "1e400x"])
def test_a_bad_timeout_is_400(live: Live, timeout: str) -> None:
    response = live.http.post(live.predict_url, json={}, headers={"x-swell-timeout": timeout})
    assert response.status_code == 400, response.text
    body = assert_names_the_problem(response)
    assert body["error"] == "invalid timeout" and repr(timeout) in body["reason"]


# --------------------------------------------------------------------------- names


WEIRD_NAMES = ["🦀", "a\x00b", "a" * 65, "a" * 10_000, "מודל", "e\u0301", "a\n", "-lead", "../etc", " ", ""]
# Model names are free text as in Truss ("Test Async"): only these are unreadable.
UNREADABLE_MODEL_NAMES = ["a\x00b", "a" * 65, "a" * 10_000, "a\n", "\u202eevil", " ", ""]
FREE_TEXT_MODEL_NAMES = ["🦀 crab", "מודל חדש", "e\u0301 x", "-lead", "../etc/x", "Test Async", "a?b#c%20"]


@pytest.mark.parametrize("name", WEIRD_NAMES, ids=lambda n: repr(n[:12]))
def test_odd_environment_names_are_refused_with_the_rule(live: Live, name: str) -> None:
    before = _models(live)
    environment = live.http.post(f"/v1/models/{live.model_id}/environments", json={"name": name})
    assert environment.status_code == 422, environment.text
    (entry,) = assert_names_the_problem(environment)["detail"]
    assert entry == {"field": "name", "value": name, "allowed": entry["allowed"]}
    assert "letters, digits" in entry["allowed"]
    assert _models(live) == before


@pytest.mark.parametrize("name", UNREADABLE_MODEL_NAMES, ids=lambda n: repr(n[:12]))
def test_unreadable_model_names_are_refused_with_the_rule(live: Live, name: str) -> None:
    before = _models(live)
    response = live.http.post("/v1/models", json={"name": name})
    assert response.status_code == 422, response.text
    (entry,) = assert_names_the_problem(response)["detail"]
    assert entry == {"field": "name", "value": name, "allowed": entry["allowed"]}
    assert "without control characters" in entry["allowed"]
    assert _models(live) == before


@pytest.mark.parametrize("name", FREE_TEXT_MODEL_NAMES, ids=repr)
def test_model_names_are_free_text_kept_as_written_and_reached_by_id(live: Live, name: str) -> None:
    import unicodedata

    created = live.http.post("/v1/models", json={"name": f"  {name} "})
    assert created.status_code == 201, created.text
    model = created.json()
    try:
        assert model["name"] == unicodedata.normalize("NFC", name)  # trimmed, otherwise as written
        assert live.http.get(f"/v1/models/{model['id']}").json()["name"] == model["name"]
        again = live.http.post("/v1/models", json={"name": name})
        assert again.status_code == 409, again.text  # one model per name
    finally:
        assert live.http.delete(f"/v1/models/{model['id']}").status_code == 200


@pytest.mark.parametrize("name", ["🦀", "a\x00b", "a" * 10_000, "מודל", "%00", "..", "a b"], ids=repr)
def test_odd_names_in_paths_are_404_with_a_reason(live: Live, name: str) -> None:
    quoted = "/v1/models/" + quote(name, safe="")
    for path in [quoted, f"{quoted}/deployments/{live.deployment_id}/autoscaling_settings"]:
        response = live.http.get(path)
        assert response.status_code == 404, (path, response.text)
        assert assert_names_the_problem(response)["error"] == "not found"
    predict = live.http.post(quoted.replace("/v1/models/", "/model/") + "/environments/production/predict", json={})
    assert predict.status_code == 404, predict.text
    assert_names_the_problem(predict)


def test_an_odd_model_name_on_push_is_refused_before_anything_is_created(live: Live) -> None:
    from fuzz_support import ECHO, package_archive  # type: ignore[import-not-found]

    before = _models(live)
    response = live.http.post(
        "/v1/models/push", params={"model_name": "🦀\ncrab", "publish": "true"}, content=package_archive(ECHO)
    )
    assert response.status_code == 422, response.text
    (entry,) = assert_names_the_problem(response)["detail"]
    assert entry["field"] == "model_name" and entry["value"] == "🦀\ncrab"
    assert _models(live) == before


# --------------------------------------------------------------------------- autoscaling settings


NUMERIC_FIELDS = [
    "min_replica",
    "max_replica",
    "autoscaling_window",
    "scale_down_delay",
    "concurrency_target",
    "target_utilization_percentage",
]
BAD_NUMBERS: list[Any] = [-1, -(10**30), 10**30, 1e308, 2**63, 1.5, "3", "", None, True, [], {}, [1], {"value": 1}]
# Out of range only for some fields: (field, value).
OUT_OF_RANGE = [
    ("max_replica", 0),
    ("max_replica", 2),  # over this server's cap of 1
    ("autoscaling_window", 9),
    ("autoscaling_window", 3601),
    ("scale_down_delay", 3601),
    ("concurrency_target", 0),
    ("concurrency_target", 10_001),
    ("target_utilization_percentage", 0),
    ("target_utilization_percentage", 101),
]
BAD_SCHEDULES: list[Any] = [
    -1,
    "daily",
    None,
    {},
    [1],
    [{"min_replica": -1, "start": "08:00", "end": "09:00"}],
    [{"min_replica": 1, "start": "25:00", "end": "09:00"}],
    [{"min_replica": 1, "cron": "99 * * * *", "duration": 600}],
    [{"min_replica": 1, "cron": "* * * * *"}],
    [{"min_replica": 1, "start": "08:00", "end": "09:00", "timezone": "Mars/Olympus"}],
    [{"min_replica": 2, "start": "08:00", "end": "09:00"}],  # over max_replica
    [{"min_replica": 1, "start": "08:00", "end": "09:00", "surprise": True}],
]
SETTINGS_CASES = (
    [(field, value) for field in NUMERIC_FIELDS for value in BAD_NUMBERS]
    + OUT_OF_RANGE
    + [("schedules", value) for value in BAD_SCHEDULES]
)


def _same(given: Any, reported: Any) -> bool:
    if isinstance(given, float) and not math.isfinite(given):
        return str(reported).lower() in ("nan", "inf", "-inf")
    return bool(reported == given) or reported == repr(given)


def _assert_refused(response: httpx.Response, field: str, value: Any) -> None:
    assert response.status_code == 422, response.text
    detail = assert_names_the_problem(response)["detail"]
    named = [e for e in detail if e["field"] == field or e["field"].startswith(field + ".")]
    assert named, f"no entry names {field}: {detail}"
    if not field.startswith("schedules") or not isinstance(value, list):
        assert any(_same(value, e["value"]) for e in named), f"value {value!r} not reported: {named}"


@pytest.mark.parametrize(("field", "value"), SETTINGS_CASES, ids=lambda v: repr(v)[:30])
def test_bad_setting_on_patch_is_refused_and_nothing_changes(live: Live, field: str, value: Any) -> None:
    before = live.settings()
    # A valid change alongside the bad one: it must not be applied either.
    other = "scale_down_delay" if field != "scale_down_delay" else "autoscaling_window"
    body = {other: before[other] + 1, field: value}
    response = live.http.patch(live.settings_url, json=body)
    _assert_refused(response, field, value)
    assert live.settings() == before


@pytest.mark.parametrize("field", NUMERIC_FIELDS)
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused_not_500(live: Live, field: str, literal: str) -> None:
    # Python's JSON parser reads these; the refusal must still be a JSON answer.
    before = live.settings()
    response = live.http.patch(
        live.settings_url, content=f'{{"{field}": {literal}}}'.encode(), headers={"content-type": "application/json"}
    )
    _assert_refused(response, field, float(literal.lower().replace("infinity", "inf")))
    assert live.settings() == before


@pytest.mark.parametrize(("field", "value"), SETTINGS_CASES[::3], ids=lambda v: repr(v)[:30])
def test_bad_setting_on_promote_is_refused_and_nothing_changes(live: Live, field: str, value: Any) -> None:
    before = live.settings()
    environment_before = live.http.get(f"/v1/models/{live.model_id}/environments/production").json()
    by_deployment = live.http.post(
        f"/v1/models/{live.model_id}/deployments/{live.deployment_id}/promote",
        json={"environment": "production", "autoscaling_settings": {field: value}},
    )
    _assert_refused(by_deployment, field, value)
    by_environment = live.http.post(
        f"/v1/models/{live.model_id}/environments/production/promote",
        json={"deployment_id": live.deployment_id, "autoscaling_settings": {field: value}},
    )
    _assert_refused(by_environment, field, value)
    assert live.settings() == before
    assert live.http.get(f"/v1/models/{live.model_id}/environments/production").json() == environment_before


@pytest.mark.parametrize("body", [{"min_replicas": 1}, {"max_replica": 1, "": 0}, {"MIN_REPLICA": 0}])
def test_unknown_setting_names_the_known_ones(live: Live, body: dict[str, Any]) -> None:
    before = live.settings()
    response = live.http.patch(live.settings_url, json=body)
    assert response.status_code == 422, response.text
    detail = assert_names_the_problem(response)["detail"]
    assert any("known keys are" in e["allowed"] and "min_replica" in e["allowed"] for e in detail), detail
    assert live.settings() == before


# --------------------------------------------------------------------------- the serve flags


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--max-request-mb", "-1"), ("--max-request-mb", "0"), ("--max-request-mb", "nan"), ("--max-upload-mb", "inf"),
     ("--max-upload-mb", "lots")],
)
def test_bad_limit_flags_are_usage_errors_without_a_traceback(tmp_path: Path, flag: str, value: str) -> None:
    result = CliRunner().invoke(cli, ["serve", "--data-dir", str(tmp_path), flag, value])
    assert result.exit_code == 2, result.output
    assert flag in result.output and "Traceback" not in result.output
