"""The control plane: pushes become deployments; deployments get routers and replicas."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping
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
from swell.control._ids import new_id
from swell.control._keys import ApiKeys
from swell.control._registry import (
    DeploymentKind,
    DeploymentRecord,
    ModelRecord,
    NotFound,
    Registry,
    valid_model_name,
)
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

__all__ = ["ApiError", "ControlPlane", "PushResult"]

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
    """Owns the registry, the control loop and the keys of one server."""

    def __init__(
        self,
        settings: ServerSettings,
        backend: ReplicaBackend,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.registry = Registry()
        self.clock = clock or RealClock()
        self.controller = Controller(backend, settings=settings, clock=self.clock)
        self.keys = ApiKeys(self.data_dir / "keys.json")
        self._push_lock = asyncio.Lock()

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await self.controller.start()

    async def close(self) -> None:
        await self.controller.close()

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
        scaled = self.controller.get(record.id)
        if scaled is None:
            if record.build is BuildState.BUILDING:
                raise ApiError(503, "deployment is building", reason="its requirements are being installed; try again shortly")
            raise ApiError(503, "deployment unavailable", reason=record.error or f"status {self.status(record).value}")
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
        """Unpack, validate and build a package, then make it a deployment."""
        deployment_id = new_id()
        package_dir = self.data_dir / "packages" / deployment_id
        try:
            # Extraction and validation touch the disk (a package may carry
            # gigabytes of weights): off the loop, so predict traffic flows on.
            config, ignored = await asyncio.to_thread(self._unpack_and_validate, archive, package_dir)
        except ConfigError as exc:
            shutil.rmtree(package_dir, ignore_errors=True)
            raise ApiError(422, "invalid config.yaml", detail=[e.as_dict() for e in exc.errors]) from None
        except ApiError:
            shutil.rmtree(package_dir, ignore_errors=True)
            raise
        warnings = [f"config.yaml key {key!r} is accepted for Truss compatibility but not acted on" for key in ignored]
        name = model_name or config.model_name
        if not name:
            shutil.rmtree(package_dir, ignore_errors=True)
            raise ApiError(422, "no model name", detail=[FieldError("model_name", None, "give --model-name or set model_name in config.yaml").as_dict()])
        if not valid_model_name(name):
            shutil.rmtree(package_dir, ignore_errors=True)
            raise ApiError(422, "invalid model name", detail=[FieldError("model_name", name, "letters, digits, '.', '_' or '-', at most 64, starting with a letter or digit").as_dict()])
        if environment not in ("production", "staging"):
            shutil.rmtree(package_dir, ignore_errors=True)
            raise ApiError(422, "unknown environment", detail=[FieldError("environment", environment, "production or staging").as_dict()])

        async with self._push_lock:
            model = self.registry.model_by_name(name) or self.registry.add_model(new_id(), name)
            kind = DeploymentKind.PUBLISHED if publish else DeploymentKind.DEVELOPMENT
            settings = self._initial_settings(model, config, kind, promote, environment)
            record = DeploymentRecord(
                deployment_id, model.id, kind, package_dir, config, settings, warnings=warnings
            )
            self.registry.add_deployment(record)
            if kind is DeploymentKind.DEVELOPMENT and config.autoscaling is not None:
                warnings.append("autoscaling in config.yaml applies to published deployments; development is fixed")

        requirements = _requirements(config, package_dir)
        if requirements:
            log.info("%s: building the environment for %d requirement(s)", name, len(requirements))
            try:
                python = await asyncio.to_thread(ensure_environment, requirements, self.data_dir / "envs")
            except RequirementsInstallError as exc:
                record.build = BuildState.FAILED
                record.error = str(exc)
                log.warning("%s: build of deployment %s failed: %s", name, deployment_id, exc)
                raise ApiError(
                    422,
                    "requirements could not be installed",
                    reason=str(exc),
                    model_id=model.id,
                    deployment_id=deployment_id,
                    status=DeploymentStatus.FAILED.value,
                ) from None
            except Exception as exc:  # venv creation itself failed
                record.build = BuildState.FAILED
                record.error = f"could not build the environment: {exc}"
                raise ApiError(500, "build failed", reason=record.error, deployment_id=deployment_id) from None
            record.python = str(python)
        else:
            record.python = sys.executable
        record.build = BuildState.BUILT

        async with self._push_lock:
            router = DeploymentRouter(
                deployment_id,
                name=name,
                spec=ReplicaSpec(deployment_id, package_dir, config, python=record.python),
                settings=settings,
                now=self.clock.now,
                queue_limit=self.settings.queue_limit,
            )
            self.controller.add(router)
            promoted: str | None = None
            if kind is DeploymentKind.DEVELOPMENT:
                for old_id in [d for d in model.deployments if d != deployment_id]:
                    old = self.registry.deployments.get(old_id)
                    if old is not None and old.kind is DeploymentKind.DEVELOPMENT:
                        self._retire(old)
                model.development = deployment_id
            else:
                first = len(self.registry.published(model)) == 1
                if first or promote:
                    target_env = environment if promote else "production"
                    model.environments[target_env] = deployment_id
                    promoted = target_env
        log.info(
            "%s: deployment %s (%s) pushed%s",
            name,
            deployment_id,
            kind.value,
            f", {promoted} points at it" if promoted else "",
        )
        return PushResult(
            model.id, name, deployment_id, kind.value, self.status(record).value, promoted, warnings
        )

    def _unpack_and_validate(self, archive: Path, package_dir: Path) -> tuple[ModelConfig, list[str]]:
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

    def _retire(self, record: DeploymentRecord) -> None:
        record.retired = True
        self.controller.retire(record.id)
        self.registry.remove_deployment(record.id)
        log.info("deployment %s retired (replaced by a newer development push)", record.id)

    # ------------------------------------------------------------------ settings and promotion

    def patch_settings(self, model_ref: str, deployment_ref: str, body: Any) -> dict[str, Any]:
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
        if not isinstance(body, Mapping):
            raise ApiError(
                422,
                "invalid settings",
                detail=[FieldError("autoscaling_settings", body, "must be a JSON object of settings").as_dict()],
            )
        try:
            new = parse_autoscaling(body, base=record.settings, max_replica_cap=self.settings.max_replica_cap)
        except SettingsError as exc:
            raise ApiError(422, "invalid settings", detail=[e.as_dict() for e in exc.errors]) from None
        if new == record.settings:
            return {"status": "UNCHANGED", "settings": new.model_dump()}
        record.settings = new
        if self.controller.get(record.id) is not None:
            self.controller.update_settings(record.id, new)
        log.info("%s: autoscaling settings of %s changed: %s", model.name, record.id, _settings_text(new))
        return {"status": "ACCEPTED", "settings": new.model_dump()}

    def promote(self, model_ref: str, deployment_ref: str, environment: str) -> dict[str, Any]:
        model = self.registry.model(model_ref)
        record = self.registry.deployment(model, deployment_ref)
        if record.kind is not DeploymentKind.PUBLISHED:
            raise ApiError(422, "only published deployments can be promoted", reason="push with --publish first")
        if environment not in model.environments:
            raise ApiError(422, "unknown environment", detail=[FieldError("environment", environment, "production or staging").as_dict()])
        model.environments[environment] = record.id
        log.info("%s: %s now points at deployment %s", model.name, environment, record.id)
        return self.deployment_view(record)

    # ------------------------------------------------------------------ views

    def status(self, record: DeploymentRecord) -> DeploymentStatus:
        if record.build is not BuildState.BUILT:
            return deployment_status(build=record.build)
        scaled = self.controller.get(record.id)
        if scaled is None:
            return DeploymentStatus.INACTIVE
        return scaled.status()

    def model_view(self, model: ModelRecord) -> dict[str, Any]:
        return {
            "id": model.id,
            "name": model.name,
            "created_at": _iso(model.created_at),
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
            handles = [h for h in scaled.router.handles.values() if h.serving]
            total = len(handles) + scaled.router.pending_starts
            ready = sum(1 for h in handles if h.state is ReplicaState.READY)
        return {
            "id": record.id,
            "model_id": record.model_id,
            "model_name": self.registry.models[record.model_id].name,
            "kind": record.kind.value,
            "status": self.status(record).value,
            "environments": self.registry.environments_of(record),
            "replicas_ready": ready,
            "replicas_total": total,
            "autoscaling_settings": record.settings.model_dump(),
            "created_at": _iso(record.created_at),
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
                        "load_seconds": replica.load_seconds,
                        "error": replica.error,
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
                "warnings": record.warnings,
                "predict_concurrency": record.config.runtime.predict_concurrency,
                **concurrency,
            }
        )
        return view


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
        except (tarfile.TarError, OSError, EOFError) as exc:
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


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _settings_text(settings: AutoscalingSettings) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.model_dump().items())


__all__ += ["NotFound"]
