"""Autoscaling settings and promotion: what a deployment scales by, and which one an environment serves.

Promotion is without downtime: the new deployment is warmed up to the old
one's ready replicas while the old one keeps serving, and only then does the
environment switch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from swell.config import AutoscalingSettings, FieldError, SettingsError, parse_autoscaling
from swell.control._errors import ApiError
from swell.control._lifecycle import Lifecycle
from swell.control._registry import DeploymentKind, DeploymentRecord
from swell.control._shared import Part, Shared
from swell.control._views import Views
from swell.serving import BuildState

__all__ = ["Promotion"]

log = logging.getLogger("swell.control")


class Promotion(Part):
    def __init__(self, shared: Shared, lifecycle: Lifecycle, views: Views) -> None:
        super().__init__(shared)
        self.lifecycle = lifecycle
        self.views = views

    async def patch_settings(self, model_ref: str, deployment_ref: str, body: Any) -> dict[str, Any]:
        """Change some settings: all are validated together, nothing is half-applied,
        and concurrent patches apply one after the other (the last one wins)."""
        async with self._lock:
            model = self.registry.model(model_ref)
            record = self.registry.deployment(model, deployment_ref)
            if record.kind is DeploymentKind.DEVELOPMENT:
                raise ApiError(
                    422,
                    "development deployments have fixed autoscaling settings",
                    reason="publish the model (swell push --publish) and change the settings of the published "
                    "deployment, or promote it to an environment",
                    detail=[
                        FieldError(
                            "autoscaling_settings", body, "fixed for development deployments; publish to change them"
                        ).as_dict()
                    ],
                )
            new = self._check_settings(body, record.settings)
            if new == record.settings:
                return {"status": "UNCHANGED", "settings": new.model_dump()}
            await self._set_settings(record, new)
        log.info("%s: autoscaling settings of %s changed: %s", model.name, record.id, _settings_text(new))
        self.events.record(
            record.id, "settings_changed", f"autoscaling settings: {_settings_text(new)}", settings=new.model_dump()
        )
        return {"status": "ACCEPTED", "settings": new.model_dump()}

    async def promote(
        self,
        model_ref: str,
        deployment_ref: str,
        environment: str = "production",
        *,
        settings: Any = None,
        inherit: bool = True,
    ) -> dict[str, Any]:
        """Point ``environment`` at a published deployment, without downtime.

        The deployment takes the settings of the one the environment pointed
        at (unless ``settings`` overrides some, or ``inherit`` is off), is
        warmed up to that one's replica count while the old one keeps
        serving, and only then does the environment switch.
        """
        model = self.registry.model(model_ref)
        record = self.registry.deployment(model, deployment_ref)
        if record.kind is not DeploymentKind.PUBLISHED:
            raise ApiError(422, "only published deployments can be promoted", reason="push with --publish first")
        if record.build is not BuildState.BUILT:
            raise ApiError(409, "deployment did not build", reason=record.error or "its build has not finished")
        if environment not in model.environments:
            allowed = " or ".join(sorted(model.environments))
            raise ApiError(404, "unknown environment", detail=[FieldError("environment", environment, allowed).as_dict()])
        old_id = model.environments[environment]
        old = self.registry.deployments.get(old_id or "") if old_id != record.id else None
        base = old.settings if (old is not None and inherit) else record.settings
        new_settings = self._check_settings(settings, base) if settings is not None else base
        async with self._lock:
            if not record.active:
                await self.lifecycle.activate_record(record)
            if new_settings != record.settings:
                await self._set_settings(record, new_settings)
        want = self.controller.ready_count(old.id) if old is not None else 0
        if want:
            log.info("%s: warming deployment %s up to %d replica(s) before %s switches", model.name, record.id, want, environment)
            self.controller.hold(record.id, want)
            try:
                await self._wait_ready(record, want)
            except BaseException:
                self.controller.hold(record.id, 0, until=0.0)
                raise
        async with self._lock:
            async with self.store.transaction() as tx:
                await tx.set_environment(model.id, environment, record.id, self.wall())
            model.environments[environment] = record.id
        if want:  # hold the warm replicas while the window fills with the traffic that now arrives
            self.controller.hold(record.id, want, until=self.clock.now() + record.settings.autoscaling_window)
        log.info("%s: %s now points at deployment %s", model.name, environment, record.id)
        self.events.record(
            record.id, "promoted", f"{environment} now points here" + (f" (was {old_id})" if old_id else ""),
            environment=environment, previous=old_id,
        )
        return self.views.deployment_view(record)

    def _check_settings(self, body: Any, base: AutoscalingSettings) -> AutoscalingSettings:
        if not isinstance(body, Mapping):
            raise ApiError(
                422,
                "invalid settings",
                detail=[FieldError("autoscaling_settings", body, "must be a JSON object of settings").as_dict()],
            )
        try:
            return parse_autoscaling(body, base=base, max_replica_cap=self.settings.max_replica_cap)
        except SettingsError as exc:
            raise ApiError(422, "invalid settings", detail=[e.as_dict() for e in exc.errors]) from None

    async def _set_settings(self, record: DeploymentRecord, new: AutoscalingSettings) -> None:
        async with self.store.transaction() as tx:
            await tx.update_deployment(record.id, settings=new.model_dump())
        record.settings = new
        if self.controller.get(record.id) is not None:
            self.controller.update_settings(record.id, new)

    async def _wait_ready(self, record: DeploymentRecord, want: int) -> None:
        deadline = time.monotonic() + self.settings.promotion_timeout_seconds
        while self.controller.ready_count(record.id) < want:
            scaled = self.controller.get(record.id)
            if scaled is not None and scaled.load_failing:
                raise ApiError(
                    503,
                    "promotion failed",
                    reason=f"deployment {record.id} did not become ready: {scaled.error}; the environment was not changed",
                )
            if time.monotonic() > deadline:
                raise ApiError(
                    504,
                    "promotion timed out",
                    reason=f"deployment {record.id} had {self.controller.ready_count(record.id)} of {want} replicas "
                    f"ready after {self.settings.promotion_timeout_seconds:g} s; the environment was not changed",
                )
            await asyncio.sleep(0.05)


def _settings_text(settings: AutoscalingSettings) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.model_dump().items())
