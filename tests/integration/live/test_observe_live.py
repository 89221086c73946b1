"""Logs and events against a real ``swell serve`` with real replica processes.

Logs: a model printing 10 MB a second stays within the caps while the server
answers; a follow goes on across a replica's restart; an invoke key reads
neither logs nor events.  Events: a scale-up/scale-down cycle is told with
the rule's reasons, live over server-sent events, and survives a restart.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from swell_live import KEY, SLEEPY, Swell, package_archive, start_server, stop_server  # type: ignore[import-not-found]

REPLICA_CAP_MB = 1
DEPLOYMENT_CAP_MB = 3
SLACK = 256 * 1024  # a rotation happens after a write: at most one read's worth (64 KiB, stamped) past each half

SPAMMER = '''
import sys
import threading
import time


class Model:
    def load(self):
        self.printed = 0
        threading.Thread(target=self._spam, daemon=True).start()

    def _spam(self):
        line = "spam " + "x" * 994 + "\\n"  # 1000 bytes
        start = time.monotonic()
        while self.printed < 60_000_000 and time.monotonic() - start < 12:  # bounded in bytes and time
            began = time.monotonic()
            sys.stdout.write(line * 1000)
            sys.stdout.flush()
            self.printed += 1_000_000
            time.sleep(max(0.0, 0.1 - (time.monotonic() - began)))  # 10 MB a second at most

    def predict(self, model_input):
        return {"printed": self.printed}
'''

TALKER = '''
import os


class Model:
    def load(self):
        print(f"loaded in {os.getpid()}", flush=True)

    def predict(self, model_input):
        print(f"predict {model_input.get('i')} in {os.getpid()}", flush=True)
        return {"pid": os.getpid()}
'''


@pytest.fixture(scope="module")
def swell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swell]:
    process, server = start_server(
        tmp_path_factory.mktemp("swell-data"),
        "--replica-log-mb", str(REPLICA_CAP_MB), "--deployment-log-mb", str(DEPLOYMENT_CAP_MB),
    )
    try:
        yield server
    finally:
        stop_server(process, server)


def _base(pushed: dict[str, Any]) -> str:
    return f"/v1/models/{pushed['model_id']}/deployments/{pushed['deployment_id']}"


def _log_bytes(swell: Swell, pushed: dict[str, Any]) -> int:
    folder = swell.log.parent / "logs" / pushed["deployment_id"]
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def test_a_model_printing_10_mb_a_second_stays_under_the_caps_and_the_server_answers(
    swell: Swell, make_model: Callable[..., Path]
) -> None:
    pushed = swell.push(make_model(SPAMMER), name="spammer")
    path = swell.predict_path(pushed)
    assert swell.http.post(path, json={}).status_code == 200  # woken: it prints from now on
    printed, answered, most = 0, 0, 0
    slowest = 0.0
    for _ in range(300):  # bounded; ends once the model has printed 20 times its replica cap
        began = time.monotonic()
        assert swell.http.get("/health").status_code == 200
        response = swell.http.post(path, json={})
        assert response.status_code == 200, response.text
        logs = swell.http.get(_base(pushed) + "/logs", params={"limit": 5})
        assert logs.status_code == 200, logs.text
        slowest = max(slowest, time.monotonic() - began)
        answered += 1
        printed = response.json()["printed"]
        most = max(most, _log_bytes(swell, pushed))
        assert most <= REPLICA_CAP_MB * 1024 * 1024 + SLACK, f"{most} bytes on disk for one replica"
        if printed >= 20 * REPLICA_CAP_MB * 1_000_000:
            break
        time.sleep(0.05)
    assert printed >= 20 * REPLICA_CAP_MB * 1_000_000, f"the model printed only {printed} bytes"
    lines = swell.http.get(_base(pushed) + "/logs", params={"limit": 3}).json()["lines"]
    assert [line["text"][:5] for line in lines] == ["spam "] * 3
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]) for line in lines)
    folder = swell.log.parent / "logs" / pushed["deployment_id"]
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in folder.iterdir())
    print(f"printed {printed} bytes; at most {most} on disk; {answered} rounds, slowest {slowest:.3f} s")


def _follow(swell: Swell, pushed: dict[str, Any], until: Callable[[dict[str, Any]], bool], seen: list[dict[str, Any]]) -> threading.Thread:
    """Read ``…/logs?follow=true`` (NDJSON) into ``seen`` until a line satisfies ``until`` (or 60 s of silence)."""

    def run() -> None:
        with httpx.Client(base_url=swell.url, headers={"Authorization": f"Api-Key {KEY}"}, timeout=60) as client:
            with client.stream("GET", _base(pushed) + "/logs", params={"follow": "true"}) as response:
                assert response.headers["content-type"].startswith("application/x-ndjson")
                for raw in response.iter_lines():
                    if raw.strip():
                        seen.append(json.loads(raw))
                        if until(seen[-1]):
                            return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_follow_goes_on_across_a_replica_restart(swell: Swell, make_model: Callable[..., Path]) -> None:
    pushed = swell.push(make_model(TALKER), name="talker")
    path = swell.predict_path(pushed)
    first = swell.http.post(path, json={"i": 1})
    assert first.status_code == 200
    seen: list[dict[str, Any]] = []
    follower = _follow(swell, pushed, lambda line: line["text"].startswith("predict 2 "), seen)
    deadline = time.monotonic() + 30
    while not any(line["text"].startswith("predict 1 ") for line in seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(first.json()["pid"], signal.SIGKILL)
    for _ in range(5):  # the first call may meet the dying replica (502); the next wakes a new one
        second = swell.http.post(path, json={"i": 2})
        if second.status_code == 200:
            break
        time.sleep(0.2)
    assert second.status_code == 200 and second.json()["pid"] != first.json()["pid"]
    follower.join(timeout=60)
    assert not follower.is_alive(), f"the follow did not see the new replica's line: {seen[-5:]}"
    one = next(line for line in seen if line["text"].startswith("predict 1 "))
    two = next(line for line in seen if line["text"].startswith("predict 2 "))
    assert one["replica"] != two["replica"] and one["stream"] == two["stream"] == "output"
    server = [line for line in seen if line["stream"] == "swell"]
    assert any(line["replica"] == one["replica"] and "failed" in line["text"] for line in server), server
    assert any(line["replica"] == two["replica"] and "ready in" in line["text"] for line in server), server
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]) for line in seen)


def test_an_invoke_key_reads_neither_logs_nor_events(swell: Swell, make_model: Callable[..., Path]) -> None:
    pushed = swell.push(make_model(TALKER), name="private-logs")
    key = swell.http.post("/v1/api_keys", json={"type": "invoke", "name": "ci"}).json()["key"]
    with httpx.Client(base_url=swell.url, headers={"Authorization": f"Api-Key {key}"}, timeout=30) as invoker:
        assert invoker.post(swell.predict_path(pushed), json={"i": 1}).status_code == 200  # it may call the model
        for route in ("/logs", "/events", "/logs?follow=true", "/events?follow=true"):
            response = invoker.get(_base(pushed) + route)
            assert response.status_code == 403, (route, response.text)
            assert response.json()["error"] == "forbidden"
    assert swell.http.get(_base(pushed) + "/logs").status_code == 200


def test_a_syntax_error_is_refused_at_push_with_the_error(swell: Swell, make_model: Callable[..., Path]) -> None:
    response = swell.http.post(
        "/v1/models/push", params={"model_name": "typo"},
        content=package_archive(make_model("class Model:\n    def load(self)\n        pass\n")),
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert "SyntaxError" in body["reason"] and 'File "model/model.py", line 2' in body["reason"]
    assert body["detail"][0]["field"] == "model/model.py"


def test_a_load_failure_traceback_is_in_the_logs(swell: Swell, make_model: Callable[..., Path]) -> None:
    broken = "class Model:\n    def load(self):\n        raise RuntimeError('weights are missing')\n    def predict(self, x):\n        return x\n"
    pushed = swell.push(make_model(broken), name="broken")
    assert swell.http.post(swell.predict_path(pushed), json={}).status_code == 503
    for _ in range(100):  # the 503 may come a moment before the replica's last lines are read
        lines = swell.http.get(_base(pushed) + "/logs").json()["lines"]
        output = [line["text"] for line in lines if line["stream"] == "output"]
        if any("RuntimeError: weights are missing" in text for text in output):
            break
        time.sleep(0.1)
    assert any("Traceback" in text for text in output), output[-10:]
    assert any("RuntimeError: weights are missing" in text for text in output), output[-10:]
    assert any(line["stream"] == "swell" and "failed to load" in line["text"] for line in lines)
    bad = swell.http.get(_base(pushed) + "/logs", params={"since": "yesterday"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "since"


def _sse_events(swell: Swell, pushed: dict[str, Any], until: Callable[[dict[str, Any]], bool], seen: list[dict[str, Any]]) -> threading.Thread:
    """Read ``…/events?follow=true`` as server-sent events into ``seen`` until one satisfies ``until``."""

    def run() -> None:
        headers = {"Authorization": f"Api-Key {KEY}", "accept": "text/event-stream"}
        with httpx.Client(base_url=swell.url, headers=headers, timeout=120) as client:
            with client.stream("GET", _base(pushed) + "/events", params={"follow": "true"}) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                ident = None
                for raw in response.iter_lines():
                    if raw.startswith("id: "):
                        ident = int(raw[4:])
                    elif raw.startswith("data: "):
                        event = json.loads(raw[6:])
                        assert event["id"] == ident
                        seen.append(event)
                        if until(event):
                            return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_scale_cycle_is_told_with_reasons_live_and_after_a_restart(tmp_path: Path, make_model: Callable[..., Path]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    process, swell = start_server(data)
    try:
        pushed = swell.push(make_model(SLEEPY), name="cycle")
        live: list[dict[str, Any]] = []
        follower = _sse_events(swell, pushed, lambda e: e["message"].startswith("scale to zero"), live)
        response = swell.patch(
            pushed, max_replica=2, autoscaling_window=10, scale_down_delay=0, target_utilization_percentage=100
        )
        assert response.json()["status"] == "ACCEPTED"
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=swell.url, headers={"Authorization": f"Api-Key {KEY}"}, timeout=60) as client:
                for _ in range(500):  # bounded; stops when told
                    if stop.is_set() or client.post(swell.predict_path(pushed), json={"sleep": 0.3}).status_code != 200:
                        return

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        try:
            swell.wait_for(pushed, lambda v: sum(r["state"] == "ready" for r in v["replicas"]) >= 2, timeout=90, what="2 ready")
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=60)
        swell.wait_for(pushed, lambda v: v["status"] == "Scaled to zero", timeout=90, what="scale to zero")
        follower.join(timeout=30)
        events = swell.http.get(_base(pushed) + "/events").json()["events"]
        kinds = [e["kind"] for e in events]
        messages = {e["kind"]: e["message"] for e in events}
        assert kinds[0] == "settings_changed" and "max_replica=2" in events[0]["message"]
        assert messages["wake"].startswith("wake: 1 request(s) waiting and no replica; start 1")
        up = next(e for e in events if e["kind"] == "scale_up")
        assert re.match(r"scale up 1 → 2: avg concurrency [\d.]+ over 10 s / 1 per replica wants [2-9]", up["message"]), up
        assert up["details"]["replicas"] == 1 and up["details"]["target"] == 2
        ready = [e for e in events if e["kind"] == "replica_ready"]
        assert len(ready) >= 2 and all("total_seconds" in e["details"]["cold_start"] for e in ready)
        assert kinds.count("replica_started") >= 2 and kinds.count("replica_draining") >= 2
        assert any(e["message"].startswith("scale to zero: demand has stayed at or below 0 for 0 s") for e in events)
        assert kinds.index("wake") < kinds.index("scale_up") < kinds.index("scale_down")
        assert not follower.is_alive() and [e["id"] for e in live] == [e["id"] for e in events[: len(live)]]
        assert live[-1]["message"].startswith("scale to zero")
        cli = swell.http.get(_base(pushed) + "/events", params={"since": "1h"}).json()["events"]
        assert [e["id"] for e in cli] == [e["id"] for e in events]
    finally:
        stop_server(process, swell)
    process, swell = start_server(data)
    try:
        after = swell.http.get(_base(pushed) + "/events").json()["events"]
        assert after[: len(events)] == events
    finally:
        stop_server(process, swell)
