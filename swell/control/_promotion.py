"""Autoscaling settings and promotion: what a deployment scales by, and which one an environment serves.

Promotion is without downtime: the new deployment is warmed up to the old
one's ready replicas while the old one keeps serving, and only then does the
environment switch.

A rolling promotion (``rolling=True``) warms the new deployment to its
``min_replica`` (at least one replica), then moves the environment's requests
over in steps through a :class:`TrafficSplit`, and rolls back when the new
deployment's error rate passes the plan's threshold.  The decisions are
:func:`swell.control._rolling.advance`'s; this module runs them: one task per
promotion, its progress written to the store and told to the events log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swell.config import AutoscalingSettings, FieldError, SettingsError, parse_autoscaling
from swell.control._errors import ApiError
from swell.control._lifecycle import Lifecycle
from swell.control._registry import DeploymentKind, DeploymentRecord, ModelRecord
from swell.control._rolling import (
    Answers,
    Phase,
    RollingPlan,
    RollingState,
    TrafficSplit,
    advance,
    parse_rolling,
    start,
)
from swell.control._shared import Part, Shared
from swell.control._time import iso
from swell.control._views import Views
from swell.serving import BuildState

__all__ = ["Promotion"]

log = logging.getLogger("swell.control")

_POLL_SECONDS = 0.1  # how often a rolling promotion looks at its new deployment


@dataclass
class _Rolling:
    """One rolling promotion under way."""

    model: ModelRecord
    environment: str
    new: DeploymentRecord
    previous: str
    plan: RollingPlan
    state: RollingState
    want: int  # ready replicas the new deployment needs before the first shift
    started_at: float  # wall clock
    task: asyncio.Task[None] | None = None


class Promotion(Part):
    def __init__(self, shared: Shared, lifecycle: Lifecycle, views: Views) -> None:
        super().__init__(shared)
        self.lifecycle = lifecycle
        self.views = views
        self._rolling: dict[tuple[str, str], _Rolling] = {}  # (model id, environment): under way

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
        rolling: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Point ``environment`` at a published deployment, without downtime.

        The deployment takes the settings of the one the environment pointed
        at (unless ``settings`` overrides some, or ``inherit`` is off), is
        warmed up to that one's replica count while the old one keeps
        serving, and only then does the environment switch.

        With ``rolling`` (the plan's fields: ``steps``, ``step_seconds``,
        ``max_error_rate``, ``min_requests``, ``warm_seconds``; missing ones
        take their defaults) the environment moves in steps instead: this
        returns at once with the promotion's view, and a task carries it on.
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
        self._refuse_while_rolling(model, environment)
        plan = self._check_plan(rolling) if rolling is not None else None
        old_id = model.environments[environment]
        old = self.registry.deployments.get(old_id or "") if old_id != record.id else None
        if plan is not None and old is None:
            raise ApiError(
                409,
                "nothing to roll from",
                reason=f"{environment} points at "
                + (f"deployment {record.id} already" if old_id == record.id else "no deployment")
                + "; promote without rolling",
            )
        base = old.settings if (old is not None and inherit) else record.settings
        new_settings = self._check_settings(settings, base) if settings is not None else base
        async with self._lock:
            if not record.active:
                await self.lifecycle.activate_record(record)
            if new_settings != record.settings:
                await self._set_settings(record, new_settings)
        if plan is not None:
            assert old is not None
            return await self._start_rolling(model, environment, record, old, plan)
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
            try:  # a rolling promotion may have begun while this one warmed up: it owns the environment
                self._refuse_while_rolling(model, environment)
            except ApiError:
                if want:
                    self.controller.hold(record.id, 0, until=0.0)
                raise
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

    # ------------------------------------------------------------------ rolling promotion

    def _refuse_while_rolling(self, model: ModelRecord, environment: str) -> None:
        """409 while a rolling promotion owns ``environment``: one promotion of an environment at a time."""
        under_way = self._rolling.get((model.id, environment))
        if under_way is not None:
            raise ApiError(
                409,
                "a rolling promotion is under way",
                reason=f"{environment} is moving to deployment {under_way.new.id} "
                f"({under_way.state.reason}); wait for it to finish or roll back",
                promotion=self.promotion_view(model, environment),
            )

    def promotion_view(self, model: ModelRecord, environment: str) -> dict[str, Any] | None:
        """The environment's last rolling promotion (under way or finished), or None."""
        return model.promotions.get(environment)

    async def start(self) -> None:
        """After a restart: a rolling promotion the last server left under way is settled as rolled
        back (the environment still points at the old deployment, which takes every request)."""
        for row in await self.store.promotions():
            model = self.registry.models.get(row["model_id"])
            if model is None:
                continue
            state = dict(row["state"])
            if not Phase(state["phase"]).finished:
                state.update(
                    phase=Phase.ROLLED_BACK.value, percent=0,
                    reason=f"rolled back: the server stopped during the promotion; {row['environment']} stays on "
                    f"deployment {row['previous_id']}; promote again",
                )
                async with self.store.transaction() as tx:
                    await tx.save_promotion({**row, "state": state, "updated_at": self.wall()})
                for deployment_id in (row["deployment_id"], row["previous_id"]):
                    if deployment_id in self.registry.deployments:
                        self.events.record(deployment_id, "promotion_rolled_back", state["reason"],
                                           environment=row["environment"], promoting=row["deployment_id"],
                                           previous=row["previous_id"])
                log.warning("%s: %s", model.name, state["reason"])
            model.promotions[row["environment"]] = _row_view(row, state)

    async def close(self) -> None:
        """Stop the promotions under way (the next start settles them)."""
        tasks = [r.task for r in self._rolling.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _check_plan(self, body: Mapping[str, Any]) -> RollingPlan:
        if not isinstance(body, Mapping):
            raise ApiError(422, "invalid rolling promotion",
                           detail=[FieldError("rolling", body, "must be a JSON object of rolling settings").as_dict()])
        try:
            return parse_rolling(body, base=RollingPlan(warm_seconds=self.settings.promotion_timeout_seconds))
        except SettingsError as exc:
            raise ApiError(422, "invalid rolling promotion", detail=[e.as_dict() for e in exc.errors]) from None

    async def _start_rolling(
        self, model: ModelRecord, environment: str, record: DeploymentRecord, old: DeploymentRecord, plan: RollingPlan
    ) -> dict[str, Any]:
        # Checked again here, with no await between the check and the registration:
        # promote() awaited (activation, settings) since its first check.
        self._refuse_while_rolling(model, environment)
        if model.environments.get(environment) != old.id:
            raise ApiError(
                409,
                "environment moved",
                reason=f"{environment} was promoted to deployment {model.environments.get(environment)} "
                f"meanwhile, not {old.id}; promote again",
            )
        want = max(1, record.settings.min_replica)
        rolling = _Rolling(model, environment, record, old.id, plan, start(self.clock.now()), want, self.wall())
        self._rolling[(model.id, environment)] = rolling  # one at a time
        try:
            await self._save(rolling)
        except BaseException:
            del self._rolling[(model.id, environment)]
            raise
        self.controller.hold(record.id, want)
        message = (
            f"rolling promotion of {environment} from deployment {old.id} to {record.id} began: warming to "
            f"{want} replica(s), then {' → '.join(f'{p}%' for p in plan.steps)} every {plan.step_seconds:g} s, "
            f"rolled back above {plan.max_error_rate:.1%} errors"
        )
        log.info("%s: %s", model.name, message)
        self._tell(rolling, "promotion_started", message, plan=plan.as_dict())
        rolling.task = asyncio.create_task(self._run(rolling), name=f"swell-promotion-{model.id}-{environment}")
        return self.promotion_view(model, environment) or {}

    async def _run(self, rolling: _Rolling) -> None:
        """Look at the new deployment every poll and do what :func:`advance` says, until it is finished."""
        key = (rolling.model.id, rolling.environment)
        try:
            while not rolling.state.phase.finished:
                await asyncio.sleep(_POLL_SECONDS)
                new = rolling.new.id
                state = advance(
                    rolling.plan, rolling.state, now=self.clock.now(), ready=self.controller.ready_count(new),
                    want=rolling.want, answers=self._answers(new), failure=self._failure(rolling.new),
                )
                if state is not rolling.state:
                    await self._move(rolling, state)
        except asyncio.CancelledError:
            rolling.model.splits.pop(rolling.environment, None)  # the server stops: the old one takes it all
            raise
        except Exception as exc:  # the store failed: every request goes back to the old deployment
            log.exception("%s: rolling promotion of %s failed", rolling.model.name, rolling.environment)
            rolling.model.splits.pop(rolling.environment, None)
            if self.controller.get(rolling.new.id) is not None:
                self.controller.hold(rolling.new.id, 0, until=0.0)
            rolling.state = RollingState(Phase.ROLLED_BACK, rolling.state.started,
                                         reason=f"rolled back: the promotion failed: {exc}")
            rolling.model.promotions[rolling.environment] = self._view(rolling)
            self._tell(rolling, "promotion_rolled_back", rolling.state.reason)
        finally:
            self._rolling.pop(key, None)

    async def _move(self, rolling: _Rolling, state: RollingState) -> None:
        """Act on a new state: the split's share, the environment's pointer, the hold; then store and tell."""
        model, environment, new = rolling.model, rolling.environment, rolling.new
        rolling.state = state
        if state.phase is Phase.SHIFTING:
            split = model.splits.get(environment)
            if split is None:
                model.splits[environment] = TrafficSplit(new.id, state.percent)
            else:
                split.percent = state.percent
            await self._save(rolling)
            self._tell(rolling, "promotion_step", state.reason, percent=state.percent, step=state.step + 1)
        elif state.phase is Phase.DONE:
            async with self._lock:
                async with self.store.transaction() as tx:
                    await tx.set_environment(model.id, environment, new.id, self.wall())
                    await tx.save_promotion(self._row(rolling))
                model.environments[environment] = new.id
                model.splits.pop(environment, None)
            model.promotions[environment] = self._view(rolling)
            if self.controller.get(new.id) is not None:  # hold the warm replicas while the window fills
                self.controller.hold(new.id, rolling.want, until=self.clock.now() + new.settings.autoscaling_window)
            log.info("%s: %s now points at deployment %s (rolling promotion done)", model.name, environment, new.id)
            self._tell(rolling, "promoted", f"{environment} now points here (was {rolling.previous}); rolling promotion done",
                       previous=rolling.previous)
        else:  # rolled back, or the new deployment never became ready
            model.splits.pop(environment, None)
            if self.controller.get(new.id) is not None:
                self.controller.hold(new.id, 0, until=0.0)
            log.warning("%s: rolling promotion of %s to %s: %s", model.name, environment, new.id, state.reason)
            await self._save(rolling)
            kind = "promotion_rolled_back" if state.phase is Phase.ROLLED_BACK else "promotion_failed"
            self._tell(rolling, kind, state.reason)

    def _answers(self, deployment_id: str) -> Answers:
        """The deployment's answers so far: all but callers who hung up (499), and those 500 or above."""
        scaled = self.controller.get(deployment_id)
        if scaled is None:
            return Answers()
        total = errors = 0
        for status, count in scaled.router.responses.items():
            if status != 499:
                total += count
                if status >= 500:
                    errors += count
        return Answers(total, errors)

    def _failure(self, record: DeploymentRecord) -> str | None:
        """Why the new deployment cannot take requests, if it cannot."""
        if self.registry.deployments.get(record.id) is not record:
            return f"deployment {record.id} was deleted"
        if not record.active:
            return f"deployment {record.id} was deactivated"
        scaled = self.controller.get(record.id)
        if scaled is None or scaled.retiring:
            return f"deployment {record.id} is no longer served"
        if scaled.load_failing:
            return scaled.error or "its model failed to load"
        return None

    async def _save(self, rolling: _Rolling) -> None:
        if self.registry.models.get(rolling.model.id) is rolling.model:  # else deleted, its promotions with it
            async with self.store.transaction() as tx:
                await tx.save_promotion(self._row(rolling))
        rolling.model.promotions[rolling.environment] = self._view(rolling)

    def _row(self, rolling: _Rolling) -> dict[str, Any]:
        return {
            "model_id": rolling.model.id,
            "environment": rolling.environment,
            "deployment_id": rolling.new.id,
            "previous_id": rolling.previous,
            "plan": rolling.plan.as_dict(),
            "state": rolling.state.as_dict(),
            "started_at": rolling.started_at,
            "updated_at": self.wall(),
        }

    def _view(self, rolling: _Rolling) -> dict[str, Any]:
        row = self._row(rolling)
        return _row_view(row, row["state"])

    def _tell(self, rolling: _Rolling, kind: str, message: str, **details: Any) -> None:
        """An event on both deployments: `swell events` shows the promotion from either side."""
        details = {"environment": rolling.environment, "promoting": rolling.new.id,
                   "previous": rolling.previous, **details}
        for deployment_id in (rolling.new.id, rolling.previous):
            if deployment_id in self.registry.deployments:
                self.events.record(deployment_id, kind, message, **details)

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


def _row_view(row: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
    """A promotion as the API shows it."""
    return {
        "environment": row["environment"],
        "deployment_id": row["deployment_id"],
        "previous_deployment_id": row["previous_id"],
        **state,
        "plan": dict(row["plan"]),
        "started_at": iso(row["started_at"]),
        "updated_at": iso(row["updated_at"]),
    }
