"""Async predict: its submit and completion rates against sync predict, and
whether a sync caller waits behind a backlog of async requests.

One ``swell serve`` (pinned to CPU 1; this script, its clients and its webhook
receiver on CPU 0), one published deployment of a model whose ``predict``
sleeps a fixed 20 ms, ``predict_concurrency: 4``, ``min_replica`` =
``max_replica`` = 2 (8 slots: at most 400 requests/s), warmed before measuring.
In one run:

- sync:  N requests through ``POST …/predict`` from C concurrent clients:
         requests/s, p50/p99 latency;
- async: the same N through ``POST …/async_predict`` from the same C clients,
         each with a webhook to a receiver in this script: submit rate (201s/s),
         submit latency (each 201 waits for a store write), and the completion
         rate (first submit until the last SUCCEEDED webhook; and until the
         last stored ``finished_at``, read back with ``GET /async_request/{id}``);
- fairness: a light sync stream (1 client, one request at a time) timed
         (a) on the idle deployment, (b) while B async requests stay queued on
         it, and (c) while B sync requests from B concurrent clients stay
         queued on it (the FIFO baseline).

Sync and async rounds alternate (``--rounds``, the best of each kept). Only
ratios between legs of one run are meaningful on a shared machine.

    python bench/async_throughput.py [--requests 1000] [--clients 16] [--backlog 1000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import _common
import _wrk
import httpx
from _common import console, out
from rich.table import Table

#: What every request carries; the model returns it with the time it slept.
MODEL_INPUT = {"text": "hello, swell"}
BODY = json.dumps(MODEL_INPUT).encode()
PREDICT_CONCURRENCY = 4
REPLICAS = 2

_CONFIG = """\
model_name: bench-sleep
description: predict() sleeps a fixed {sleep_ms} ms, for bench/async_throughput.py.
runtime:
  predict_concurrency: {concurrency}
resources:
  cpu: "1"
  memory: 512Mi
"""

_MODEL = '''\
"""Sleeps a fixed time per request: a model whose cost is time, not CPU.

``{{"gate": PATH}}`` instead holds its slot until the file PATH exists (two
minutes at most): the benchmark holds every slot that way while it queues a
backlog, which it could not build otherwise (the slots drain faster than the
server accepts async requests).
"""

import os
import time

SLEEP_S = {sleep_s!r}


class Model:
    def __init__(self, **kwargs):
        pass

    def load(self):
        pass

    def predict(self, model_input):
        gate = model_input.get("gate") if isinstance(model_input, dict) else None
        if gate:
            deadline = time.monotonic() + 120
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.005)
            return {{"gate": gate}}
        time.sleep(SLEEP_S)
        return {{"echo": model_input, "slept_s": SLEEP_S}}
'''


def sleep_package(sleep_ms: float) -> Path:
    """The model package, written to a temporary directory (removed at exit)."""
    root = Path(tempfile.mkdtemp(prefix="swell-bench-sleep-"))
    (root / "model").mkdir()
    (root / "config.yaml").write_text(_CONFIG.format(sleep_ms=sleep_ms, concurrency=PREDICT_CONCURRENCY))
    (root / "model" / "model.py").write_text(_MODEL.format(sleep_s=sleep_ms / 1000))
    return root


# --------------------------------------------------------------------------- webhook receiver


class WebhookReceiver:
    """A minimal HTTP/1.1 server on 127.0.0.1 in this script's event loop: keeps
    when each request's first webhook arrived and its status, answers 200."""

    def __init__(self) -> None:
        self.arrived: dict[str, tuple[float, str]] = {}
        self.total = 0  # distinct request ids seen
        self.duplicates = 0
        self.bad = 0
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length) if length else b""
                self._record(body)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, asyncio.CancelledError):
            pass  # the sender closed the connection, or the run is over
        finally:
            self._writers.discard(writer)
            writer.close()

    def _record(self, body: bytes) -> None:
        now = time.perf_counter()
        try:
            payload = json.loads(body)
            request_id, status = payload["request_id"], payload["status"]
        except (ValueError, KeyError, TypeError):
            self.bad += 1
            return
        if request_id in self.arrived:
            self.duplicates += 1
            return
        self.arrived[request_id] = (now, status)
        self.total += 1
        self._changed.set()

    async def wait_total(self, total: int, timeout: float) -> bool:
        """Until ``total`` distinct webhooks have arrived; False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.total < total:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
        return True


# --------------------------------------------------------------------------- load


def _ms(values: list[float], q: float) -> float:
    return round(_wrk.percentile(values, q) * 1000, 2)


async def drive(
    n: int, clients: int, send: Callable[[], Awaitable[tuple[int, Any]]]
) -> list[tuple[float, float, int, Any]]:
    """``n`` calls of ``send`` from ``clients`` concurrent workers:
    (start, end, status, payload) each, perf_counter seconds."""
    records: list[tuple[float, float, int, Any]] = []
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            try:
                status, payload = await send()
            except httpx.HTTPError as exc:
                status, payload = 0, repr(exc)
            records.append((started, time.perf_counter(), status, payload))

    await asyncio.gather(*(worker() for _ in range(min(clients, n))))
    return records


class Bench:
    """The deployment under test and what talks to it."""

    def __init__(self, server: _common.SwellServer, model_id: str, deployment_id: str,
                 receiver: WebhookReceiver, args: argparse.Namespace) -> None:
        self.server = server
        self.model_id = model_id
        self.deployment_id = deployment_id
        self.receiver = receiver
        self.args = args
        self.predict_url = server.predict_url(model_id, deployment_id)
        self.async_url = self.predict_url.removesuffix("/predict") + "/async_predict"
        self.async_body = json.dumps({"model_input": MODEL_INPUT, "webhook_endpoint": receiver.url}).encode()
        self.headers = {**server.headers, "Content-Type": "application/json"}
        many = args.clients + 2 * REPLICAS * PREDICT_CONCURRENCY + 8
        limits = httpx.Limits(max_connections=many, max_keepalive_connections=many)
        self.http = httpx.AsyncClient(headers=self.headers, limits=limits, timeout=120, trust_env=False)

    async def close(self) -> None:
        await self.http.aclose()

    async def predict(self, http: httpx.AsyncClient | None = None) -> tuple[int, Any]:
        reply = await (http or self.http).post(self.predict_url, content=BODY)
        return reply.status_code, None

    async def submit(self) -> tuple[int, Any]:
        reply = await self.http.post(self.async_url, content=self.async_body)
        return reply.status_code, reply.json().get("request_id") if reply.status_code == 201 else reply.text

    async def deployment(self) -> dict[str, Any]:
        reply = await self.http.get(f"{self.server.url}/v1/models/{self.model_id}/deployments/{self.deployment_id}")
        reply.raise_for_status()
        return reply.json()  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ throughput

    async def sync_round(self) -> dict[str, Any]:
        records = await drive(self.args.requests, self.args.clients, self.predict)
        ok = [r for r in records if r[2] == 200]
        span = max(r[1] for r in records) - min(r[0] for r in records)
        latencies = [r[1] - r[0] for r in ok]
        result = {
            "requests": len(records),
            "errors": len(records) - len(ok),
            "seconds": round(span, 3),
            "rps": round(len(ok) / span, 1),
            "p50_ms": _ms(latencies, 50),
            "p99_ms": _ms(latencies, 99),
        }
        console.log(f"sync: {result['rps']:,.0f} req/s, p50 {result['p50_ms']:.1f} ms, "
                    f"p99 {result['p99_ms']:.1f} ms, errors {result['errors']}")
        return result

    async def async_round(self) -> dict[str, Any]:
        base = self.receiver.total
        wall_first = time.time()
        first = time.perf_counter()
        records = await drive(self.args.requests, self.args.clients, self.submit)
        ok = [r for r in records if r[2] == 201]
        if len(ok) < len(records):
            console.log(f"[red]async: {len(records) - len(ok)} submits refused: {records[0][3]!r}")
        submit_span = max(r[1] for r in ok) - first
        submit_lat = [r[1] - r[0] for r in ok]
        arrived = await self.receiver.wait_total(base + len(ok), self.args.drain_timeout)
        ids = [r[3] for r in ok]
        got = [self.receiver.arrived[i] for i in ids if i in self.receiver.arrived]
        done = max(t for t, _ in got) if got else float("nan")
        succeeded = sum(1 for _, status in got if status == "SUCCEEDED")
        submitted_at = {r[3]: r[0] for r in ok}
        e2e = [self.receiver.arrived[i][0] - submitted_at[i] for i in ids if i in self.receiver.arrived]
        stored = await self._stored(ids, wall_first) if self.args.verify else {}
        complete_span = done - first
        result = {
            "requests": len(records),
            "submit_errors": len(records) - len(ok),
            "submit_seconds": round(submit_span, 3),
            "submit_rps": round(len(ok) / submit_span, 1),
            "submit_p50_ms": _ms(submit_lat, 50),
            "submit_p99_ms": _ms(submit_lat, 99),
            "webhooks": len(got),
            "all_webhooks_arrived": arrived,
            "succeeded": succeeded,
            "completion_seconds": round(complete_span, 3),
            "completion_rps": round(succeeded / complete_span, 1),
            "end_to_end_p50_ms": _ms(e2e, 50),
            "end_to_end_p99_ms": _ms(e2e, 99),
            **stored,
        }
        console.log(
            f"async: submit {result['submit_rps']:,.0f}/s (p50 {result['submit_p50_ms']:.1f} ms, "
            f"p99 {result['submit_p99_ms']:.1f} ms), all {succeeded} SUCCEEDED in "
            f"{complete_span:.2f} s: {result['completion_rps']:,.0f}/s"
            + (f" (stored: {stored['stored_completion_rps']:,.0f}/s)" if "stored_completion_rps" in stored else "")
        )
        return result

    async def _stored(self, ids: list[str], wall_first: float) -> dict[str, Any]:
        """Every request's stored status and finished_at, read back with GET."""
        pending = list(ids)
        rows: list[dict[str, Any]] = []

        async def fetch() -> tuple[int, Any]:
            reply = await self.http.get(f"{self.server.url}/async_request/{pending.pop()}")
            return reply.status_code, reply.json()

        for _, _, status, row in await drive(len(ids), self.args.clients, fetch):
            if status == 200:
                rows.append(row)
        finished = [datetime.fromisoformat(r["finished_at"]).timestamp() for r in rows if r.get("finished_at")]
        succeeded = sum(1 for r in rows if r["status"] == "SUCCEEDED")
        span = max(finished) - wall_first if finished else float("nan")
        return {
            "stored_succeeded": succeeded,
            "stored_completion_seconds": round(span, 3),
            "stored_completion_rps": round(succeeded / span, 1),
        }

    # ------------------------------------------------------------------ fairness

    async def light(self, count: int, seconds: float, until: Callable[[], bool] | None = None
                    ) -> tuple[list[tuple[float, float]], float, float]:
        """One client, one request at a time: ``count`` of them, or ``seconds``, or
        until ``until()`` says so, whichever comes first (at least one).
        (start, end) of each, and of the whole stream."""
        samples: list[tuple[float, float]] = []
        start = time.perf_counter()
        deadline = start + seconds
        while len(samples) < count and (
            not samples or (time.perf_counter() < deadline and (until is None or not until()))
        ):
            t0 = time.perf_counter()
            status, _ = await self.predict()
            if status != 200:
                raise SystemExit(f"light stream: Swell answered {status}")
            samples.append((t0, time.perf_counter()))
        return samples, start, time.perf_counter()

    async def sample_depth(self, samples: list[tuple[float, int, int]], stop: asyncio.Event) -> None:
        """The deployment's queued and in-flight counts, every 0.1 s until ``stop``."""
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                view = await self.deployment()
                samples.append((time.perf_counter(), int(view.get("queued", 0)), int(view.get("in_flight", 0))))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)

    async def fairness_leg(self, backlog: str) -> dict[str, Any]:
        """The light stream with no backlog, an async backlog or a sync backlog."""
        args = self.args
        depth: list[tuple[float, int, int]] = []
        stop_depth = asyncio.Event()
        sampler = asyncio.create_task(self.sample_depth(depth, stop_depth))
        extra: dict[str, Any] = {}
        try:
            if backlog == "none":
                samples, start, end = await self.light(args.light, args.light_seconds)
            elif backlog == "async":
                samples, start, end, extra = await self._behind_async(depth)
            else:
                samples, start, end, extra = await self._behind_sync()
        finally:
            stop_depth.set()
            await sampler
        kept = samples
        if backlog == "async":
            # Only requests that ended while the server still counted a backlog
            # (more queued than the light request itself): it drains as they run.
            last = max((t for t, q, _ in depth if q >= 2 and t >= start), default=start)
            kept = [x for x in samples if x[1] <= last]
            extra["samples_after_backlog_drained"] = len(samples) - len(kept)
            end = max((x[1] for x in kept), default=start)
        latencies = [e - s for s, e in kept] or [float("nan")]
        during = [q for t, q, _ in depth if start <= t <= end]
        result = {
            "backlog": backlog,
            "samples": len(kept),
            "seconds": round(end - start, 3),
            "p50_ms": _ms(latencies, 50),
            "p99_ms": _ms(latencies, 99),
            "max_ms": round(max(latencies) * 1000, 2),
            "queued_median": round(_wrk.percentile([float(q) for q in during], 50), 1) if during else None,
            "queued_min": min(during) if during else None,
            **extra,
        }
        console.log(
            f"light sync stream, backlog {backlog}: {len(kept)} requests, p50 {result['p50_ms']:.1f} ms, "
            f"p99 {result['p99_ms']:.1f} ms; queued median {result['queued_median']}, min {result['queued_min']}"
        )
        return result

    async def _behind_async(self, depth: list[tuple[float, int, int]]
                            ) -> tuple[list[tuple[float, float]], float, float, dict[str, Any]]:
        """B async requests queued behind every slot held shut, the slots let
        go, and the light stream started at once while the backlog drains."""
        args = self.args
        slots = REPLICAS * PREDICT_CONCURRENCY
        base = self.receiver.total
        gate = Path(tempfile.mkdtemp(prefix="swell-bench-gate-")) / "open"
        holders = [asyncio.create_task(self.http.post(self.predict_url, json={"gate": str(gate)}))
                   for _ in range(slots)]
        try:
            deadline = time.monotonic() + 30
            while (await self.deployment()).get("in_flight", 0) < slots:
                if time.monotonic() > deadline:
                    raise SystemExit(f"async backlog: {slots} gate requests not all running after 30 s")
                await asyncio.sleep(0.05)
            fill_start = time.perf_counter()
            records = await drive(args.backlog, args.clients, self.submit)
            prefill_s = time.perf_counter() - fill_start
            accepted = sum(1 for r in records if r[2] == 201)
            queued = (await self.deployment()).get("queued", 0)
        finally:
            gate.touch()
            replies = await asyncio.gather(*holders, return_exceptions=True)
        opened = time.perf_counter()
        if any(not isinstance(r, httpx.Response) or r.status_code != 200 for r in replies):
            raise SystemExit(f"async backlog: the gate requests answered {replies!r}"[:500])

        def drained() -> bool:  # the latest depth sample, taken after the gate opened, shows no backlog
            return bool(depth) and depth[-1][0] > opened + 0.05 and depth[-1][1] <= 1

        samples, start, end = await self.light(args.light, args.light_seconds, until=drained)
        all_done = await self.receiver.wait_total(base + accepted, args.drain_timeout)
        finished = list(self.receiver.arrived.values())[base:]
        last = max((t for t, _ in finished), default=opened)
        gate.unlink(missing_ok=True)
        gate.parent.rmdir()
        return samples, start, end, {
            "async_submitted": accepted,
            "async_refused": len(records) - accepted,
            "async_queued_at_gate_open": queued,
            "async_succeeded": sum(1 for _, status in finished if status == "SUCCEEDED"),
            "async_drained": all_done,
            "prefill_seconds": round(prefill_s, 3),
            "gate_open_to_stream_ms": round((start - opened) * 1000, 2),
            "async_drain_seconds": round(last - opened, 3),
            "async_drain_rps": round(len(finished) / (last - opened), 1) if last > opened else None,
        }

    async def _behind_sync(self) -> tuple[list[tuple[float, float]], float, float, dict[str, Any]]:
        """B concurrent clients each sending sync requests one after another
        (B requests always queued or running) while the light stream runs."""
        args = self.args
        stop = asyncio.Event()
        done = 0
        errors: list[str] = []
        head = _request_head(self.predict_url, self.server.headers, len(BODY))

        async def client() -> None:
            # A bare keep-alive connection each: httpx's pool costs O(connections)
            # per request, which at a thousand makes the client the bottleneck.
            nonlocal done
            connection: RawConnection | None = None
            while not stop.is_set():
                try:
                    if connection is None:
                        connection = await RawConnection.open(self.predict_url)
                    status = await connection.exchange(head + BODY)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    status, connection = 0, None
                    errors.append(repr(exc))
                if status == 200:
                    done += 1
                elif status:
                    errors.append(f"HTTP {status}")
                if status != 200:
                    await asyncio.sleep(0.05)
            if connection is not None:
                connection.close()

        workers = [asyncio.create_task(client()) for _ in range(args.backlog)]
        try:
            # Queued at the server once its count says so (B less the slots running).
            target = max(1, int(0.9 * (args.backlog - REPLICAS * PREDICT_CONCURRENCY)))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if (await self.deployment()).get("queued", 0) >= target:
                    break
                await asyncio.sleep(0.1)
            else:
                console.log(f"[yellow]sync backlog: fewer than {target} queued after 60 s; timing anyway")
            done_before = done
            samples, start, end = await self.light(args.fifo_light, args.fifo_seconds)
            sync_done = done - done_before
        finally:
            stop.set()
            _, unfinished = await asyncio.wait(workers, timeout=args.drain_timeout)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        if errors:
            console.log(f"[yellow]sync backlog: {len(errors)} failed requests, e.g. {errors[0]}")
        return samples, start, end, {
            "sync_backlog_clients": args.backlog,
            "sync_backlog_errors": len(errors),
            "sync_backlog_drained": not unfinished,
            "sync_done_per_s_during_stream": round(sync_done / (end - start), 1),
        }


def _request_head(url: str, headers: dict[str, str], length: int) -> bytes:
    parts = urlsplit(url)
    lines = [f"POST {parts.path} HTTP/1.1", f"host: {parts.netloc}", "content-type: application/json",
             f"content-length: {length}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawConnection:
    """One keep-alive HTTP/1.1 connection: a request out, its status back (the
    body read by its content-length and dropped)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str) -> RawConnection:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length is None:
            raise ValueError(f"an answer without content-length: {head[:200]!r}")
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


# --------------------------------------------------------------------------- setup


def deploy(server: _common.SwellServer, package: Path) -> tuple[str, str]:
    pushed = server.push(package)
    model_id, deployment_id = pushed["model_id"], pushed["deployment_id"]
    path = f"/v1/models/{model_id}/deployments/{deployment_id}"
    server.api("PATCH", path + "/autoscaling_settings", {"min_replica": REPLICAS, "max_replica": REPLICAS})
    view = _wrk.wait_until(
        lambda: (v := server.api("GET", path))["replicas_ready"] >= REPLICAS and v,
        60, f"{REPLICAS} replicas ready",
    )
    console.log(f"deployment {deployment_id}: {view['replicas_ready']} replicas ready, "
                f"predict_concurrency {view.get('predict_concurrency')}")
    return model_id, deployment_id


async def measure(server: _common.SwellServer, model_id: str, deployment_id: str,
                  args: argparse.Namespace, advance: Callable[[], None]) -> dict[str, Any]:
    receiver = WebhookReceiver()
    await receiver.start()
    bench = Bench(server, model_id, deployment_id, receiver, args)
    try:
        async with asyncio.timeout(args.budget):
            # Warm: both paths, the webhook sender's client, the store, the connections.
            warm = await drive(args.warmup, args.clients, bench.predict)
            if any(r[2] != 200 for r in warm):
                raise SystemExit(f"warm-up: Swell answered {[r[2] for r in warm if r[2] != 200][:5]}")
            warm_async = await drive(args.warmup, args.clients, bench.submit)
            if any(r[2] != 201 for r in warm_async):
                raise SystemExit(f"warm-up: async_predict answered {[r[3] for r in warm_async if r[2] != 201][:3]}")
            if not await receiver.wait_total(len(warm_async), args.drain_timeout):
                raise SystemExit(f"warm-up: {receiver.total} of {len(warm_async)} webhooks arrived")
            console.log(f"warm: {args.warmup} sync and {args.warmup} async requests")
            advance()

            sync_rounds: list[dict[str, Any]] = []
            async_rounds: list[dict[str, Any]] = []
            for _ in range(args.rounds):
                sync_rounds.append(await bench.sync_round())
                advance()
                async_rounds.append(await bench.async_round())
                advance()

            fairness = {}
            for leg in ("none", "async", "sync"):
                fairness[leg] = await bench.fairness_leg(leg)
                advance()
            return {
                "sync_rounds": sync_rounds,
                "async_rounds": async_rounds,
                "fairness": fairness,
                "webhook_duplicates": receiver.duplicates,
                "webhook_unreadable": receiver.bad,
            }
    except TimeoutError:
        raise SystemExit(f"the run took more than --budget {args.budget:g} s") from None
    finally:
        await bench.close()
        await receiver.close()


def _best(rounds: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The round with the most of ``key``: interference only ever slows a round down."""
    best = dict(max(rounds, key=lambda r: r[key]))
    best[f"rounds_{key}"] = [r[key] for r in rounds]
    return best


def ratios(sync: dict[str, Any], async_: dict[str, Any], fairness: dict[str, dict[str, Any]]) -> dict[str, Any]:
    idle, behind_async, behind_sync = fairness["none"], fairness["async"], fairness["sync"]
    r: dict[str, Any] = {
        "async_completion_over_sync": round(async_["completion_rps"] / sync["rps"], 3),
        "async_submit_over_sync": round(async_["submit_rps"] / sync["rps"], 3),
        "behind_async_over_idle_p50": round(behind_async["p50_ms"] / idle["p50_ms"], 2),
        "behind_async_over_idle_p99": round(behind_async["p99_ms"] / idle["p99_ms"], 2),
        "behind_sync_over_idle_p50": round(behind_sync["p50_ms"] / idle["p50_ms"], 1),
        "behind_sync_over_idle_p99": round(behind_sync["p99_ms"] / idle["p99_ms"], 1),
        "behind_sync_over_behind_async_p50": round(behind_sync["p50_ms"] / behind_async["p50_ms"], 1),
    }
    if behind_async.get("async_drain_rps"):
        r["async_drain_over_sync"] = round(behind_async["async_drain_rps"] / sync["rps"], 3)
    if "stored_completion_rps" in async_:
        r["async_stored_completion_over_sync"] = round(async_["stored_completion_rps"] / sync["rps"], 3)
    return r


def tables(sync: dict[str, Any], async_: dict[str, Any], fairness: dict[str, dict[str, Any]],
           ratio: dict[str, Any], args: argparse.Namespace) -> list[Table]:
    slots = REPLICAS * PREDICT_CONCURRENCY
    t = Table(title=f"{args.requests} requests from {args.clients} clients; predict sleeps {args.sleep_ms:g} ms, "
                    f"{slots} slots (≤ {slots / (args.sleep_ms / 1000):,.0f}/s); best of {args.rounds}",
              caption="¹ rate: first submit → last SUCCEEDED webhook; p50/p99: each request's submit → its webhook.\n"
                      "² the async backlog of the fairness leg (b) queued behind held slots, then let go.")
    for column in ("leg", "rate /s", "p50 ms", "p99 ms", "vs sync"):
        t.add_column(column, justify="right")
    t.add_row("sync predict (200s)", f"{sync['rps']:,.0f}", f"{sync['p50_ms']:.1f}", f"{sync['p99_ms']:.1f}", "1.00")
    t.add_row("async submit (201s)", f"{async_['submit_rps']:,.0f}", f"{async_['submit_p50_ms']:.1f}",
              f"{async_['submit_p99_ms']:.1f}", f"{ratio['async_submit_over_sync']:.2f}")
    t.add_row("async completion (webhooks) ¹", f"{async_['completion_rps']:,.0f}", f"{async_['end_to_end_p50_ms']:.0f}",
              f"{async_['end_to_end_p99_ms']:.0f}", f"[bold]{ratio['async_completion_over_sync']:.2f}")
    if "stored_completion_rps" in async_:
        t.add_row("async completion (stored)", f"{async_['stored_completion_rps']:,.0f}", "-", "-",
                  f"{ratio['async_stored_completion_over_sync']:.2f}")
    drain = fairness["async"]
    if "async_drain_over_sync" in ratio:
        t.add_row(f"async lane drain ({drain['async_queued_at_gate_open']} queued) ²", f"{drain['async_drain_rps']:,.0f}",
                  "-", "-", f"{ratio['async_drain_over_sync']:.2f}")

    f = Table(title="a light sync stream (1 client), its latency by what else waits on the deployment",
              caption="(b): only requests that ended while the server still counted a backlog; "
                      "(c): B clients each sending one request after another")
    for column in ("backlog", "requests", "queued (median)", "p50 ms", "p99 ms", "p50 vs idle", "p99 vs idle"):
        f.add_column(column, justify="right")
    idle = fairness["none"]
    f.add_row("(a) none", str(idle["samples"]), str(idle["queued_median"]), f"{idle['p50_ms']:.1f}",
              f"{idle['p99_ms']:.1f}", "1.00", "1.00")
    a = fairness["async"]
    f.add_row(f"(b) {args.backlog} async", str(a["samples"]), str(a["queued_median"]), f"{a['p50_ms']:.1f}",
              f"{a['p99_ms']:.1f}", f"[bold]{ratio['behind_async_over_idle_p50']:.2f}",
              f"{ratio['behind_async_over_idle_p99']:.2f}")
    s = fairness["sync"]
    f.add_row(f"(c) {args.backlog} sync (FIFO)", str(s["samples"]), str(s["queued_median"]), f"{s['p50_ms']:,.1f}",
              f"{s['p99_ms']:,.1f}", f"{ratio['behind_sync_over_idle_p50']:,.1f}",
              f"{ratio['behind_sync_over_idle_p99']:,.1f}")
    return [t, f]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per sync and async round (default 1000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients for those (default 16)")
    parser.add_argument("--rounds", type=int, default=2, help="sync/async rounds, in turns; the best is kept")
    parser.add_argument("--backlog", type=int, default=1000, help="requests kept queued for (b) and (c)")
    parser.add_argument("--light", type=int, default=100, help="light-stream requests for (a) and (b)")
    parser.add_argument("--light-seconds", type=float, default=20, help="at most this long for (a) and (b)")
    parser.add_argument("--fifo-light", type=int, default=5,
                        help="light-stream requests for (c): each waits the whole sync backlog")
    parser.add_argument("--fifo-seconds", type=float, default=20, help="at most this long for (c)")
    parser.add_argument("--sleep-ms", type=float, default=20, help="what predict sleeps (default 20)")
    parser.add_argument("--warmup", type=int, default=200, help="sync and async requests before measuring")
    parser.add_argument("--budget", type=float, default=300, help="seconds for all the measuring at most")
    parser.add_argument("--drain-timeout", type=float, default=120, help="seconds to wait for a backlog's end")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip reading every async request back (GET) for its stored finish time")
    args = parser.parse_args()

    # The clients and the webhook receiver on wrk's core; the server has the other.
    with contextlib.suppress(OSError, ValueError):
        os.sched_setaffinity(0, {int(_wrk.WRK_CPU)})
    started = time.monotonic()
    package = sleep_package(args.sleep_ms)
    try:
        with _common.progress() as bar:
            task = bar.add_task("async throughput: setup", total=2 + 2 * args.rounds + 3)
            with _common.SwellServer() as server:
                model_id, deployment_id = deploy(server, package)
                bar.advance(task)
                bar.update(task, description="async throughput")
                data = asyncio.run(measure(server, model_id, deployment_id, args, lambda: bar.advance(task)))
    finally:
        for path in sorted(package.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        package.rmdir()

    sync = _best(data["sync_rounds"], "rps")
    async_ = _best(data["async_rounds"], "completion_rps")
    ratio = ratios(sync, async_, data["fairness"])
    for table in tables(sync, async_, data["fairness"], ratio, args):
        out.print(table)
    out.print(
        f"async completion rate / sync rate: {ratio['async_completion_over_sync']:.2f}; "
        f"a sync request behind {args.backlog} queued async requests: p50 {ratio['behind_async_over_idle_p50']:.2f}× idle, "
        f"behind {args.backlog} queued sync requests: {ratio['behind_sync_over_idle_p50']:,.1f}× idle"
    )
    _common.write_result(
        "async_throughput",
        {
            "settings": {
                "requests": args.requests,
                "clients": args.clients,
                "rounds": args.rounds,
                "backlog": args.backlog,
                "light": args.light,
                "fifo_light": args.fifo_light,
                "sleep_ms": args.sleep_ms,
                "predict_concurrency": PREDICT_CONCURRENCY,
                "replicas": REPLICAS,
                "warmup": args.warmup,
            },
            "run_seconds": round(time.monotonic() - started, 1),
            "legs": {
                "sync": sync,
                "async": async_,
                "fairness": data["fairness"],
            },
            "rounds": {"sync": data["sync_rounds"], "async": data["async_rounds"]},
            "webhook_duplicates": data["webhook_duplicates"],
            "webhook_unreadable": data["webhook_unreadable"],
            "ratios": ratio,
        },
    )
    problems = problems_in(data)
    if problems:
        raise SystemExit("not every request succeeded: " + "; ".join(problems))


def problems_in(data: dict[str, Any]) -> list[str]:
    """Requests that failed or never finished: the figures are not worth much then."""
    found = []
    for i, r in enumerate(data["sync_rounds"], 1):
        if r["errors"]:
            found.append(f"sync round {i}: {r['errors']} errors")
    for i, r in enumerate(data["async_rounds"], 1):
        if r["submit_errors"] or r["succeeded"] < r["requests"]:
            found.append(f"async round {i}: {r['submit_errors']} refused, {r['succeeded']} of {r['requests']} SUCCEEDED")
    behind = data["fairness"]["async"]
    if behind["async_refused"] or behind["async_succeeded"] < behind["async_submitted"]:
        found.append(f"async backlog: {behind['async_refused']} refused, "
                     f"{behind['async_succeeded']} of {behind['async_submitted']} SUCCEEDED")
    if data["fairness"]["sync"]["sync_backlog_errors"]:
        found.append(f"sync backlog: {data['fairness']['sync']['sync_backlog_errors']} errors")
    return found


if __name__ == "__main__":
    main()
