"""10,000 sync requests while a replica is killed with -9 every couple of seconds.

Every request must end in a correct answer (its body checked) or a clear error
(502/503/504 with JSON ``error`` and ``reason``); none may hang past the
client's timeout or vanish.  The counts are printed (``pytest -s``) and written
to ``sync_kill.json`` in the test's tmp dir.

Bounded in count (``SWELL_CHAOS_REQUESTS``, default 10,000) and in time
(``SWELL_CHAOS_SECONDS``, default 240: past it no new request is sent, and the
test fails if fewer than all were).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from replica_chaos import Swell, is_clear_error, running_server, write_model  # type: ignore[import-not-found]

REQUESTS = int(os.environ.get("SWELL_CHAOS_REQUESTS", "10000"))
TIME_LIMIT = float(os.environ.get("SWELL_CHAOS_SECONDS", "240"))
CONCURRENCY = 32
KILL_EVERY = 2.0  # seconds, with jitter
CLIENT_TIMEOUT = 60.0  # a request without an answer by then has hung

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(TIME_LIMIT) + 180)]

DOUBLER = """
import os
import time


class Model:
    def predict(self, model_input):
        time.sleep(0.002)  # long enough that a kill finds requests in flight
        return {"i": model_input["i"], "double": 2 * model_input["i"], "pid": os.getpid()}
"""


@pytest.fixture(scope="module")
def swell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swell]:
    with running_server(tmp_path_factory.mktemp("swell-data")) as server:
        yield server


async def _chaos(swell: Swell, pushed: dict[str, Any]) -> dict[str, Any]:
    path = swell.predict_path(pushed)
    view_path = f"/v1/models/{pushed['model_id']}/deployments/{pushed['deployment_id']}"
    counts: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    unexpected: list[str] = []
    killed: list[int] = []
    next_i = 0
    deadline = time.monotonic() + TIME_LIMIT
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=swell.url, headers=dict(swell.http.headers), timeout=CLIENT_TIMEOUT, limits=limits
    ) as client:

        async def worker() -> None:
            nonlocal next_i
            while next_i < REQUESTS and time.monotonic() < deadline:
                i = next_i
                next_i += 1
                counts["sent"] += 1
                try:
                    response = await client.post(path, json={"i": i})
                except httpx.TimeoutException:
                    counts["hung"] += 1
                    unexpected.append(f"request {i}: no answer within {CLIENT_TIMEOUT:g} s")
                    continue
                except httpx.TransportError as exc:
                    counts["lost"] += 1
                    unexpected.append(f"request {i}: connection to the server failed: {exc!r}")
                    continue
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    body = response.json()
                    if body.get("i") == i and body.get("double") == 2 * i:
                        counts["correct"] += 1
                    else:
                        counts["wrong"] += 1
                        unexpected.append(f"request {i}: wrong answer {body}")
                elif is_clear_error(response.status_code, response.content):
                    counts["clear_errors"] += 1
                else:
                    counts["unclear"] += 1
                    unexpected.append(f"request {i}: {response.status_code} {response.text[:300]!r}")

        async def killer() -> None:
            rng = random.Random(7)
            while not done.is_set():
                try:
                    await asyncio.wait_for(done.wait(), KILL_EVERY * rng.uniform(0.75, 1.25))
                    return
                except TimeoutError:
                    pass
                view = (await client.get(view_path)).json()
                pids = [r["pid"] for r in view["replicas"] if r["state"] == "ready" and r["pid"]]
                if pids:
                    pid = rng.choice(pids)
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                    except ProcessLookupError:
                        pass

        started = time.monotonic()
        kill_task = asyncio.create_task(killer())
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.monotonic() - started
        done.set()
        await kill_task
    return {
        "requests": REQUESTS,
        "sent": counts["sent"],
        "correct": counts["correct"],
        "clear_errors": counts["clear_errors"],
        "hung": counts["hung"],
        "lost": counts["lost"],
        "wrong": counts["wrong"],
        "unclear": counts["unclear"],
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "kills": len(killed),
        "seconds": round(elapsed, 1),
        "unexpected": unexpected[:20],
    }


@pytest.mark.slow
def test_sync_requests_survive_kill_9_every_few_seconds(swell: Swell, tmp_path: Path) -> None:
    package = write_model(
        tmp_path / "doubler", DOUBLER, {"model_name": "doubler", "runtime": {"predict_concurrency": 4}}
    )
    pushed = swell.push(package, name="doubler")
    assert swell.patch(pushed, min_replica=3, max_replica=3).status_code == 200
    swell.wait_for(
        pushed, lambda v: sum(r["state"] == "ready" for r in v["replicas"]) == 3, timeout=60, what="3 ready replicas"
    )
    result = asyncio.run(_chaos(swell, pushed))
    (tmp_path / "sync_kill.json").write_text(json.dumps(result, indent=2))
    print(
        f"\nsync kill -9 chaos: sent {result['sent']}, correct {result['correct']}, "
        f"clear errors {result['clear_errors']} {result['statuses']}, hung {result['hung']}, "
        f"lost {result['lost']}, kills {result['kills']}, {result['seconds']} s -> {tmp_path / 'sync_kill.json'}"
    )
    assert result["sent"] == REQUESTS, f"only {result['sent']} of {REQUESTS} sent within {TIME_LIMIT:g} s: {result}"
    assert result["sent"] == result["correct"] + result["clear_errors"], result
    assert result["hung"] == result["lost"] == result["wrong"] == result["unclear"] == 0, result
    assert result["kills"] >= 3, result  # the chaos really happened
    assert result["correct"] >= REQUESTS // 2, result  # and the deployment kept serving through it
    # Afterwards it heals: three ready replicas, answering.
    swell.wait_for(
        pushed, lambda v: sum(r["state"] == "ready" for r in v["replicas"]) == 3, timeout=60, what="healed"
    )
    response = swell.http.post(swell.predict_path(pushed), json={"i": 5})
    assert response.status_code == 200 and response.json()["double"] == 10
    assert swell.patch(pushed, min_replica=0).status_code == 200
