"""The control plane: the parts that turn pushes into deployments, and the lookups the front door needs.

``ControlPlane`` composes one part per concern, each in its own module:

- :class:`Lifecycle` (``_lifecycle.py``): push, build, reload, activate and
  deactivate, delete; models and environments.
- :class:`Promotion` (``_promotion.py``): autoscaling settings and promotion.
- :class:`Access` (``_access.py``): API keys and secrets.
- :class:`Housekeeping` (``_housekeeping.py``): last-use times, idle deactivation, background advice
  (``_advice.py``).
- :class:`Views` (``_views.py``): the JSON the API shows.

They share one registry, store, control loop and lock (:class:`Shared`).  The
plane itself starts and stops them, finds the router a predict goes to, takes
async requests, and runs the one flow that spans two parts: push, then promote.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swell.autoscaling import Clock, RealClock
from swell.config import FieldError, ServerSettings
from swell.control._access import Access
from swell.control._advice import AdviceCache, AdviseRunner
from swell.control._async import AsyncPredictRequest, AsyncQueue, AsyncStatus
from swell.control._errors import ApiError
from swell.control._events import EventLog
from swell.control._housekeeping import Housekeeping
from swell.control._keys import ApiKeys, KeyRecord
from swell.control._lifecycle import Lifecycle, PushResult
from swell.control._promotion import Promotion
from swell.control._registry import DeploymentKind, DeploymentRecord, ModelRecord, NotFound, Registry
from swell.control._shared import Shared
from swell.control._store import Store, sqlite_url
from swell.control._views import Views, key_view
from swell.control._webhooks import Destinations, WebhookRefused, WebhookSender
from swell.files import make_private
from swell.serving import BuildState, Controller, DeploymentRouter, ReplicaBackend, Tracing

__all__ = ["ApiError", "ControlPlane", "PushResult", "key_view"]

log = logging.getLogger("swell.control")


class ControlPlane:
    """Composes the parts over one registry, store and control loop; starts and stops them."""

    def __init__(
        self,
        settings: ServerSettings,
        backend: ReplicaBackend,
        *,
        clock: Clock | None = None,
        wall_clock: Callable[[], float] = time.time,
        api_key: str | None = None,
        tracing: Tracing | None = None,
        advise: AdviseRunner | None = None,
    ) -> None:
        """``advise`` runs ``swell advise`` on a deployment's history (the server passes the
        dashboard's runner; None: no background advice)."""
        clock = clock or RealClock()
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.registry = Registry()
        self.clock = clock
        self.wall = wall_clock  # records' timestamps and idle times: survives restarts
        self.store = Store(settings.database_url or sqlite_url(self.data_dir), new_workspace=settings.new_workspace)
        self.events = EventLog(self.store, wall_clock)
        self.controller = Controller(
            backend, settings=settings, clock=clock, wall_clock=wall_clock, events=self.events, tracing=tracing
        )
        self.should_stop: Callable[[], bool] = lambda: False  # the server is stopping: end streams
        shared = Shared(settings, self.registry, self.store, self.controller, self.events, clock, wall_clock)
        self.advice = AdviceCache(advise, every=settings.advice_seconds)
        self.views = Views(self.registry, self.controller, self.advice)
        self.access = Access(shared, api_key=api_key)
        self.lifecycle = Lifecycle(shared, self.access, self.views)
        self.promotion = Promotion(shared, self.lifecycle, self.views)
        self.housekeeping = Housekeeping(shared, self.access.keys, self.lifecycle, self.advice)
        self.async_queue = AsyncQueue(
            self.store, self._async_router, self.access.secret_box, wall=wall_clock,
            sender=WebhookSender(destinations=Destinations(settings.webhook_allow)),
            max_bytes_per_key=settings.async_max_bytes_per_key, max_bytes=settings.async_max_bytes,
        )
        self._started = False

    @property
    def keys(self) -> ApiKeys:
        """The live API keys (the access part's), which the front door checks on every request."""
        return self.access.keys

    @property
    def new_key(self) -> str | None:
        """A key created at start-up, to show the operator once."""
        return self.access.new_key

    async def start(self, *, background: bool = True) -> None:
        """Open the store, rebuild the records, bring every active deployment back.

        ``background=False`` leaves the control loop and housekeeping to the
        caller (tests drive them with ``controller.tick()`` and ``housekeeping.run()``).
        """
        make_private(self.data_dir)  # 0700: the database, keys and logs are nobody else's
        await self.store.start()
        await self.events.start()
        log.info("store: %s", self.store.describe())
        snapshot = await self.store.snapshot()
        self.lifecycle.restore(snapshot)
        await self.access.start(snapshot)
        await self.lifecycle.bring_back()
        await self.promotion.start()
        await self.async_queue.start()
        if background:
            await self.controller.start()
            self.housekeeping.start()
        self._started = True

    async def close(self) -> None:
        await self.promotion.close()
        await self.housekeeping.close()
        # First: requests still queued or running stay so in the store (the next
        # start runs them) instead of being failed by the stopping controller.
        await self.async_queue.close()
        await self.controller.close()
        if self._started:
            try:
                await self.housekeeping.run(deactivate=False)  # last-use times survive a clean stop
            except Exception:
                log.exception("could not save last-use times")
        self.access.secret_folders.close()
        await self.events.close()
        await self.store.close()

    async def push(
        self,
        archive: Path,
        *,
        model_name: str | None,
        publish: bool,
        promote: bool,
        environment: str = "production",
    ) -> PushResult:
        """Make a package a deployment (:meth:`Lifecycle.push`); with ``promote``, point ``environment`` at it."""
        result = await self.lifecycle.push(
            archive, model_name=model_name, publish=publish, promote=promote, environment=environment
        )
        if promote and result.kind == DeploymentKind.PUBLISHED.value and result.environment != environment:
            # Settings were inherited when the record was made (unless config.yaml has its own).
            view = await self.promotion.promote(result.model_id, result.deployment_id, environment, inherit=False)
            result.environment, result.status = environment, view["status"]
        return result

    # ------------------------------------------------------------------ the hot path's lookup

    def router(self, model_ref: str, kind: str, ref: str | None, key: KeyRecord | None = None) -> DeploymentRouter:
        """The router that serves ``/model/{model_ref}/{kind}/{ref}/predict``.

        A ``key`` restricted to other models gets 403 before anything about
        the model is looked at, whether it exists or not: nothing about it leaks.
        """
        registry = self.registry
        try:
            model = registry.model(model_ref)
        except NotFound:
            if key is not None and key.model_ids is not None:
                raise _forbidden(model_ref) from None
            raise
        if key is not None and key.model_ids is not None and not key.can_invoke(model.id):  # no call for most keys
            raise _forbidden(model_ref)
        if kind == "environments":
            assert ref is not None
            record = registry.environment_target(model, ref)
            if model.splits:  # a rolling promotion is moving a share of this model's environment traffic
                record = self._split(model, ref, record)
        elif kind == "deployment":
            assert ref is not None
            record = registry.deployment(model, ref)
        else:
            record = registry.deployment(model, "development")
        if not record.active:
            raise ApiError(
                409,
                "deployment deactivated",
                reason=f"deployment {record.id} of model {model.name!r} is deactivated and has no replicas; "
                f"activate it first: POST /v1/models/{model.id}/deployments/{record.id}/activate",
                model_id=model.id,
                deployment_id=record.id,
            )
        scaled = self.controller.get(record.id)
        if scaled is None or scaled.retiring:
            if record.build is BuildState.BUILDING:
                raise ApiError(503, "deployment is building", reason="its requirements are being installed; try again shortly")
            raise ApiError(503, "deployment unavailable", reason=record.error or f"status {self.views.status(record).value}")
        return scaled.router

    def _split(self, model: ModelRecord, environment: str, record: DeploymentRecord) -> DeploymentRecord:
        """``record``, or the deployment a rolling promotion moves ``environment`` to, by its share."""
        split = model.splits.get(environment)
        if split is not None and split.take():
            new = self.registry.deployments.get(split.deployment_id)
            if new is not None and new.active:
                return new
        return record

    # ------------------------------------------------------------------ async predict

    async def async_predict(
        self, key: KeyRecord, model_ref: str, kind: str, ref: str | None, request: AsyncPredictRequest
    ) -> dict[str, Any]:
        """Accept an async request for the deployment the route names (kept before this returns)."""
        router = self.router(model_ref, kind, ref, key)
        record = self.registry.deployments[router.deployment_id]
        if request.webhook_endpoint is not None:
            try:
                await self.async_queue.sender.destinations.check_url(request.webhook_endpoint)
            except WebhookRefused as exc:
                refused = FieldError("webhook_endpoint", request.webhook_endpoint, str(exc))
                raise ApiError(422, "invalid request", detail=[refused.as_dict()]) from None
        return await self.async_queue.submit(record.model_id, record.id, request, key_id=key.id)

    async def async_request(self, key: KeyRecord, request_id: str) -> dict[str, Any]:
        view = await self.async_queue.view(request_id)
        if view is None or not key.can_invoke(view["model_id"]):
            raise NotFound(f"no async request {request_id!r}")
        return view

    async def cancel_async_request(self, key: KeyRecord, request_id: str) -> dict[str, Any]:
        """Cancel a queued request; one that runs or has finished is not cancelled (409)."""
        view = await self.async_request(key, request_id)  # exists, and this key may see it
        status, canceled = await self.async_queue.cancel(request_id)
        if not canceled:
            now = status.value if status is not None else view["status"]  # finished: the stored status
            raise ApiError(
                409,
                "request not cancelable",
                reason=f"request {request_id} is {now}; only a QUEUED request can be canceled",
                status=now,
            )
        return {"request_id": request_id, "canceled": True, "status": AsyncStatus.CANCELED.value}

    def _async_router(self, deployment_id: str) -> DeploymentRouter | None:
        """Where a kept async request runs: None once its deployment is deleted or deactivated."""
        record = self.registry.deployments.get(deployment_id)
        scaled = self.controller.get(deployment_id)
        if record is None or not record.active or scaled is None or scaled.retiring:
            return None
        return scaled.router


def _forbidden(model_ref: str) -> ApiError:
    return ApiError(403, "forbidden", reason=f"this key may not call model {model_ref!r}")
