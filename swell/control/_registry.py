"""Models, deployments and environments: the control plane's records.

The store (:mod:`swell.control._store`) is where they last; this is their
in-memory index, which the request path reads without touching the database.
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from swell.config import AutoscalingSettings, ModelConfig
from swell.control._rolling import TrafficSplit
from swell.serving import BuildState

__all__ = [
    "DEFAULT_ENVIRONMENTS",
    "ENVIRONMENT_NAME_RULE",
    "MODEL_NAME_MAX",
    "DeploymentKind",
    "DeploymentRecord",
    "ModelRecord",
    "NotFound",
    "Registry",
    "clean_model_name",
    "valid_environment_name",
]

DEFAULT_ENVIRONMENTS = ("production", "staging")
# Environment names are part of URLs (…/environments/{name}/predict): a narrow rule.
_ENVIRONMENT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # \Z: "$" would let a trailing newline through
ENVIRONMENT_NAME_RULE = "letters, digits, '.', '_' or '-', at most 64, starting with a letter or digit"
MODEL_NAME_MAX = 64  # characters; the store's column (models.name VARCHAR(64)) holds no more
# Unicode categories a name may not hold: controls (a newline, NUL, a tab), format
# characters (bidirectional overrides, which make a name read as another), surrogates,
# private use, unassigned, and line or paragraph separators.
_NOT_IN_NAMES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_JOINERS = frozenset("\u200c\u200d")  # zero-width (non-)joiners: parts of ordinary words and emoji


def valid_environment_name(name: str) -> bool:
    return bool(_ENVIRONMENT_NAME_RE.match(name))


def clean_model_name(raw: object) -> str:
    """A model's name as it is kept and shown: free text as in Truss ("Test Async"),
    surrounding whitespace trimmed, in Unicode NFC (so a name typed two ways is one name).

    Raises ValueError whose text says what is allowed.  URLs use the model's id, so a
    name needs no rule of its own beyond being readable: not empty, no control or
    format characters, at most :data:`MODEL_NAME_MAX` characters."""
    rule = f"any text of 1 to {MODEL_NAME_MAX} characters without control characters (spaces are fine)"
    if not isinstance(raw, str):
        raise ValueError(f"{rule}; got {type(raw).__name__}")
    for position, char in enumerate(raw):
        if unicodedata.category(char) in _NOT_IN_NAMES and char not in _JOINERS:
            raise ValueError(f"{rule}; U+{ord(char):04X} at {position} is a control or format character")
    name = unicodedata.normalize("NFC", raw.strip())
    if not name:
        raise ValueError(f"{rule}; this one is empty")
    if len(name) > MODEL_NAME_MAX:
        raise ValueError(f"{rule}; this one has {len(name)}")
    return name


class NotFound(LookupError):
    """A model, deployment or environment that does not exist."""


class DeploymentKind(str, Enum):
    DEVELOPMENT = "development"
    PUBLISHED = "published"


@dataclass
class DeploymentRecord:
    id: str
    model_id: str
    kind: DeploymentKind
    package_dir: Path
    config: ModelConfig
    settings: AutoscalingSettings
    created_at: float = field(default_factory=time.time)
    build: BuildState = BuildState.BUILDING
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    python: str = ""
    active: bool = True  # a deactivated deployment has no replicas and answers predict with 409
    revision: int = 1  # development deployments: bumped by every push (live reload)
    last_request_at: float | None = None  # wall-clock time of the last request seen
    activated_at: float | None = None

    def row(self) -> dict[str, object]:
        """The store's row."""
        return {
            "id": self.id,
            "model_id": self.model_id,
            "kind": self.kind.value,
            "package_dir": str(self.package_dir),
            "python": self.python,
            "settings": self.settings.model_dump(),
            "build": self.build.value,
            "error": self.error,
            "warnings": list(self.warnings),
            "active": self.active,
            "revision": self.revision,
            "created_at": self.created_at,
            "last_request_at": self.last_request_at,
            "activated_at": self.activated_at,
        }


@dataclass
class ModelRecord:
    id: str
    name: str
    created_at: float = field(default_factory=time.time)
    deployments: list[str] = field(default_factory=list)
    environments: dict[str, str | None] = field(
        default_factory=lambda: dict.fromkeys(DEFAULT_ENVIRONMENTS)
    )
    development: str | None = None
    # Rolling promotions: the share of an environment's requests that goes to the deployment
    # being promoted (read on the request path: empty unless one is under way) ...
    splits: dict[str, TrafficSplit] = field(default_factory=dict)
    # ... and each environment's last one, as the API shows it.
    promotions: dict[str, dict[str, Any]] = field(default_factory=dict)


class Registry:
    """Lookup by id or name; the only writer of the records."""

    def __init__(self) -> None:
        self.models: dict[str, ModelRecord] = {}
        self.deployments: dict[str, DeploymentRecord] = {}
        self._by_name: dict[str, str] = {}

    # ------------------------------------------------------------------ models

    def model(self, ref: str) -> ModelRecord:
        """A model by id or, for convenience, by name."""
        model = self.models.get(ref) or self.models.get(self._by_name.get(ref, ""))
        if model is None:
            raise NotFound(f"no model {ref!r}")
        return model

    def model_by_name(self, name: str) -> ModelRecord | None:
        model_id = self._by_name.get(name)
        return self.models.get(model_id) if model_id else None

    def add_model(self, model: ModelRecord) -> ModelRecord:
        self.models[model.id] = model
        self._by_name[model.name] = model.id
        return model

    def remove_model(self, model: ModelRecord) -> None:
        for deployment_id in list(model.deployments):
            self.deployments.pop(deployment_id, None)
        self.models.pop(model.id, None)
        if self._by_name.get(model.name) == model.id:
            del self._by_name[model.name]

    # ------------------------------------------------------------------ deployments

    def add_deployment(self, record: DeploymentRecord) -> None:
        """Record a deployment.  Pointers (development, environments) move only
        once it has built, so a failed build leaves the model's URLs as they were."""
        self.deployments[record.id] = record
        deployments = self.models[record.model_id].deployments
        if record.id not in deployments:
            deployments.append(record.id)

    def remove_deployment(self, deployment_id: str) -> None:
        record = self.deployments.pop(deployment_id, None)
        if record is None:
            return
        model = self.models.get(record.model_id)
        if model is not None:
            if deployment_id in model.deployments:
                model.deployments.remove(deployment_id)
            if model.development == deployment_id:
                model.development = None
            for env, target in model.environments.items():
                if target == deployment_id:
                    model.environments[env] = None

    def deployment(self, model: ModelRecord, ref: str) -> DeploymentRecord:
        """A deployment of ``model`` by id, or ``development``, or an environment's name."""
        if ref == "development":
            if model.development is None:
                raise NotFound(f"model {model.name!r} has no development deployment; push without --publish")
            ref = model.development
        elif ref in model.environments and ref not in self.deployments:
            target = model.environments[ref]
            if target is None:
                raise NotFound(f"environment {ref!r} of model {model.name!r} points at no deployment yet")
            ref = target
        record = self.deployments.get(ref)
        if record is None or record.model_id != model.id:
            raise NotFound(f"model {model.name!r} has no deployment {ref!r}")
        return record

    def environment(self, model: ModelRecord, environment: str) -> str | None:
        """The deployment id ``environment`` points at (None: nothing yet); NotFound if it does not exist."""
        if environment not in model.environments:
            raise NotFound(
                f"model {model.name!r} has no environment {environment!r}; "
                f"it has: {', '.join(sorted(model.environments))}"
            )
        return model.environments[environment]

    def environment_target(self, model: ModelRecord, environment: str) -> DeploymentRecord:
        target = self.environment(model, environment)
        if target is None:
            raise NotFound(
                f"environment {environment!r} of model {model.name!r} points at no deployment; "
                "push with --publish (the first published deployment goes to production) or --promote"
            )
        return self.deployments[target]

    def environments_of(self, record: DeploymentRecord) -> list[str]:
        model = self.models[record.model_id]
        return sorted(env for env, target in model.environments.items() if target == record.id)

    def published(self, model: ModelRecord) -> list[DeploymentRecord]:
        return [
            self.deployments[d]
            for d in model.deployments
            if d in self.deployments and self.deployments[d].kind is DeploymentKind.PUBLISHED
        ]
