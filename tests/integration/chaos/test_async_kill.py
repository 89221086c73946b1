"""1,000 async requests accepted, the server killed with -9 halfway through running them, then
started again on the same data dir: every request must reach SUCCEEDED with its own result,
stored once, and every webhook must arrive at least once."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "live"))

from swell_live import KEY, start_server, stop_server  # type: ignore[import-not-found]  # noqa: E402
from webhook_receiver import WebhookReceiver  # type: ignore[import-not-found]  # noqa: E402

from swell.control._webhooks import SIGNATURE_HEADER, verify  # noqa: E402

REQUESTS = int(os.environ.get("SWELL_CHAOS_ASYNC_REQUESTS", "1000"))
DEADLINE_S = 240.0  # the whole test, on a loaded 2-core machine

# Appends every call to a log (at least once means some may appear twice) and
# answers something only this input gives.
WORKER = '''
import os
import time


class Model:
    def predict(self, model_input):
        time.sleep(0.1)
        with open(os.environ["CHAOS_CALLS_LOG"], "a") as fh:
            fh.write(f"{model_input['i']}\\n")
        return {"i": model_input["i"], "square": model_input["i"] ** 2}
'''


def _statuses(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM async_requests GROUP BY status").fetchall())


@pytest.mark.slow
def test_thousand_async_requests_survive_a_kill_9(tmp_path: Path) -> None:
    started = time.monotonic()
    calls = tmp_path / "calls.log"
    os.environ["CHAOS_CALLS_LOG"] = str(calls)  # the server passes its environment to replicas
    package = tmp_path / "worker"
    (package / "model").mkdir(parents=True)
    (package / "model" / "model.py").write_text(WORKER)
    (package / "config.yaml").write_text("runtime:\n  predict_concurrency: 2\n")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    receiver = WebhookReceiver()
    process, swell = start_server(data_dir)
    try:
        pushed = swell.push(package, name="chaos-async")
        assert swell.patch(pushed, min_replica=1, max_replica=1).status_code == 200
        path = f"/model/{pushed['model_id']}/deployment/{pushed['deployment_id']}/async_predict"
        rng = random.Random(7)
        priorities = [rng.randint(0, 2) for _ in range(REQUESTS)]

        def submit(i: int) -> tuple[int, str]:
            body = {"model_input": {"i": i}, "webhook_endpoint": receiver.url, "priority": priorities[i]}
            with httpx.Client(base_url=swell.url, headers={"Authorization": f"Api-Key {KEY}"}, timeout=60) as http:
                answer = http.post(path, json=body)
            assert answer.status_code == 201, answer.text
            return i, answer.json()["request_id"]

        with ThreadPoolExecutor(8) as pool:
            ids = dict(pool.map(submit, range(REQUESTS)))
        assert len(set(ids.values())) == REQUESTS

        # Kill -9 while the queue is still being worked through.
        db = data_dir / "swell.db"
        deadline = time.monotonic() + 60
        while len(receiver.received) < REQUESTS // 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        at_kill = _statuses(db)
        unfinished_at_kill = at_kill.get("QUEUED", 0) + at_kill.get("IN_PROGRESS", 0)
        assert unfinished_at_kill > 0, f"the server finished everything before the kill: {at_kill}"
        swell.http.close()

        process, swell = start_server(data_dir)
        remaining = DEADLINE_S - (time.monotonic() - started)
        receiver.wait_for(lambda p: {m["request_id"] for m in p} >= set(ids.values()), timeout=max(30, remaining))

        # Every request: SUCCEEDED, with its own result, in one row.
        by_id = {request_id: i for i, request_id in ids.items()}
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT id, status, result FROM async_requests").fetchall()
        assert len(rows) == REQUESTS
        for request_id, status, result in rows:
            i = by_id[request_id]
            assert status == "SUCCEEDED", (request_id, status)
            assert json.loads(result) == {"i": i, "square": i * i}
        views = [swell.http.get(f"/async_request/{ids[i]}").json() for i in rng.sample(range(REQUESTS), 50)]
        assert all(v["status"] == "SUCCEEDED" and v["result"]["square"] == by_id[v["request_id"]] ** 2 for v in views)

        # Every webhook at least once, each signed, each copy carrying the same stored result.
        secret = swell.http.get("/v1/webhook_secret").json()["webhook_secret"]
        deliveries: dict[str, list[Any]] = {}
        for headers, body in receiver.received:
            assert verify(secret, body, headers[SIGNATURE_HEADER.lower()])
            payload = json.loads(body)
            deliveries.setdefault(payload["request_id"], []).append(payload["data"])
        assert set(deliveries) == set(ids.values())
        assert all(all(d == copies[0] for d in copies) for copies in deliveries.values())

        runs = [int(line) for line in calls.read_text().split()]
        assert set(runs) == set(range(REQUESTS))  # at least once to the model
        summary = {
            "sent": REQUESTS,
            "succeeded": sum(1 for _, status, _ in rows if status == "SUCCEEDED"),
            "lost": REQUESTS - len(rows),
            "unfinished_at_kill": unfinished_at_kill,
            "statuses_at_kill": at_kill,
            "model_calls": len(runs),
            "run_twice": len(runs) - len(set(runs)),
            "webhooks_received": len(receiver.received),
            "webhooks_duplicated": len(receiver.received) - len(deliveries),
            "seconds": round(time.monotonic() - started, 1),
        }
        print("\nasync kill -9:", json.dumps(summary))
        (tmp_path / "async_kill.json").write_text(json.dumps(summary, indent=2))
    finally:
        stop_server(process, swell)
        receiver.close()
        os.environ.pop("CHAOS_CALLS_LOG", None)
