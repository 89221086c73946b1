"""Async predict: requests accepted with an id, kept in the store, run when capacity allows.

A request is written to the store before its ``201`` is sent, so a server
killed at any moment finds every accepted request again when it starts: those
that were queued or running run (again: delivery to the model is at least
once), those that finished keep their one stored result, and webhooks not yet
delivered are sent.

While it waits, a request sits in its deployment's async lane
(:meth:`~swell.serving.DeploymentRouter.call`): it counts toward the
deployment's concurrency, so it wakes and scales the deployment as a sync
request does, and free replica slots alternate between the lanes so neither
kind starves the other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from swell.control._ids import new_id
from swell.control._limits import LimitExceeded
from swell.control._secrets import SecretBox
from swell.control._store import Store, Transaction
from swell.control._time import iso
from swell.control._webhooks import WebhookSender, check_webhook_url
from swell.serving import DeploymentRouter, MetricFamily, Unavailable

__all__ = [
    "AsyncPredictRequest",
    "AsyncQueue",
    "AsyncStatus",
    "RetryConfig",
    "WebhookStatus",
]

log = logging.getLogger("swell.async")

MAX_TIME_IN_QUEUE = 72 * 3600
WEBHOOK_SECRET = "webhook_secret"


class AsyncStatus(str, Enum):
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    CANCELED = "CANCELED"


UNFINISHED = (AsyncStatus.QUEUED.value, AsyncStatus.IN_PROGRESS.value)


class WebhookStatus(str, Enum):
    NONE = "NO_WEBHOOK_PROVIDED"
    PENDING = "PENDING"
    DELIVERED = "SUCCEEDED"
    FAILED = "FAILED"


class RetryConfig(BaseModel):
    """How often a failed inference (the model answered 5xx or 429, or no replica
    could run it) is tried again, and how long to wait between tries."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(1, ge=1, le=10)
    initial_delay_ms: int = Field(1000, ge=0, le=60_000)
    max_delay_ms: int = Field(5000, ge=0, le=300_000)

    def delay(self, failures: int) -> float:
        """Seconds before the try after ``failures`` failed ones (doubling, capped)."""
        return min(self.max_delay_ms, self.initial_delay_ms * 2 ** (failures - 1)) / 1000


class AsyncPredictRequest(BaseModel):
    """The body of ``POST …/async_predict``."""

    model_config = ConfigDict(extra="forbid")

    model_input: Any = Field(..., description="What the model's predict() receives, as in a sync request")
    webhook_endpoint: str | None = Field(None, description="An http(s) URL that receives the result")
    priority: int = Field(1, ge=0, le=2, description="0 runs first, 2 last")
    max_time_in_queue_seconds: int = Field(600, ge=10, le=MAX_TIME_IN_QUEUE)
    inference_retry_config: RetryConfig | None = None

    @field_validator("webhook_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_webhook_url(value)

    @field_validator("model_input")
    @classmethod
    def _json(cls, value: Any) -> Any:
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise ValueError("JSON without NaN or Infinity (a model cannot be sent those)") from None
        return value

    def input_bytes(self) -> bytes:
        """What the model is sent: ``model_input`` as compact JSON."""
        return json.dumps(self.model_input, separators=(",", ":"), allow_nan=False).encode()


class _GroupCommit:
    """Writes of many requests in one transaction: while one commits, the next
    ones gather, so under load a commit serves many requests and an idle
    server pays nothing for waiting.  A batch that fails is written again one
    write at a time, so one bad write fails only its own caller."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: list[tuple[Callable[[Transaction], Awaitable[Any]], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, op: Callable[[Transaction], Awaitable[Any]]) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        return await fut

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                async with self._store.transaction() as tx:
                    results = [await op(tx) for op, _ in batch]
            except Exception as exc:  # noqa: BLE001 (whatever failed, it goes back to the callers)
                if len(batch) == 1:
                    _settle(batch[0][1], error=exc)
                    continue
                for op, fut in batch:
                    try:
                        async with self._store.transaction() as tx:
                            _settle(fut, await op(tx))
                    except Exception as alone:  # noqa: BLE001 (to its own caller)
                        _settle(fut, error=alone)
            else:
                for (_, fut), result in zip(batch, results, strict=True):
                    _settle(fut, result)

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)


def _settle(fut: asyncio.Future[Any], result: Any = None, *, error: BaseException | None = None) -> None:
    if fut.done():  # its caller was cancelled
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


@dataclass(eq=False)
class _Live:
    """An unfinished request this server is running."""

    id: str
    model_id: str
    deployment_id: str
    priority: int
    model_input: bytes
    webhook_endpoint: str | None
    retry: RetryConfig
    expires_at: float
    status: AsyncStatus = AsyncStatus.QUEUED
    attempts: int = 0
    started_at: float | None = None
    task: asyncio.Task[None] | None = None
    key_id: str | None = None  # who sent it (None: resumed after a restart), for the quota


class AsyncQueue:
    """Accepts, runs, reports and resumes async requests.

    ``routers(deployment_id)`` gives the router that runs a deployment's
    requests, or ``None`` if it is gone or deactivated (the request fails).
    """

    def __init__(
        self,
        store: Store,
        routers: Callable[[str], DeploymentRouter | None],
        secret_box: SecretBox,
        *,
        wall: Callable[[], float],
        sender: WebhookSender | None = None,
        max_bytes_per_key: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.store = store
        # Inputs accepted and not finished, by key and in all: a quota, so that
        # one key cannot fill the server's memory and the store.
        self.max_bytes_per_key = max_bytes_per_key
        self.max_bytes = max_bytes
        self._held: dict[str | None, int] = {}
        self._held_total = 0
        self._writes = _GroupCommit(store)
        self._routers = routers
        self._box = secret_box
        self._wall = wall
        self.sender = sender or WebhookSender()
        self._live: dict[str, _Live] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # since this server started, for /metrics
        self.finished: dict[str, int] = {}
        self.webhook_outcomes: dict[str, int] = {}
        self._secret: str | None = None
        self._secret_lock = asyncio.Lock()

    # ------------------------------------------------------------------ life

    async def start(self) -> int:
        """Resume what a stopped server left: returns how many requests and webhooks."""
        rows = await self.store.unfinished_async_requests(
            unfinished=UNFINISHED, webhook_pending=WebhookStatus.PENDING.value
        )
        for row in rows:
            if row["status"] in UNFINISHED:
                live = _live_from_row(row)
                self._hold(live)
                self._run_later(live)
            else:
                self._spawn(self._deliver(row))
        if rows:
            log.info("resumed %d async request(s) and webhook(s) from before the restart", len(rows))
        return len(rows)

    async def close(self) -> None:
        """Stop running; what is unfinished stays in the store for the next start."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._writes.close()
        await self.sender.close()

    @property
    def unfinished(self) -> int:
        return len(self._live)

    def metric_families(self) -> tuple[MetricFamily, ...]:
        """The queue's depth and outcomes, as Prometheus families (read at scrape time)."""
        waiting = MetricFamily(
            "swell_async_requests", "gauge", "Async requests not finished yet, by deployment and status"
        )
        counts: dict[tuple[str, str], int] = {}
        for live in self._live.values():
            key = (live.deployment_id, live.status.value)
            counts[key] = counts.get(key, 0) + 1
        for (deployment_id, status), count in sorted(counts.items()):
            waiting.add((("deployment", deployment_id), ("status", status)), count)
        finished = MetricFamily(
            "swell_async_requests_finished", "counter", "Async requests finished since the server started, by status"
        )
        for status, count in sorted(self.finished.items()):
            finished.add((("status", status),), count)
        webhooks = MetricFamily(
            "swell_webhook_deliveries", "counter", "Webhook tries since the server started, by outcome"
        )
        for outcome, count in sorted(self.webhook_outcomes.items()):
            webhooks.add((("outcome", outcome),), count)
        return waiting, finished, webhooks

    async def webhook_secret(self) -> str:
        """The workspace's signing secret (created on first use, kept encrypted)."""
        async with self._secret_lock:
            if self._secret is None:
                stored = await self.store.workspace_value(WEBHOOK_SECRET)
                if stored is not None:
                    self._secret = self._box.decrypt(stored)
                else:
                    secret = "whsec_" + secrets.token_urlsafe(32)
                    async with self.store.transaction() as tx:
                        await tx.put_workspace_value(WEBHOOK_SECRET, self._box.encrypt(secret), self._wall())
                    self._secret = secret
            return self._secret

    # ------------------------------------------------------------------ API

    async def submit(
        self, model_id: str, deployment_id: str, request: AsyncPredictRequest, *, key_id: str | None = None
    ) -> dict[str, Any]:
        """Keep the request (in the store first), then queue it.

        :class:`LimitExceeded` (413 or 429) when its input would take the
        key's or the server's held async inputs past their quota.
        """
        now = self._wall()
        retry = request.inference_retry_config or RetryConfig()
        live = _Live(
            id=new_id(16),
            model_id=model_id,
            deployment_id=deployment_id,
            priority=request.priority,
            model_input=request.input_bytes(),
            webhook_endpoint=request.webhook_endpoint,
            retry=retry,
            expires_at=now + request.max_time_in_queue_seconds,
            key_id=key_id,
        )
        self._check_quota(key_id, len(live.model_input))
        self._hold(live)  # no await since the check: concurrent submits see each other
        row = {
            "id": live.id,
            "model_id": model_id,
            "deployment_id": deployment_id,
            "status": AsyncStatus.QUEUED.value,
            "priority": live.priority,
            "model_input": live.model_input,
            "webhook_endpoint": live.webhook_endpoint,
            "retry": retry.model_dump(),
            "created_at": now,
            "expires_at": live.expires_at,
            "attempts": 0,
            "webhook_status": (WebhookStatus.PENDING if live.webhook_endpoint else WebhookStatus.NONE).value,
            "webhook_attempts": 0,
        }
        # Once written it runs, even if this caller is gone before the 201.
        stored = asyncio.ensure_future(self._writes.write(lambda tx: tx.add_async_request(row)))
        stored.add_done_callback(lambda t: self._release(live) if t.cancelled() or t.exception() else self._run_later(live))
        await asyncio.shield(stored)
        return {"request_id": live.id}

    async def view(self, request_id: str) -> dict[str, Any] | None:
        row = await self.store.async_request(request_id)
        if row is None:
            return None
        live = self._live.get(request_id)
        # The row is the truth once it says finished; before, this server knows
        # better (the row says QUEUED until then, see _started).
        status = live.status.value if live is not None and live.status.value in UNFINISHED else row["status"]
        errors = [{"code": _error_code(status), "message": row["error"]}] if row["error"] else []
        return {
            "request_id": row["id"],
            "model_id": row["model_id"],
            "deployment_id": row["deployment_id"],
            "status": status,
            "priority": row["priority"],
            "attempts": max(row["attempts"], live.attempts if live is not None else 0),
            "created_at": iso(row["created_at"]),
            "expires_at": iso(row["expires_at"]),
            "started_at": iso(live.started_at if live is not None else row["started_at"]),
            "finished_at": iso(row["finished_at"]),
            "result": _decode(row["result"]),
            "result_status": row["result_status"],
            "errors": errors,
            "webhook_endpoint": row["webhook_endpoint"],
            "webhook_status": row["webhook_status"],
            "webhook_attempts": row["webhook_attempts"],
            "webhook_error": row["webhook_error"],
            "webhook_delivered_at": iso(row["webhook_at"]) if row["webhook_status"] == WebhookStatus.DELIVERED else None,
        }

    async def cancel(self, request_id: str) -> tuple[AsyncStatus | None, bool]:
        """Cancel a queued request: its status now if this server is running it
        (None: it has finished, or does not exist), and whether this call cancelled it."""
        live = self._live.get(request_id)
        if live is None:
            return None, False
        if live.status is not AsyncStatus.QUEUED:
            return live.status, False
        live.status = AsyncStatus.CANCELED
        if live.task is not None:
            live.task.cancel()
        await self._finish(live, AsyncStatus.CANCELED, error="canceled on request", webhook=False)
        return AsyncStatus.CANCELED, True

    # ------------------------------------------------------------------ quota

    def held(self, key_id: str | None = None) -> int:
        """Bytes of async input accepted and not finished: the key's, or (None) all."""
        return self._held_total if key_id is None else self._held.get(key_id, 0)

    def _check_quota(self, key_id: str | None, size: int) -> None:
        per_key, total = self.max_bytes_per_key, self.max_bytes
        if per_key is not None and key_id is not None:
            if size > per_key:
                raise LimitExceeded(
                    413, "async input too large",
                    f"the model_input is {size} bytes, more than an API key may have queued ({per_key} bytes, "
                    "set by --async-max-mb-per-key)",
                    per_key,
                )
            held = self._held.get(key_id, 0)
            if held + size > per_key:
                raise LimitExceeded(
                    429, "async quota exceeded",
                    f"this API key has {held} bytes of async input waiting or running; {size} more would pass its "
                    f"quota of {per_key} bytes (set by --async-max-mb-per-key): wait for some to finish",
                    per_key, retry_after=5,
                )
        if total is not None and self._held_total + size > total:
            raise LimitExceeded(
                429, "async quota exceeded",
                f"the server holds {self._held_total} bytes of async input waiting or running; {size} more would "
                f"pass its quota of {total} bytes (set by --async-max-mb): wait for some to finish",
                total, retry_after=5,
            )

    def _hold(self, live: _Live) -> None:
        size = len(live.model_input)
        self._held[live.key_id] = self._held.get(live.key_id, 0) + size
        self._held_total += size

    def _release(self, live: _Live) -> None:
        size = len(live.model_input)
        left = self._held.get(live.key_id, 0) - size
        if left > 0:
            self._held[live.key_id] = left
        else:
            self._held.pop(live.key_id, None)
        self._held_total -= size

    # ------------------------------------------------------------------ running

    def _run_later(self, live: _Live) -> None:
        self._live[live.id] = live
        live.task = self._spawn(self._run(live))

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, live: _Live) -> None:
        failures = 0
        while True:
            router = self._routers(live.deployment_id)
            if router is None:
                await self._finish(
                    live,
                    AsyncStatus.FAILED,
                    error=f"deployment {live.deployment_id} is deleted or deactivated; the request was not run",
                )
                return
            queue_timeout = live.expires_at - self._wall() if failures == 0 else None
            if queue_timeout is not None and queue_timeout <= 0:
                await self._expire(live)
                return
            result: bytes | None = None
            try:
                status, result = await router.call(
                    live.model_input,
                    priority=live.priority,
                    queue_timeout=queue_timeout,
                    on_start=lambda: self._started(live),
                )
                error = f"the model answered HTTP {status}: {_short(result)}"
            except TimeoutError:
                await self._expire(live)
                return
            except Unavailable as exc:  # no replica could run it (failed to load, crash loop, replica died)
                status, error = exc.status, f"{exc.error}: {exc.reason}"
            except asyncio.CancelledError:
                raise  # cancelled, or the server stops: the store keeps it as it was
            except Exception as exc:  # a bug must not lose the request silently
                log.exception("async request %s: running it failed", live.id)
                status, error = 500, f"internal error: {exc}"
            if 200 <= status < 300:
                await self._finish(live, AsyncStatus.SUCCEEDED, result=result, result_status=status)
                return
            retryable = status >= 500 or status == 429
            failures += 1
            if not retryable or failures >= live.retry.max_attempts:
                tries = f" (attempt {failures} of {live.retry.max_attempts})" if failures > 1 else ""
                await self._finish(
                    live, AsyncStatus.FAILED, result=result, result_status=status, error=error + tries
                )
                return
            live.status = AsyncStatus.QUEUED
            await asyncio.sleep(live.retry.delay(failures))

    def _started(self, live: _Live) -> None:
        # Kept in memory only: the row says QUEUED until the request finishes,
        # which is what a restart needs to know (it runs again either way), and
        # it saves a write per request.  GET shows this server's live status.
        live.status = AsyncStatus.IN_PROGRESS
        live.attempts += 1
        if live.started_at is None:
            live.started_at = self._wall()

    async def _expire(self, live: _Live) -> None:
        await self._finish(
            live,
            AsyncStatus.EXPIRED,
            error="no replica took the request within its max_time_in_queue_seconds",
        )

    async def _write(self, request_id: str, only_if: tuple[str, ...] | None, **values: Any) -> bool:
        """One conditional write, tried again while the store is unreachable."""
        delay = 0.5
        while True:
            try:
                changed: bool = await self._writes.write(
                    lambda tx: tx.update_async_request(request_id, only_if=only_if, **values)
                )
                return changed
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (a store that is down comes back; the request must not be lost)
                log.warning("async request %s: cannot write to the store (%s); trying again in %g s", request_id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _finish(
        self,
        live: _Live,
        status: AsyncStatus,
        *,
        result: bytes | None = None,
        result_status: int | None = None,
        error: str | None = None,
        webhook: bool = True,
    ) -> None:
        """Store the outcome once (a request that finished already keeps its
        first), then send the webhook."""
        live.status = status
        send = webhook and live.webhook_endpoint is not None
        values = {
            "status": status.value,
            "finished_at": self._wall(),
            "result": result,
            "result_status": result_status,
            "error": error,
            "attempts": live.attempts,
            "started_at": live.started_at,
            "webhook_status": (WebhookStatus.PENDING if send else WebhookStatus.NONE).value,
        }
        stored = await self._write(live.id, UNFINISHED, **values)
        if self._live.pop(live.id, None) is not None:
            self._release(live)
        if not stored:
            return
        self.finished[status.value] = self.finished.get(status.value, 0) + 1
        if send:
            row = {**values, "id": live.id, "model_id": live.model_id, "deployment_id": live.deployment_id,
                   "webhook_endpoint": live.webhook_endpoint, "webhook_attempts": 0}
            self._spawn(self._deliver(row))

    # ------------------------------------------------------------------ webhooks

    def _count_webhook(self, outcome: str) -> None:
        self.webhook_outcomes[outcome] = self.webhook_outcomes.get(outcome, 0) + 1

    async def _deliver(self, row: Mapping[str, Any]) -> None:
        request_id = row["id"]
        body = webhook_body(row, time=self._wall())

        async def failed_try(attempts: int, error: str | None) -> None:
            self._count_webhook("retried")
            await self._write(request_id, None, webhook_attempts=attempts, webhook_error=error)

        outcome = await self.sender.send(
            row["webhook_endpoint"],
            body,
            secret=await self.webhook_secret(),
            request_id=request_id,
            already=row["webhook_attempts"] or 0,
            on_attempt=failed_try,
        )
        await self._write(
            request_id,
            None,
            webhook_status=(WebhookStatus.DELIVERED if outcome.delivered else WebhookStatus.FAILED).value,
            webhook_attempts=outcome.attempts,
            webhook_error=outcome.error,
            webhook_at=self._wall(),
        )
        self._count_webhook("delivered" if outcome.delivered else "failed")
        if not outcome.delivered:
            log.warning("webhook for %s not delivered after %d attempts: %s", request_id, outcome.attempts, outcome.error)


def webhook_body(row: Mapping[str, Any], *, time: float) -> bytes:
    status = row["status"]
    errors = [{"code": _error_code(status), "message": row["error"]}] if row.get("error") else []
    payload = {
        "request_id": row["id"],
        "model_id": row["model_id"],
        "deployment_id": row["deployment_id"],
        "type": "async_request_completed",
        "time": iso(time),
        "status": status,
        "data": _decode(row.get("result")) if status == AsyncStatus.SUCCEEDED.value else None,
        "errors": errors,
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def _live_from_row(row: Mapping[str, Any]) -> _Live:
    return _Live(
        id=row["id"],
        model_id=row["model_id"],
        deployment_id=row["deployment_id"],
        priority=row["priority"],
        model_input=bytes(row["model_input"]),
        webhook_endpoint=row["webhook_endpoint"],
        retry=RetryConfig.model_validate(row["retry"] or {}),
        expires_at=row["expires_at"],
        attempts=row["attempts"] or 0,
    )


def _error_code(status: str) -> str:
    return {
        AsyncStatus.EXPIRED.value: "TIMEOUT_IN_QUEUE",
        AsyncStatus.CANCELED.value: "CANCELED",
    }.get(status, "MODEL_PREDICT_ERROR")


def _decode(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return bytes(raw).decode("utf-8", "replace")


def _short(body: bytes, limit: int = 300) -> str:
    text = bytes(body).decode("utf-8", "replace").strip()
    return text if len(text) <= limit else text[:limit] + "…"
