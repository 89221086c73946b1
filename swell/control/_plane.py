"""The control plane: pushes become deployments; deployments get routers and replicas."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swell.autoscaling import Clock, RealClock
from swell.config import (
    DEVELOPMENT_AUTOSCALING,
    AutoscalingSettings,
    ConfigError,
    FieldError,
    ModelConfig,
    ServerSettings,
    SettingsError,
    load_model_config,
    parse_autoscaling,
)
from swell.control._async import AsyncPredictRequest, AsyncQueue, AsyncStatus
from swell.control._events import EventLog
from swell.control._ids import new_id
from swell.control._keys import ApiKeys, KeyRecord, KeyType, digest
from swell.control._limits import check_archive
from swell.control._registry import (
    DEFAULT_ENVIRONMENTS,
    NAME_RULE,
    DeploymentKind,
    DeploymentRecord,
    ModelRecord,
    NotFound,
    Registry,
    valid_model_name,
)
from swell.control._secrets import (
    MAX_SECRET_BYTES,
    SecretBox,
    SecretFolders,
    valid_secret_name,
)
from swell.control._store import Snapshot, Store, sqlite_url
from swell.control._time import iso
from swell.control._webhooks import Destinations, WebhookRefused, WebhookSender
from swell.files import fsync_tree, make_private, storage_error
from swell.modelserver import RequirementsInstallError, ensure_environment
from swell.serving import (
    BuildState,
    Controller,
    DeploymentRouter,
    DeploymentStatus,
    ReplicaBackend,
    ReplicaSpec,
    ReplicaState,
    deployment_status,
)

__all__ = ["ApiError", "ControlPlane", "PushResult", "key_view"]

log = logging.getLogger("swell.control")


class ApiError(Exception):
    """An answer other than success, with the JSON body to send."""

    def __init__(self, http_status: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status = http_status
        self.payload = {"error": error, **extra}


@dataclass
class PushResult:
    model_id: str
    model_name: str
    deployment_id: str
    kind: str
    status: str
    environment: str | None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "model_name": self.model_name,
            "deployment_id": self.deployment_id,
            "kind": self.kind,
            "status": self.status,
            "environment": self.environment,
            "warnings": self.warnings,
            "predict_url": (
                f"/model/{self.model_id}/development/predict"
                if self.kind == DeploymentKind.DEVELOPMENT.value
                else f"/model/{self.model_id}/deployment/{self.deployment_id}/predict"
            ),
        }


class ControlPlane:
    """Owns the records (in memory, written through to the store), the control loop and the keys."""

    def __init__(
        self,
        settings: ServerSettings,
        backend: ReplicaBackend,
        *,
        clock: Clock | None = None,
        wall_clock: Callable[[], float] = time.time,
        api_key: str | None = None,
    ) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.registry = Registry()
        self.clock = clock or RealClock()
        self.wall = wall_clock  # records' timestamps and idle times: survives restarts
        self.store = Store(settings.database_url or sqlite_url(self.data_dir), new_workspace=settings.new_workspace)
        self.events = EventLog(self.store, wall_clock)
        self.controller = Controller(
            backend, settings=settings, clock=self.clock, wall_clock=wall_clock, events=self.events
        )
        self.should_stop: Callable[[], bool] = lambda: False  # the server is stopping: end streams
        self.keys = ApiKeys()
        self.secret_box = SecretBox(self.data_dir / "secrets.key")
        self.secret_folders = SecretFolders(self.data_dir)
        self.new_key: str | None = None  # a key created at start-up, to show the operator once
        self.async_queue = AsyncQueue(
            self.store, self._async_router, self.secret_box, wall=wall_clock,
            sender=WebhookSender(destinations=Destinations(settings.webhook_allow)),
            max_bytes_per_key=settings.async_max_bytes_per_key, max_bytes=settings.async_max_bytes,
        )
        self._env_key = api_key
        self._lock = asyncio.Lock()  # one change at a time: last write wins, nothing torn
        self._housekeeping: asyncio.Task[None] | None = None
        self._seen_active: dict[str, float] = {}
        self._started = False

    async def start(self, *, background: bool = True) -> None:
        """Open the store, rebuild the records, bring every active deployment back.

        ``background=False`` leaves the control loop and housekeeping to the
        caller (tests drive them with ``controller.tick()`` and ``housekeeping()``).
        """
        make_private(self.data_dir)  # 0700: the database, keys and logs are nobody else's
        await self.store.start()
        await self.events.start()
        log.info("store: %s", self.store.describe())
        self._restore(await self.store.snapshot())
        await self._bootstrap_keys()
        self.secret_box.check_at_start(await self.store.encrypted_values())
        self.secret_folders.reset()
        for record in list(self.registry.deployments.values()):
            if record.active and record.build is BuildState.BUILT:
                await self._add_router(record)
        await self.async_queue.start()
        if background:
            await self.controller.start()
            self._housekeeping = asyncio.create_task(self._housekeeping_loop(), name="swell-housekeeping")
        self._started = True

    async def close(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            try:
                await self._housekeeping
            except asyncio.CancelledError:
                pass
        # First: requests still queued or running stay so in the store (the next
        # start runs them) instead of being failed by the stopping controller.
        await self.async_queue.close()
        await self.controller.close()
        if self._started:
            try:
                await self.housekeeping(deactivate=False)  # last-use times survive a clean stop
            except Exception:
                log.exception("could not save last-use times")
        self.secret_folders.close()
        await self.events.close()
        await self.store.close()

    def _restore(self, snapshot: Snapshot) -> None:
        for row in snapshot.models:
            self.registry.add_model(ModelRecord(row["id"], row["name"], created_at=row["created_at"], environments={}))
        for row in snapshot.environments:
            model = self.registry.models.get(row["model_id"])
            if model is not None:
                model.environments[row["name"]] = row["deployment_id"]
        for row in snapshot.deployments:
            if row["model_id"] not in self.registry.models:
                continue
            record = self._record_from_row(row)
            self.registry.add_deployment(record)
            model = self.registry.models[record.model_id]
            if record.kind is DeploymentKind.DEVELOPMENT and (
                model.development is None or row["build"] == BuildState.BUILT.value
            ):
                model.development = record.id  # the one that built, if one did
        self.keys.load(KeyRecord.from_row(row) for row in snapshot.api_keys)
        if snapshot.models:
            log.info(
                "restored %d model(s), %d deployment(s), %d key(s)",
                len(snapshot.models),
                len(snapshot.deployments),
                len(self.keys),
            )

    def _record_from_row(self, row: Mapping[str, Any]) -> DeploymentRecord:
        package_dir = Path(row["package_dir"])
        build = BuildState(row["build"])
        error = row["error"]
        config = ModelConfig()
        if build is BuildState.BUILDING:  # the server stopped mid-build
            build, error = BuildState.FAILED, "the server stopped while this deployment was building; push it again"
        elif build is BuildState.BUILT:
            try:
                config, _ = load_model_config(package_dir, max_replica_cap=self.settings.max_replica_cap)
            except (ConfigError, OSError) as exc:
                build, error = BuildState.FAILED, f"its package at {package_dir} cannot be read any more: {exc}"
            if build is BuildState.BUILT and row["python"] and not Path(row["python"]).exists():
                build, error = BuildState.FAILED, f"its Python environment {row['python']} is gone; push it again"
        try:
            settings = AutoscalingSettings.model_validate(row["settings"])
        except ValueError:
            settings = AutoscalingSettings()
        return DeploymentRecord(
            id=row["id"],
            model_id=row["model_id"],
            kind=DeploymentKind(row["kind"]),
            package_dir=package_dir,
            config=config,
            settings=settings,
            created_at=row["created_at"],
            build=build,
            error=error,
            warnings=list(row["warnings"] or []),
            python=row["python"] or sys.executable,
            active=bool(row["active"]),
            revision=row["revision"],
            last_request_at=row["last_request_at"],
            activated_at=row["activated_at"],
        )

    async def _bootstrap_keys(self) -> None:
        """$SWELL_API_KEY, keys.json of an older Swell, or a new key: the workspace needs one."""
        legacy = self.data_dir / "keys.json"
        imported: list[KeyRecord] = []
        if legacy.is_file():
            try:
                entries = json.loads(legacy.read_text() or "{}").get("keys", [])
            except ValueError:
                entries = []
            known = {r.sha256 for r in self.keys.records.values()}
            for entry in entries:
                if entry.get("sha256") and entry["sha256"] not in known:
                    imported.append(
                        KeyRecord(new_id(10), KeyType.WORKSPACE, entry["sha256"], entry.get("created_at") or self.wall(), "imported")
                    )
        if self._env_key:
            secret_digest = digest(self._env_key)
            existing = next((r for r in self.keys.records.values() if r.sha256 == secret_digest), None)
            if existing is not None and existing.revoked_at is not None:
                log.warning("$SWELL_API_KEY names a revoked key; it is not accepted")
            elif existing is None and all(r.sha256 != secret_digest for r in imported):
                imported.append(KeyRecord(new_id(10), KeyType.WORKSPACE, secret_digest, self.wall(), "SWELL_API_KEY"))
        if not imported and not any(r.can_manage() for r in self.keys.live()):
            record, self.new_key = KeyRecord.create(type=KeyType.WORKSPACE, name="first", model_ids=None, now=self.wall())
            imported.append(record)
        if imported:
            async with self.store.transaction() as tx:
                for record in imported:
                    await tx.add_key(record.row())
            self.keys.load(imported)
        if legacy.is_file():
            legacy.replace(legacy.with_suffix(".json.imported"))

    # ------------------------------------------------------------------ the hot path's lookup

    def router(self, model_ref: str, kind: str, ref: str | None) -> DeploymentRouter:
        """The router that serves ``/model/{model_ref}/{kind}/{ref}/predict``."""
        registry = self.registry
        model = registry.model(model_ref)
        if kind == "environments":
            assert ref is not None
            record = registry.environment_target(model, ref)
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
            raise ApiError(503, "deployment unavailable", reason=record.error or f"status {self.status(record).value}")
        return scaled.router

    # ------------------------------------------------------------------ async predict

    async def async_predict(
        self, key: KeyRecord, model_ref: str, kind: str, ref: str | None, request: AsyncPredictRequest
    ) -> dict[str, Any]:
        """Accept an async request for the deployment the route names (kept before this returns)."""
        router = self.router(model_ref, kind, ref)
        record = self.registry.deployments[router.deployment_id]
        if not key.can_invoke(record.model_id):
            raise ApiError(403, "forbidden", reason=f"this key may not call model {model_ref!r}")
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

    # ------------------------------------------------------------------ push

    async def push(
        self,
        archive: Path,
        *,
        model_name: str | None,
        publish: bool,
        promote: bool,
        environment: str = "production",
    ) -> PushResult:
        """Unpack, validate and build a package, then make it a deployment.

        A development push to a model that has a development deployment
        reloads that deployment in place (same id, new code); a published push
        creates a new immutable deployment.
        """
        package_id = new_id()
        package_dir = self.data_dir / "packages" / package_id
        try:
            # Extraction and validation touch the disk (a package may carry
            # gigabytes of weights): off the loop, so predict traffic flows on.
            config, ignored = await asyncio.to_thread(self._unpack_and_validate, archive, package_dir)
            warnings = [f"config.yaml key {key!r} is accepted for Truss compatibility but not acted on" for key in ignored]
            name = model_name or config.model_name
            if not name:
                raise ApiError(422, "no model name", detail=[FieldError("model_name", None, "give --model-name or set model_name in config.yaml").as_dict()])
            if not valid_model_name(name):
                raise ApiError(422, "invalid model name", detail=[FieldError("model_name", name, NAME_RULE).as_dict()])
            existing = self.registry.model_by_name(name)
            known_envs = sorted(existing.environments) if existing else list(DEFAULT_ENVIRONMENTS)
            if environment not in known_envs:
                raise ApiError(422, "unknown environment", detail=[FieldError("environment", environment, " or ".join(known_envs)).as_dict()])
        except ConfigError as exc:
            shutil.rmtree(package_dir, ignore_errors=True)
            raise ApiError(422, "invalid config.yaml", detail=[e.as_dict() for e in exc.errors]) from None
        except ApiError:
            shutil.rmtree(package_dir, ignore_errors=True)
            raise
        kind = DeploymentKind.PUBLISHED if publish else DeploymentKind.DEVELOPMENT
        if kind is DeploymentKind.DEVELOPMENT and config.autoscaling is not None:
            warnings.append("autoscaling in config.yaml applies to published deployments; development is fixed")

        async with self._lock:
            model = self.registry.model_by_name(name) or await self._create_model(name)
            reload = self.registry.deployments.get(model.development or "") if kind is DeploymentKind.DEVELOPMENT else None
            if reload is None:
                settings = self._initial_settings(model, config, kind, promote, environment)
                record = DeploymentRecord(
                    package_id, model.id, kind, package_dir, config, settings,
                    warnings=warnings, created_at=self.wall(), activated_at=self.wall(),
                )
                async with self.store.transaction() as tx:
                    await tx.save_deployment(record.row())
                self.registry.add_deployment(record)
            else:
                record = reload

        try:
            python = await self._build(model, record, config, package_dir, new=reload is None)
        except ApiError:
            if reload is not None:
                shutil.rmtree(package_dir, ignore_errors=True)  # the running code stays as it was
            raise

        promoted: str | None = None
        async with self._lock:
            if reload is not None:
                await self._reload(record, package_dir, config, python, warnings)
            else:
                record.build = BuildState.BUILT
                record.python = python
                first_published = kind is DeploymentKind.PUBLISHED and len(self.registry.published(model)) == 1
                async with self.store.transaction() as tx:
                    await tx.update_deployment(record.id, build=record.build.value, python=python)
                    if first_published:  # (the development pointer is the deployment's kind itself)
                        await tx.set_environment(model.id, "production", record.id, self.wall())
                if kind is DeploymentKind.DEVELOPMENT:
                    model.development = record.id
                    await self._drop_failed_development(model, keep=record.id)
                elif first_published:
                    model.environments["production"] = record.id
                    promoted = "production"
                await self._add_router(record)
        if promote and kind is DeploymentKind.PUBLISHED and promoted != environment:
            # Settings were inherited when the record was made (unless config.yaml has its own).
            await self.promote(model.id, record.id, environment, inherit=False)
            promoted = environment
        log.info(
            "%s: deployment %s (%s) %s%s",
            name,
            record.id,
            kind.value,
            f"reloaded (revision {record.revision})" if reload is not None else "pushed",
            f", {promoted} points at it" if promoted else "",
        )
        return PushResult(model.id, name, record.id, kind.value, self.status(record).value, promoted, warnings)

    async def _drop_failed_development(self, model: ModelRecord, *, keep: str) -> None:
        """A model has one development deployment: earlier pushes whose build failed go."""
        stale = [
            d
            for d in model.deployments
            if d != keep and (r := self.registry.deployments.get(d)) is not None and r.kind is DeploymentKind.DEVELOPMENT
        ]
        if stale:
            async with self.store.transaction() as tx:
                for deployment_id in stale:
                    await tx.delete_deployment(deployment_id)
            for deployment_id in stale:
                self._forget_deployment(deployment_id)

    async def _create_model(self, name: str) -> ModelRecord:
        model = ModelRecord(new_id(), name, created_at=self.wall())
        async with self.store.transaction() as tx:
            await tx.add_model(model.id, name, model.created_at)
            for env in model.environments:
                await tx.set_environment(model.id, env, None, model.created_at)
        return self.registry.add_model(model)

    async def _build(
        self, model: ModelRecord, record: DeploymentRecord, config: ModelConfig, package_dir: Path, *, new: bool
    ) -> str:
        """The interpreter for the package: a venv with its requirements, or ours."""
        requirements = _requirements(config, package_dir)
        if not requirements:
            return sys.executable
        log.info("%s: building the environment for %d requirement(s)", model.name, len(requirements))
        try:
            python = await asyncio.to_thread(ensure_environment, requirements, self.data_dir / "envs")
        except Exception as exc:
            if isinstance(exc, RequirementsInstallError):
                status, error, reason = 422, "requirements could not be installed", str(exc)
            else:  # venv creation itself failed
                status, error, reason = 500, "build failed", f"could not build the environment: {exc}"
            log.warning("%s: build of deployment %s failed: %s", model.name, record.id, reason)
            if new:
                async with self._lock:
                    record.build, record.error = BuildState.FAILED, reason
                    async with self.store.transaction() as tx:
                        await tx.update_deployment(record.id, build=record.build.value, error=reason)
            raise ApiError(
                status,
                error,
                reason=reason,
                model_id=model.id,
                deployment_id=record.id,
                status=DeploymentStatus.FAILED.value if new else self.status(record).value,
            ) from None
        return str(python)

    async def _reload(
        self, record: DeploymentRecord, package_dir: Path, config: ModelConfig, python: str, warnings: list[str]
    ) -> None:
        """Swap a development deployment's code: same id, queue kept, replicas replaced."""
        old_dir = record.package_dir
        revision = record.revision + 1
        async with self.store.transaction() as tx:
            await tx.update_deployment(
                record.id,
                package_dir=str(package_dir),
                python=python,
                revision=revision,
                warnings=warnings,
                build=BuildState.BUILT.value,
                error=None,
                active=True,
            )
        record.package_dir, record.config, record.python = package_dir, config, python
        record.revision, record.warnings, record.build, record.error = revision, warnings, BuildState.BUILT, None
        record.active = True
        # A deactivated deployment still under the loop (retiring) is kept and reloaded too.
        if self.controller.unretire(record.id) is None:
            await self._add_router(record)
        else:
            self.controller.reload(record.id, await self._spec(record))
        # Draining replicas may still read files of the old package for a while.
        self._remove_later(old_dir)

    def _remove_later(self, path: Path) -> None:
        delay = self.settings.drain_grace_seconds + 60
        asyncio.get_running_loop().call_later(delay, shutil.rmtree, path, True)

    async def _spec(self, record: DeploymentRecord) -> ReplicaSpec:
        secrets_dir = None
        if record.config.secrets:
            values = await self._secret_values(record.config.secrets)
            secrets_dir = self.secret_folders.write(record.id, record.config.secrets, values)
        return ReplicaSpec(record.id, record.package_dir, record.config, python=record.python, secrets_dir=secrets_dir)

    async def _add_router(self, record: DeploymentRecord) -> None:
        model = self.registry.models[record.model_id]
        self.controller.add(
            record.id,
            name=model.name,
            spec=await self._spec(record),
            settings=record.settings,
            queue_limit=self.settings.queue_limit,
            status_url=f"/v1/models/{model.id}/deployments/{record.id}",  # for a 202's caller
        )

    def _unpack_and_validate(self, archive: Path, package_dir: Path) -> tuple[ModelConfig, list[str]]:
        try:  # 413 for a package bomb, from its headers, before anything is written
            check_archive(archive, self.settings.max_package_bytes, self.settings.max_package_files)
        except (tarfile.TarError, OSError, EOFError):
            pass  # not a readable archive: _unpack says so
        _unpack(archive, package_dir)
        config, ignored = load_model_config(package_dir, max_replica_cap=self.settings.max_replica_cap)
        model_file = f"{config.model_module_dir}/{config.model_class_filename}"
        if not (package_dir / model_file).is_file():
            raise ApiError(
                422,
                "no model file",
                reason=f"the package has no {model_file}; it must define class {config.model_class_name}",
                detail=[FieldError("model_class_filename", model_file, "a file in the package").as_dict()],
            )
        problem = _syntax_error(package_dir, config.model_module_dir)
        if problem is not None:  # it could never load: say so now, not at the first predict
            where, text = problem
            raise ApiError(
                422, "the model's code does not compile", reason=text,
                detail=[FieldError(where, text.splitlines()[-1], "Python this server's interpreter can compile").as_dict()],
            )
        return config, list(ignored)

    def _initial_settings(
        self,
        model: ModelRecord,
        config: ModelConfig,
        kind: DeploymentKind,
        promote: bool,
        environment: str,
    ) -> AutoscalingSettings:
        if kind is DeploymentKind.DEVELOPMENT:
            return DEVELOPMENT_AUTOSCALING
        if config.autoscaling is not None:
            return config.autoscaling
        if promote:
            # A promoted deployment inherits the settings of the one it replaces.
            current = model.environments.get(environment)
            if current and current in self.registry.deployments:
                return self.registry.deployments[current].settings
        return AutoscalingSettings()

    # ------------------------------------------------------------------ models and environments

    async def create_model(self, name: Any) -> ModelRecord:
        if not isinstance(name, str) or not valid_model_name(name):
            raise ApiError(422, "invalid model name", detail=[FieldError("name", name, NAME_RULE).as_dict()])
        async with self._lock:
            if self.registry.model_by_name(name) is not None:
                raise ApiError(409, "model exists", reason=f"a model named {name!r} exists already", name=name)
            return await self._create_model(name)

    async def delete_model(self, model_ref: str) -> dict[str, Any]:
        async with self._lock:
            model = self.registry.model(model_ref)
            async with self.store.transaction() as tx:
                await tx.delete_model(model.id)
            for deployment_id in list(model.deployments):
                self._forget_deployment(deployment_id)
            self.registry.remove_model(model)
        log.info("model %s (%s) deleted", model.name, model.id)
        return {"id": model.id, "name": model.name, "deleted": True}

    async def create_environment(self, model_ref: str, name: Any) -> dict[str, Any]:
        if not isinstance(name, str) or not valid_model_name(name) or name in ("development", "deployment"):
            raise ApiError(
                422, "invalid environment name", detail=[FieldError("name", name, NAME_RULE + "; not 'development'").as_dict()]
            )
        async with self._lock:
            model = self.registry.model(model_ref)
            if name in model.environments:
                raise ApiError(409, "environment exists", reason=f"model {model.name!r} has an environment {name!r} already")
            async with self.store.transaction() as tx:
                await tx.set_environment(model.id, name, None, self.wall())
            model.environments[name] = None
        return self.environment_view(model, name)

    def environment_view(self, model: ModelRecord, name: str) -> dict[str, Any]:
        target = self.registry.environment(model, name)
        record = self.registry.deployments.get(target or "")
        return {
            "name": name,
            "model_id": model.id,
            "deployment_id": target,
            "deployment": self.deployment_summary(record) if record is not None else None,
            "predict_url": f"/model/{model.id}/environments/{name}/predict",
        }

    # ------------------------------------------------------------------ settings and promotion

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
                await self._activate(record)
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
        return self.deployment_view(record)

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

    # ------------------------------------------------------------------ activation and deletion

    async def activate(self, model_ref: str, deployment_ref: str) -> dict[str, Any]:
        async with self._lock:
            model = self.registry.model(model_ref)
            record = self.registry.deployment(model, deployment_ref)
            if record.build is not BuildState.BUILT:
                raise ApiError(409, "deployment cannot be activated", reason=record.error or "its build has not finished")
            if not record.active:
                await self._activate(record)
                log.info("%s: deployment %s activated", model.name, record.id)
                self.events.record(record.id, "activated", "activated on request")
        return self.deployment_view(record)

    async def _activate(self, record: DeploymentRecord) -> None:
        now = self.wall()
        async with self.store.transaction() as tx:
            await tx.update_deployment(record.id, active=True, activated_at=now)
        record.active, record.activated_at = True, now
        if self.controller.unretire(record.id) is None:
            await self._add_router(record)

    async def deactivate(self, model_ref: str, deployment_ref: str, *, reason: str = "on request") -> dict[str, Any]:
        async with self._lock:
            model = self.registry.model(model_ref)
            record = self.registry.deployment(model, deployment_ref)
            if record.active:
                await self._deactivate(record, reason)
        return self.deployment_view(record)

    async def _deactivate(self, record: DeploymentRecord, reason: str) -> None:
        async with self.store.transaction() as tx:
            await tx.update_deployment(record.id, active=False)
        record.active = False
        self.controller.retire(record.id)  # it answers what it holds, then its replicas stop
        self.events.record(record.id, "deactivated", f"deactivated ({reason})", reason=reason)
        log.info("%s: deployment %s deactivated (%s)", self.registry.models[record.model_id].name, record.id, reason)

    async def delete_deployment(self, model_ref: str, deployment_ref: str) -> dict[str, Any]:
        async with self._lock:
            model = self.registry.model(model_ref)
            record = self.registry.deployment(model, deployment_ref)
            pointing = self.registry.environments_of(record)
            if pointing:
                raise ApiError(
                    409,
                    "deployment is in use",
                    reason=f"{', '.join(pointing)} point(s) at deployment {record.id}; promote another deployment first",
                    environments=pointing,
                )
            async with self.store.transaction() as tx:
                await tx.delete_deployment(record.id)
            self._forget_deployment(record.id)
        log.info("%s: deployment %s deleted", model.name, record.id)
        return {"id": record.id, "model_id": model.id, "deleted": True}

    def _forget_deployment(self, deployment_id: str) -> None:
        record = self.registry.deployments.get(deployment_id)
        self.controller.retire(deployment_id)
        self.registry.remove_deployment(deployment_id)
        self.secret_folders.remove(deployment_id)
        if record is not None:
            self._remove_later(record.package_dir)

    # ------------------------------------------------------------------ keys and secrets

    async def create_key(self, body: Any) -> dict[str, Any]:
        body = body if isinstance(body, Mapping) else {}
        errors: list[FieldError] = []
        raw_type = body.get("type", KeyType.WORKSPACE.value)
        try:
            key_type = KeyType(raw_type)
        except ValueError:
            errors.append(FieldError("type", raw_type, "workspace or invoke"))
            key_type = KeyType.WORKSPACE
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 128):
            errors.append(FieldError("name", name, "a string of 1 to 128 characters, or null"))
        model_refs = body.get("model_ids")
        model_ids: list[str] | None = None
        if model_refs is not None:
            if key_type is KeyType.WORKSPACE:
                errors.append(FieldError("model_ids", model_refs, "only for invoke keys (workspace keys reach every model)"))
            elif not isinstance(model_refs, list) or not all(isinstance(m, str) for m in model_refs):
                errors.append(FieldError("model_ids", model_refs, "a list of model ids or names"))
            else:
                model_ids = []
                for ref in model_refs:
                    try:
                        model_ids.append(self.registry.model(ref).id)
                    except NotFound:
                        errors.append(FieldError("model_ids", ref, "an existing model's id or name"))
        unknown = sorted(set(body) - {"type", "name", "model_ids"})
        if unknown:
            errors.append(FieldError(unknown[0], body[unknown[0]], "one of: type, name, model_ids"))
        if errors:
            raise ApiError(422, "invalid API key request", detail=[e.as_dict() for e in errors])
        record, secret = KeyRecord.create(type=key_type, name=name, model_ids=model_ids, now=self.wall())
        async with self._lock:
            async with self.store.transaction() as tx:
                await tx.add_key(record.row())
            self.keys.add(record)
        log.info("API key %s (%s) created", record.id, key_type.value)
        return {**key_view(record), "key": secret}

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        async with self._lock:
            record = self.keys.records.get(key_id)
            if record is None or record.revoked_at is not None:
                raise NotFound(f"no API key {key_id!r}" + (" (revoked already)" if record is not None else ""))
            if record.can_manage() and sum(1 for r in self.keys.live() if r.can_manage()) == 1:
                raise ApiError(
                    409, "last workspace key", reason="revoking it would lock everyone out; create another workspace key first"
                )
            now = self.wall()
            async with self.store.transaction() as tx:
                await tx.revoke_key(key_id, now)
            self.keys.revoke(key_id, now)
        log.info("API key %s revoked", key_id)
        return {"id": key_id, "revoked": True}

    async def _secret_values(self, names: Iterable[str]) -> dict[str, str]:
        rows = await self.store.secret_rows(names)
        return {row["name"]: self.secret_box.decrypt(row["ciphertext"]) for row in rows}

    async def list_secrets(self) -> list[dict[str, Any]]:
        return [
            {"name": row["name"], "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"])}
            for row in await self.store.secret_rows()
        ]

    async def set_secret(self, body: Any) -> dict[str, Any]:
        body = body if isinstance(body, Mapping) else {}
        name, value = body.get("name"), body.get("value")
        errors = []
        if not isinstance(name, str) or not valid_secret_name(name):
            errors.append(FieldError("name", name, "1 to 128 letters, digits, '_', '-' or '.'"))
        if not isinstance(value, str) or len(value.encode()) > MAX_SECRET_BYTES:
            shown = "(hidden)" if isinstance(value, str) else value
            errors.append(FieldError("value", shown, f"a string of at most {MAX_SECRET_BYTES} bytes"))
        if errors:
            raise ApiError(422, "invalid secret", detail=[e.as_dict() for e in errors])
        assert isinstance(name, str) and isinstance(value, str)
        now = self.wall()
        async with self._lock:
            async with self.store.transaction() as tx:
                created = await tx.put_secret(name, self.secret_box.encrypt(value), now)
            await self._refresh_secret_folders(name)
        log.info("secret %r set", name)
        return {"name": name, "created_at": iso(created), "updated_at": iso(now)}

    async def delete_secret(self, name: str) -> dict[str, Any]:
        async with self._lock:
            async with self.store.transaction() as tx:
                if not await tx.delete_secret(name):
                    raise NotFound(f"no secret {name!r}")
            await self._refresh_secret_folders(name)
        log.info("secret %r deleted", name)
        return {"name": name, "deleted": True}

    async def _refresh_secret_folders(self, name: str) -> None:
        affected = [
            record
            for record in self.registry.deployments.values()
            if name in record.config.secrets and self.controller.get(record.id) is not None
        ]
        if not affected:
            return
        values = await self._secret_values({n for record in affected for n in record.config.secrets})
        for record in affected:  # each folder keeps only what its package declares
            self.secret_folders.write(record.id, record.config.secrets, values)

    # ------------------------------------------------------------------ housekeeping

    async def _housekeeping_loop(self) -> None:
        while True:
            await self.clock.sleep(self.settings.housekeeping_seconds)
            try:
                await self.housekeeping()
            except Exception:
                log.exception("housekeeping failed")

    async def housekeeping(self, *, deactivate: bool = True) -> None:
        """Write last-use times to the store; deactivate deployments idle for too long."""
        now = self.wall()
        used: dict[str, float] = {}
        for scaled in self.controller:
            if scaled.last_active is not None and self._seen_active.get(scaled.id) != scaled.last_active:
                self._seen_active[scaled.id] = scaled.last_active
                record = self.registry.deployments.get(scaled.id)
                if record is not None:
                    record.last_request_at = used[record.id] = now
        keys_used = self.keys.take_used()
        if used or keys_used:
            async with self.store.transaction() as tx:
                await tx.touch_deployments(used)
                await tx.touch_keys(keys_used)
        if not deactivate:
            return
        for record in list(self.registry.deployments.values()):
            days = self._idle_limit_days(record)
            if days is None or not record.active or record.build is not BuildState.BUILT:
                continue
            since = max(t for t in (record.last_request_at, record.activated_at, record.created_at) if t is not None)
            live = self.controller.get(record.id)
            busy = live is not None and live.router.concurrency > 0
            if now - since >= days * 86400 and not busy:
                async with self._lock:
                    if record.active:
                        await self._deactivate(record, f"no traffic for {days:g} days")

    def _idle_limit_days(self, record: DeploymentRecord) -> float | None:
        if record.kind is DeploymentKind.DEVELOPMENT:
            return self.settings.deactivate_development_after_days
        return self.settings.deactivate_published_after_days

    # ------------------------------------------------------------------ views

    def traffic(self, model_ref: str, deployment_ref: str) -> dict[str, Any]:
        """The deployment's per-second arrivals and concurrency (what `swell advise` replays)."""
        record = self.registry.deployment(self.registry.model(model_ref), deployment_ref)
        scaled = self.controller.get(record.id)
        if scaled is None:
            return {"start": None, "interval": 1.0, "arrivals": [], "concurrency": []}
        return scaled.history.as_dict()

    def status(self, record: DeploymentRecord) -> DeploymentStatus:
        if record.build is not BuildState.BUILT:
            return deployment_status(build=record.build)
        if not record.active:
            return DeploymentStatus.INACTIVE
        scaled = self.controller.get(record.id)
        if scaled is None:
            return DeploymentStatus.INACTIVE
        return scaled.status()

    def model_view(self, model: ModelRecord) -> dict[str, Any]:
        return {
            "id": model.id,
            "name": model.name,
            "created_at": iso(model.created_at),
            "development_deployment_id": model.development,
            "environments": dict(model.environments),
            "deployments": [
                self.deployment_summary(self.registry.deployments[d])
                for d in model.deployments
                if d in self.registry.deployments
            ],
        }

    def deployment_summary(self, record: DeploymentRecord) -> dict[str, Any]:
        scaled = self.controller.get(record.id)
        ready = total = 0
        if scaled is not None:
            total = scaled.router.serving_count
            ready = self.controller.ready_count(record.id)
        return {
            "id": record.id,
            "model_id": record.model_id,
            "model_name": self.registry.models[record.model_id].name,
            "kind": record.kind.value,
            "status": self.status(record).value,
            "active": record.active,
            "revision": record.revision,
            "environments": self.registry.environments_of(record),
            "replicas_ready": ready,
            "replicas_total": total,
            "autoscaling_settings": record.settings.model_dump(),
            "created_at": iso(record.created_at),
            "last_request_at": iso(record.last_request_at) if record.last_request_at else None,
        }

    def deployment_view(self, record: DeploymentRecord) -> dict[str, Any]:
        view = self.deployment_summary(record)
        scaled = self.controller.get(record.id)
        replicas: list[dict[str, Any]] = []
        decision = None
        error = record.error
        concurrency = {"in_flight": 0, "queued": 0}
        if scaled is not None:
            router = scaled.router
            for handle in router.handles.values():
                replica = handle.replica
                replicas.append(
                    {
                        "id": replica.id,
                        "state": ReplicaState.DRAINING.value if handle.draining or handle.stopping else replica.state.value,
                        "in_flight": handle.in_flight,
                        "pid": replica.pid,
                        "node": replica.node,  # the Ray node it runs on (None: this machine)
                        "load_seconds": replica.load_seconds,
                        "error": replica.error,
                        # serving's: why it is pending; where its cold start went (once ready)
                        "reason": replica.reason,
                        "cold_start": cold.as_dict() if (cold := scaled.cold_start(handle.id)) is not None else None,
                    }
                )
            if scaled.decision is not None:
                decision = {
                    "target": scaled.decision.target,
                    "action": scaled.decision.action.value,
                    "reason": scaled.decision.reason,
                    "average_concurrency": round(scaled.decision.average, 4),
                }
            error = error or scaled.error
            concurrency = {"in_flight": router.in_flight, "queued": router.queued}
        view.update(
            {
                "replicas": replicas,
                "last_decision": decision,
                "error": error,
                "pending_reason": scaled.pending_reason if scaled is not None else None,
                "warnings": record.warnings,
                "predict_concurrency": record.config.runtime.predict_concurrency,
                **concurrency,
            }
        )
        return view


def key_view(record: KeyRecord) -> dict[str, Any]:
    """An API key as the API shows it: never its secret or hash."""
    return {
        "id": record.id,
        "name": record.name,
        "type": record.type.value,
        "model_ids": record.model_ids,
        "created_at": iso(record.created_at),
        "last_used_at": iso(record.last_used_at) if record.last_used_at else None,
    }


def _requirements(config: ModelConfig, package_dir: Path) -> list[str]:
    requirements = list(config.requirements)
    if config.requirements_file:
        path = package_dir / config.requirements_file
        if path.is_file():
            for line in path.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line and not line.startswith("-"):
                    requirements.append(line)
    return requirements


def _unpack(archive: Path, package_dir: Path) -> None:
    """Extract a package's tar.gz safely; its root is where config.yaml is."""
    package_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=package_dir.parent, prefix=".unpack-") as tmp:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(tmp, filter="data")
            fsync_tree(Path(tmp))  # on disk before the rename below publishes it
        except OSError as exc:
            disk = storage_error(package_dir, exc)
            if disk is not None:
                raise disk from exc
            raise ApiError(400, "the upload is not a readable tar.gz of a model package", reason=str(exc)) from None
        except (tarfile.TarError, EOFError) as exc:
            raise ApiError(400, "the upload is not a readable tar.gz of a model package", reason=str(exc)) from None
        root = Path(tmp)
        if not (root / "config.yaml").is_file():
            entries = [p for p in root.iterdir() if not p.name.startswith(".")]
            if len(entries) == 1 and entries[0].is_dir() and (entries[0] / "config.yaml").is_file():
                root = entries[0]
            else:
                raise ApiError(
                    422,
                    "no config.yaml",
                    reason="a model package is a directory with config.yaml and model/model.py; "
                    "config.yaml must be at its root (or in its one top-level folder)",
                    detail=[FieldError("config.yaml", None, "required at the package root").as_dict()],
                )
        shutil.move(str(root), str(package_dir))
        if root == Path(tmp):
            Path(tmp).mkdir()  # TemporaryDirectory wants something to remove


def _settings_text(settings: AutoscalingSettings) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.model_dump().items())


def _syntax_error(package_dir: Path, module_dir: str, *, most: int = 500) -> tuple[str, str] | None:
    """The first Python file under ``module_dir`` that does not compile: (its path, the error as Python shows it)."""
    import traceback

    for n, path in enumerate(sorted((package_dir / module_dir).rglob("*.py"))):
        if n >= most:
            break
        name = str(path.relative_to(package_dir))
        try:
            compile(path.read_bytes(), name, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:  # ValueError: a null byte
            return name, "".join(traceback.format_exception_only(exc)).rstrip()
        except OSError:
            continue
    return None
