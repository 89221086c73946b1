"""A deployment's life: pushed, built, reloaded, activated and deactivated, deleted.

A push unpacks and validates a package off the event loop, builds its Python
environment, and makes it a deployment: a new published one, or the model's
development one reloaded in place (same id, new code).  Models and their
environments are made and removed here too.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import tarfile
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swell.config import (
    DEVELOPMENT_AUTOSCALING,
    AutoscalingSettings,
    ConfigError,
    FieldError,
    ModelConfig,
    load_model_config,
    python_version_note,
    truss_setting_warnings,
)
from swell.control._access import Access
from swell.control._errors import ApiError
from swell.control._ids import new_id
from swell.control._limits import check_archive
from swell.control._registry import (
    DEFAULT_ENVIRONMENTS,
    ENVIRONMENT_NAME_RULE,
    DeploymentKind,
    DeploymentRecord,
    ModelRecord,
    clean_model_name,
    valid_environment_name,
)
from swell.control._shared import Part, Shared
from swell.control._store import Snapshot
from swell.control._views import Views
from swell.files import fsync_tree, storage_error
from swell.modelserver import (
    BuildCommandError,
    BuildLayout,
    RequirementsInstallError,
    check_build_commands,
    ensure_build,
    ensure_environment,
)
from swell.serving import BuildState, DeploymentStatus, ReplicaSpec, tracing_env

__all__ = ["Lifecycle", "PushResult"]

log = logging.getLogger("swell.control")


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


class Lifecycle(Part):
    def __init__(self, shared: Shared, access: Access, views: Views) -> None:
        super().__init__(shared)
        self.access = access
        self.views = views
        # Pushes of one model run one at a time (name -> [lock, holders and waiters]),
        # so its environment pointer and development deployment change atomically.
        self._pushes: dict[str, list[Any]] = {}

    @asynccontextmanager
    async def _serialised(self, name: str) -> AsyncIterator[None]:
        entry = self._pushes.setdefault(name, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._pushes[name]

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
        creates a new immutable deployment.  ``promote`` here only picks the
        settings a published deployment inherits; :meth:`ControlPlane.push`
        then promotes it.
        """
        package_id = new_id()
        package_dir = self.data_dir / "packages" / package_id
        try:
            # Extraction and validation touch the disk (a package may carry
            # gigabytes of weights): off the loop, so predict traffic flows on.
            config, _ = await asyncio.to_thread(self._unpack_and_validate, archive, package_dir)
            warnings = truss_setting_warnings(config)
            warnings += _check_build_commands(config)
            name = model_name or config.model_name
            if not name:
                raise ApiError(422, "no model name", detail=[FieldError("model_name", None, "give --model-name or set model_name in config.yaml").as_dict()])
            name = self._model_name(name, "model_name")
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
        try:
            async with self._serialised(name):
                return await self._push(name, package_id, package_dir, config, kind, warnings, promote, environment)
        except BaseException:
            if package_id not in self.registry.deployments:  # no row points at it (a reload's new code, a refusal)
                shutil.rmtree(package_dir, ignore_errors=True)
            raise

    def _model_name(self, raw: Any, field_name: str) -> str:
        """The name as kept (:func:`clean_model_name`), or 422 naming the field, the value and what is allowed."""
        try:
            name = clean_model_name(raw)
        except ValueError as exc:
            raise ApiError(422, "invalid model name", detail=[FieldError(field_name, raw, str(exc)).as_dict()]) from None
        self._check_not_an_id(name, field_name)
        return name

    def _check_not_an_id(self, name: str, field_name: str) -> None:
        """A name equal to another model's id would make the two ambiguous in every route."""
        other = self.registry.models.get(name)
        if other is not None and other.name != name:
            raise ApiError(
                422,
                "invalid model name",
                detail=[FieldError(field_name, name, "a name that is not another model's id").as_dict()],
            )

    async def _push(
        self,
        name: str,
        package_id: str,
        package_dir: Path,
        config: ModelConfig,
        kind: DeploymentKind,
        warnings: list[str],
        promote: bool,
        environment: str,
    ) -> PushResult:
        """:meth:`push` once the package is valid, with no other push of the model running."""
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

        python = await self._build(model, record, config, package_dir, new=reload is None)

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
        log.info(
            "%s: deployment %s (%s) %s%s",
            name,
            record.id,
            kind.value,
            f"reloaded (revision {record.revision})" if reload is not None else "pushed",
            f", {promoted} points at it" if promoted else "",
        )
        return PushResult(model.id, name, record.id, kind.value, self.views.status(record).value, promoted, warnings)

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
        model_id = new_id()
        while model_id in self.registry.models or self.registry.model_by_name(model_id) is not None:
            model_id = new_id()  # an id that is another model's name would make a reference mean two models
        model = ModelRecord(model_id, name, created_at=self.wall())
        async with self.store.transaction() as tx:
            await tx.add_model(model.id, name, model.created_at)
            for env in model.environments:
                await tx.set_environment(model.id, env, None, model.created_at)
        return self.registry.add_model(model)

    async def _build(
        self, model: ModelRecord, record: DeploymentRecord, config: ModelConfig, package_dir: Path, *, new: bool
    ) -> str:
        """The interpreter for the package: a venv with its requirements and what its
        build_commands installed (their files land in ``package_dir``), or ours."""
        requirements = config.requirements_in(package_dir)
        commands = config.build_commands
        if not requirements and not commands:
            return sys.executable
        log.info("%s: building the environment for %d requirement(s) and %d build command(s)",
                 model.name, len(requirements), len(commands))
        extra: dict[str, Any] = {}
        try:
            python = await asyncio.to_thread(ensure_environment, requirements, self.data_dir / "envs")
            if commands:
                python = await asyncio.to_thread(
                    ensure_build, commands, package_dir, self.data_dir / "envs",
                    requirements=requirements, base_python=str(python), env=config.environment_variables,
                    layout=BuildLayout(config.data_dir, config.model_module_dir, config.bundled_packages_dir),
                    timeout=self.settings.build_timeout_seconds,
                    log=lambda line: log.info("%s: %s", model.name, line),
                )
        except Exception as exc:
            if isinstance(exc, RequirementsInstallError):
                status, error, reason = 422, "requirements could not be installed", str(exc)
                note = python_version_note(config)
                reason += f"\n{note}" if note else ""
            elif isinstance(exc, BuildCommandError):
                status, error, reason = 422, "build command failed", str(exc)
                extra["build_command"] = exc.as_dict()
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
                status=DeploymentStatus.FAILED.value if new else self.views.status(record).value,
                **extra,
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
        secrets_dir = await self.access.secrets_dir(record)
        return ReplicaSpec(
            record.id, record.package_dir, record.config, python=record.python, secrets_dir=secrets_dir,
            env=tracing_env(self.settings.otlp_endpoint, record.config.environment_variables),
        )

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

    async def create_model(self, name: Any) -> ModelRecord:
        name = self._model_name(name, "name")
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
        if not isinstance(name, str) or not valid_environment_name(name) or name in ("development", "deployment"):
            raise ApiError(
                422, "invalid environment name", detail=[FieldError("name", name, ENVIRONMENT_NAME_RULE + "; not 'development'").as_dict()]
            )
        async with self._lock:
            model = self.registry.model(model_ref)
            if name in model.environments:
                raise ApiError(409, "environment exists", reason=f"model {model.name!r} has an environment {name!r} already")
            async with self.store.transaction() as tx:
                await tx.set_environment(model.id, name, None, self.wall())
            model.environments[name] = None
        return self.views.environment_view(model, name)

    async def activate(self, model_ref: str, deployment_ref: str) -> dict[str, Any]:
        async with self._lock:
            model = self.registry.model(model_ref)
            record = self.registry.deployment(model, deployment_ref)
            if record.build is not BuildState.BUILT:
                raise ApiError(409, "deployment cannot be activated", reason=record.error or "its build has not finished")
            if not record.active:
                await self.activate_record(record)
                log.info("%s: deployment %s activated", model.name, record.id)
                self.events.record(record.id, "activated", "activated on request")
        return self.views.deployment_view(record)

    async def activate_record(self, record: DeploymentRecord) -> None:
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
                await self.deactivate_record(record, reason)
        return self.views.deployment_view(record)

    async def deactivate_record(self, record: DeploymentRecord, reason: str) -> None:
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
        self.events.forget(deployment_id)  # its rows went with it; its replicas' last news is not kept
        record = self.registry.deployments.get(deployment_id)
        self.controller.retire(deployment_id)
        self.registry.remove_deployment(deployment_id)
        self.access.secret_folders.remove(deployment_id)
        if record is not None:
            self._remove_later(record.package_dir)

    def restore(self, snapshot: Snapshot) -> None:
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
        if snapshot.models:
            log.info(
                "restored %d model(s), %d deployment(s), %d key(s)",
                len(snapshot.models),
                len(snapshot.deployments),
                len(snapshot.api_keys),
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
                config, _ = load_model_config(package_dir, max_replica_cap=self.settings.max_replica_cap, stored=True)
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

    async def bring_back(self) -> None:
        """Give every active deployment that built its router again (after a restart)."""
        for record in list(self.registry.deployments.values()):
            if record.active and record.build is BuildState.BUILT:
                await self._add_router(record)


def _check_build_commands(config: ModelConfig) -> list[str]:
    """Warnings for the package's build_commands; 422 for one that only runs inside an image."""
    refused, warnings = check_build_commands(config.build_commands)
    if refused:
        raise ApiError(
            422, "build command not supported",
            reason="; ".join(f"build_commands[{i}] {why}" for i, why in refused),
            detail=[
                FieldError(f"build_commands.{i}", config.build_commands[i],
                           "a command the server's user can run on the host (no apt-get, sudo, …)").as_dict()
                for i, _ in refused
            ],
        )
    return warnings


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
