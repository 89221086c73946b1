"""Typed settings: autoscaling, the model package's ``config.yaml``, the server.

One pydantic tree serves the CLI, the HTTP API and the store.  Every validation
error is turned into :class:`SettingsError`, whose entries name the field, the
value that was given and what is allowed, so the CLI and the API can show the
same message.
"""

from __future__ import annotations

import copy
import math
import re
import sys
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

__all__ = [
    "DEFAULT_MAX_REPLICA_CAP",
    "DEVELOPMENT_AUTOSCALING",
    "AutoscalingSettings",
    "ConfigError",
    "FieldError",
    "ModelConfig",
    "Resources",
    "RuntimeConfig",
    "Schedule",
    "ServerSettings",
    "SettingsError",
    "WEIGHTS_SCHEMES",
    "WeightsSource",
    "load_model_config",
    "parse_autoscaling",
    "parse_cpu",
    "parse_memory",
    "python_version_note",
    "truss_setting_warnings",
]

DEFAULT_MAX_REPLICA_CAP = 10


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class FieldError:
    """One rejected field: where, what was given, what is allowed."""

    field: str
    value: Any
    allowed: str

    def __str__(self) -> str:
        return f"{self.field}: {self.value!r} is not allowed; {self.allowed}"

    def as_dict(self) -> dict[str, Any]:
        value = self.value
        if not isinstance(value, (str, int, float, bool, type(None), list, dict)):
            value = repr(value)
        return {"field": self.field, "value": value, "allowed": self.allowed}


class SettingsError(ValueError):
    """Settings were refused.  Carries one :class:`FieldError` per bad field."""

    def __init__(self, errors: list[FieldError], *, source: str | None = None) -> None:
        self.errors = errors
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + "; ".join(str(e) for e in errors))

    def as_dict(self) -> dict[str, Any]:
        return {"error": "invalid settings", "detail": [e.as_dict() for e in self.errors]}


class ConfigError(SettingsError):
    """A model package's ``config.yaml`` could not be used."""


_RANGE_MESSAGES = {
    "greater_than_equal": "must be ≥ {ge}",
    "less_than_equal": "must be ≤ {le}",
    "greater_than": "must be > {gt}",
    "less_than": "must be < {lt}",
}


def _model_at(model: type[BaseModel] | None, path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The settings class that holds the field at ``path`` (``("runtime",)`` → RuntimeConfig)."""
    for part in path:
        if model is None:
            return None
        if isinstance(part, int):  # an item of a list: its class is the one found so far
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _settings_class(field.annotation)
    return model


def _settings_class(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, tuple):
        for arg in typing.get_args(annotation):
            found = _settings_class(arg)
            if found is not None:
                return found
    return None


def unknown_key_text(key: Any, known: Any) -> str:
    """``unknown key; did you mean 'x'? known keys are: …`` (the nearest known name, if any)."""
    import difflib  # only for a bad key: kept out of every replica's memory.

    names = sorted(str(k) for k in known)
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key; {hint}known keys are: " + ", ".join(names)


def _allowed_text(error: Mapping[str, Any], model: type[BaseModel] | None) -> str:
    """Describe what a field accepts, with its full range where one is declared."""
    loc = error.get("loc", ())
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        holder = _model_at(model, tuple(loc[:-1]))
        if holder is not None:
            known = set(holder.model_fields) | getattr(holder, "TRUSS_IGNORED", frozenset())
            return unknown_key_text(loc[-1] if loc else "", known)
        return "unknown key"
    ranges = getattr(model, "RANGES", {}) if model is not None else {}
    if loc and loc[-1] in ranges and kind != "value_error":
        return ranges[loc[-1]]
    if kind in _RANGE_MESSAGES:
        return _RANGE_MESSAGES[kind].format(**error.get("ctx", {}))
    message = str(error.get("msg", kind))
    return message.removeprefix("Value error, ")


def errors_from_validation(
    exc: ValidationError, model: type[BaseModel] | None = None, *, prefix: str = ""
) -> list[FieldError]:
    out: list[FieldError] = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ())]
        field = ".".join([prefix, *loc] if prefix else loc) or (prefix or "(root)")
        ctx = error.get("ctx") or {}
        value = ctx.get("value", error.get("input"))
        if error.get("type") == "extra_forbidden":
            value = error.get("input")
        elif error.get("type") == "too_long":  # its count, not the whole list back
            value = f"{ctx.get('actual_length')} items"
        out.append(FieldError(field, value, _allowed_text(error, model)))
    return out


# --------------------------------------------------------------------------- autoscaling


_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class Schedule(BaseModel):
    """Hold at least ``min_replica`` replicas during a recurring window (scheduled pre-warm).

    Either a daily window (``start``/``end`` as ``HH:MM``; ``end`` before ``start``
    crosses midnight) or ``cron`` (when the window opens) plus ``duration`` seconds.
    Times are in ``timezone`` (IANA name, default UTC).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replica: int = Field(ge=0)
    start: str | None = None
    end: str | None = None
    cron: str | None = None
    duration: int | None = Field(None, ge=60, le=7 * 86400)
    timezone: str = "UTC"

    @field_validator("start", "end")
    @classmethod
    def _clock_time(cls, value: str | None) -> str | None:
        if value is not None and not _HHMM.match(value):
            raise ValueError("must be a time of day HH:MM (00:00 … 23:59)")
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            # Only a cron schedule needs it: kept out of every replica's memory.
            from swell.cron import parse_cron

            parse_cron(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except (ValueError, LookupError, OSError):
            raise ValueError("must be an IANA time zone such as 'UTC' or 'Europe/Berlin'") from None
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Schedule:
        daily = self.start is not None or self.end is not None
        if daily and self.cron is not None:
            raise ValueError("give either start/end (a daily window) or cron + duration, not both")
        if daily and (self.start is None or self.end is None or self.start == self.end):
            raise ValueError("a daily window needs both start and end, and they must differ")
        if self.cron is not None and self.duration is None:
            raise ValueError("cron needs duration (seconds the window stays open, 60 … 604800)")
        if not daily and self.cron is None:
            raise ValueError("a schedule needs start/end (HH:MM) or cron + duration")
        return self


#: The most schedules one deployment may have.
MAX_SCHEDULES = 100


class AutoscalingSettings(BaseModel):
    """Per-deployment autoscaling settings, named as Baseten names them.

    ``max_replica`` is also bounded by the server's cap, passed as validation
    context ``{"max_replica_cap": N}`` (default 10).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    RANGES: ClassVar[dict[str, str]] = {}  # filled below

    min_replica: int = Field(0, ge=0)
    max_replica: int = Field(1, ge=1)
    autoscaling_window: int = Field(60, ge=10, le=3600)
    scale_down_delay: int = Field(900, ge=0, le=3600)
    concurrency_target: int = Field(1, ge=1, le=10_000)
    target_utilization_percentage: int = Field(70, ge=1, le=100)
    # Bounded: each is validated, stored and listed with the deployment, and a
    # body of 300,000 of them (under the 32 MiB request limit) held the event
    # loop for half a minute while every other caller waited.
    schedules: tuple[Schedule, ...] = Field((), max_length=MAX_SCHEDULES)
    # Swell's extensions beside Baseten's fields, off by default (docs/autoscaling.md, Extras).
    burst: bool = False
    trend: bool = False

    @field_validator("burst", "trend", mode="before")
    @classmethod
    def _switch(cls, value: Any, info: ValidationInfo) -> Any:
        # 1, "true" and "yes" are a typo or a bug in the caller; say so, do not guess.
        if not isinstance(value, bool):
            raise ValueError(_AUTOSCALING_RANGES[info.field_name or ""])
        return value

    @field_validator(
        "min_replica", "max_replica", "autoscaling_window", "scale_down_delay", "concurrency_target",
        "target_utilization_percentage", mode="before",
    )
    @classmethod
    def _whole_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # YAML and JSON both give 2.0 for "2.0"; accept whole floats, refuse 2.5
        # with the field's range rather than pydantic's generic message.
        if isinstance(value, bool):
            raise ValueError(f"must be a whole number; {_AUTOSCALING_RANGES[info.field_name or '']}")
        if isinstance(value, str):  # "3" is a typo or a bug in the caller; say so, do not guess
            raise ValueError(
                f"must be a whole number, not a string; {_AUTOSCALING_RANGES[info.field_name or '']}"
            )
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                raise ValueError(
                    f"must be a whole number; {_AUTOSCALING_RANGES[info.field_name or '']}"
                )
            return int(value)
        return value

    @field_validator("max_replica")
    @classmethod
    def _under_cap(cls, value: int, info: ValidationInfo) -> int:
        cap = (info.context or {}).get("max_replica_cap", DEFAULT_MAX_REPLICA_CAP)
        if value > cap:
            raise ValueError(f"must be between 1 and {cap} (the server's max_replica cap)")
        return value

    @model_validator(mode="after")
    def _min_le_max(self) -> AutoscalingSettings:
        if self.min_replica > self.max_replica:
            raise ValueError(
                f"min_replica ({self.min_replica}) must be ≤ max_replica ({self.max_replica})"
            )
        for schedule in self.schedules:
            if schedule.min_replica > self.max_replica:
                raise ValueError(
                    f"schedules: min_replica ({schedule.min_replica}) must be ≤ max_replica ({self.max_replica})"
                )
        return self

    @model_serializer(mode="wrap")
    def _baseten_shaped(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # An extra that is off is not written: the body stays Baseten's own for
        # every deployment that does not opt in, and absent reads back as off.
        data: dict[str, Any] = handler(self)
        for name in EXTRA_SETTINGS:
            if data.get(name) is False:
                del data[name]
        return data

    @property
    def replica_capacity(self) -> float:
        """Concurrency one replica should carry: target × utilisation."""
        return self.concurrency_target * self.target_utilization_percentage / 100.0


#: Swell's opt-in extras, switches beside Baseten's fields (off by default).
EXTRA_SETTINGS: tuple[str, ...] = ("burst", "trend")

#: The numeric autoscaling settings (all but ``schedules`` and the extras), in the order users know them.
SCALAR_SETTINGS: tuple[str, ...] = tuple(
    name for name in AutoscalingSettings.model_fields if name != "schedules" and name not in EXTRA_SETTINGS
)


_AUTOSCALING_RANGES = {
    "min_replica": "must be between 0 and max_replica",
    "max_replica": f"must be between 1 and the server's cap (default {DEFAULT_MAX_REPLICA_CAP})",
    "autoscaling_window": "must be between 10 and 3600 seconds",
    "scale_down_delay": "must be between 0 and 3600 seconds",
    # Bounded so an absurd value is refused, not stored: 10000 requests per
    # replica is far beyond any model server's parallelism.
    "concurrency_target": "must be a whole number ≥ 1 and ≤ 10000",
    "target_utilization_percentage": "must be between 1 and 100",
    "schedules": f"must be a list of at most {MAX_SCHEDULES} {{min_replica, start, end | cron, duration, timezone}}",
    "burst": "must be true or false (scale up at once for a backlog that would outlast a cold start)",
    "trend": "must be true or false (scale for the concurrency projected one cold start ahead)",
}
AutoscalingSettings.RANGES = _AUTOSCALING_RANGES

#: Development deployments are pinned to these settings.
DEVELOPMENT_AUTOSCALING = AutoscalingSettings(
    min_replica=0,
    max_replica=1,
    autoscaling_window=60,
    scale_down_delay=900,
    concurrency_target=1,
)


def parse_autoscaling(
    data: Mapping[str, Any],
    *,
    base: AutoscalingSettings | None = None,
    max_replica_cap: int = DEFAULT_MAX_REPLICA_CAP,
    source: str | None = None,
) -> AutoscalingSettings:
    """Validate ``data`` (a full or partial body) on top of ``base``.

    Raises :class:`SettingsError` naming every bad field; nothing is applied
    unless everything is valid.
    """
    if not isinstance(data, Mapping):
        raise SettingsError(
            [FieldError("autoscaling_settings", data, "must be an object of settings")],
            source=source,
        )
    merged = {**(base.model_dump() if base else {}), **data}
    try:
        return AutoscalingSettings.model_validate(
            merged, context={"max_replica_cap": max_replica_cap}
        )
    except ValidationError as exc:
        errors = errors_from_validation(exc, AutoscalingSettings)
        fixed = []
        for e in errors:
            if e.field == "max_replica" and "cap" in e.allowed:
                e = FieldError(e.field, e.value, f"must be between 1 and {max_replica_cap}")
            if e.field == "(root)" and e.allowed.startswith("schedules:"):
                e = FieldError("schedules", merged.get("schedules"), e.allowed.removeprefix("schedules: "))
            elif e.field == "(root)":
                e = FieldError("min_replica", merged.get("min_replica"), e.allowed)
            fixed.append(e)
        raise SettingsError(fixed, source=source) from None


# --------------------------------------------------------------------------- resources

_CPU_RE = re.compile(r"^(?P<num>\d+(?:\.\d+)?)(?P<milli>m?)$")
_MEMORY_RE = re.compile(r"^(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[KMGTP]i?|[kmgtp]|B)?$")
_MEMORY_UNITS = {
    None: 1,
    "B": 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "m": 1000**2,
    "G": 1000**3,
    "g": 1000**3,
    "T": 1000**4,
    "t": 1000**4,
    "P": 1000**5,
    "p": 1000**5,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
}
_ACCELERATOR_RE = re.compile(r"^(?P<kind>[A-Za-z0-9_\-]+)(?::(?P<count>\d+))?$")
#: Truss 0.18's accelerator types (truss/base/truss_config.py, Accelerator); others are matched
#: against the machine's GPU names as written, with a push warning.
TRUSS_ACCELERATORS = ("T4", "L4", "A10G", "V100", "A100", "A100_40GB", "H100", "H200", "H100_40GB",
                      "B200", "L40S", "RTX_PRO_6000", "B300", "GB300")


def parse_cpu(value: str | int | float) -> float:
    """``"500m"`` → 0.5, ``"2"`` → 2.0 (Kubernetes quantity, as Truss writes it)."""
    if isinstance(value, bool):
        raise ValueError("must be a CPU quantity such as '500m', '1' or '2.5'")
    if isinstance(value, (int, float)):
        cores = float(value)
    else:
        match = _CPU_RE.match(str(value).strip())
        if not match:
            raise ValueError("must be a CPU quantity such as '500m', '1' or '2.5'")
        cores = float(match["num"]) / (1000.0 if match["milli"] else 1.0)
    if cores <= 0:
        raise ValueError("must be more than 0 cores")
    return cores


def parse_memory(value: str | int) -> int:
    """``"512Mi"`` → 536870912 bytes; plain numbers are bytes."""
    if isinstance(value, bool):
        raise ValueError("must be a memory quantity such as '512Mi' or '2Gi'")
    if isinstance(value, (int, float)):
        size = float(value)
    else:
        match = _MEMORY_RE.match(str(value).strip())
        if not match:
            raise ValueError("must be a memory quantity such as '512Mi', '2Gi' or '1G'")
        size = float(match["num"]) * _MEMORY_UNITS[match["unit"]]
    if size <= 0:
        raise ValueError("must be more than 0 bytes")
    return int(size)


class Resources(BaseModel):
    """``resources:`` of config.yaml (Truss's names)."""

    model_config = ConfigDict(extra="forbid")

    cpu: str = "1"
    memory: str = "2Gi"
    use_gpu: bool = False
    accelerator: str | None = None
    node_count: int | None = None  # Truss multi-node; accepted, not acted on
    instance_type: str | None = None  # Baseten instance names; accepted, not acted on
    fabric: Any = None  # Truss's network fabric (RDMA) requirement; accepted, not acted on

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, value: Any) -> str:
        parse_cpu(value)
        return str(value)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> str:
        parse_memory(value)
        return str(value)

    @field_validator("accelerator", mode="before")
    @classmethod
    def _accelerator(cls, value: Any) -> str | None:
        if value is None or value == "":
            return None
        match = _ACCELERATOR_RE.match(str(value))
        if not match:
            raise ValueError("must be a GPU type with an optional count, such as 'A10G' or 'H100:2'")
        if match["count"] is not None and int(match["count"]) == 0:
            raise ValueError("the count after ':' must be a positive integer, such as 'H100:2'")
        return str(value)

    @property
    def cpu_cores(self) -> float:
        return parse_cpu(self.cpu)

    @property
    def memory_bytes(self) -> int:
        return parse_memory(self.memory)

    @property
    def gpu_count(self) -> int:
        if self.accelerator:
            match = _ACCELERATOR_RE.match(self.accelerator)
            assert match is not None
            return int(match["count"] or 1)
        return 1 if self.use_gpu else 0

    @property
    def gpu_type(self) -> str | None:
        if self.accelerator:
            return self.accelerator.split(":", 1)[0]
        return None


class RuntimeConfig(BaseModel):
    """``runtime:`` of config.yaml.

    Acted on: ``predict_concurrency``, ``streaming_read_timeout``, and Swell's
    own ``predict_idempotent`` and ``load_timeout_seconds``.  Truss's other
    ``runtime`` keys are accepted and not acted on; any other key is refused
    (a typo must not silently keep the default).
    """

    model_config = ConfigDict(extra="forbid")

    predict_concurrency: int = Field(1, ge=1, le=10_000)
    streaming_read_timeout: int = 60
    # Running predict twice on the same input is harmless: a sync request
    # whose replica died under it is sent once more to another replica
    # instead of being answered 502.
    predict_idempotent: bool = False
    # Start to ready, however busy the load; overrides the server's
    # load_timeout_seconds for this model (None: the server's).
    load_timeout_seconds: float | None = Field(None, gt=0)
    # Truss 0.18's other runtime keys (truss/base/truss_config.py, Runtime):
    # valid in a Truss package, not acted on by Swell.
    enable_tracing_data: Any = None
    enable_debug_logs: Any = None
    transport: Any = None
    is_websocket_endpoint: Any = None
    health_checks: Any = None
    oidc: Any = None
    remote_ssh: Any = None
    egress_restrictions: Any = None
    truss_server_version_override: Any = None
    num_workers: Any = None  # legacy; Truss refuses any value but 1


#: URL schemes a weights ``source`` may use (fetched by ``swell.weights``).
WEIGHTS_SCHEMES = ("https://", "http://", "s3://", "hf://")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
#: A Hugging Face model repo id: ``name`` or ``owner/name`` (the Hub's own rule, less its length cap).
_HF_REPO_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: The secret a Hugging Face source reads its token from when the entry names none (Truss's name).
HF_TOKEN_SECRET = "hf_access_token"


def _split_hf(spec: str) -> tuple[str, str | None]:
    """``owner/name@rev`` → ``("owner/name", "rev")``; refuses what is not a model repo id."""
    repo, at, revision = spec.partition("@")
    if repo.split("/", 1)[0] in ("datasets", "spaces"):
        raise ValueError(f"{repo!r} is a dataset or a Space; a weights source is a model repo (hf://owner/name)")
    if not _HF_REPO_RE.match(repo) or ".." in repo or "--" in repo:
        raise ValueError(f"{repo!r} is not a Hugging Face repo id; use hf://owner/name or hf://owner/name@revision")
    if at and not revision:
        raise ValueError("names no revision after '@'; use hf://owner/name@main or a commit")
    return repo, (revision or None)


class WeightsSource(BaseModel):
    """One entry of ``weights`` or ``model_cache`` (Truss's shapes, one model).

    ``weights`` (Truss's v2 API): ``source`` is a URL (``https://…``,
    ``http://…``, ``s3://bucket/key-or-prefix`` or ``hf://owner/name[@revision]``)
    and ``mount_location`` the absolute folder where the model finds the files.
    ``model_cache``: the source is ``repo_id`` (a Hugging Face repo id, the
    default ``kind``, or an ``s3://`` URL with ``kind: s3``) and the files
    appear in ``/app/model_cache/<volume_folder>``.  ``sha256`` (Swell's
    addition) pins the content of a single-file source.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    kind: str | None = None
    allow_patterns: list[str] | None = None
    ignore_patterns: list[str] | None = None
    mount_location: str | None = None
    volume_folder: str | None = None
    use_volume: bool | None = None
    runtime_secret_name: str | None = None
    sha256: str | None = None
    auth_secret_name: str | None = None
    auth: dict[str, Any] | None = None  # Truss's auth section: its auth_secret_name is read

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "://" not in value and _HF_REPO_RE.match(value.partition("@")[0]) and "/" in value:
            value = "hf://" + value  # Truss: a source without a scheme is a Hugging Face repo
        if not value.startswith(WEIGHTS_SCHEMES):
            scheme = value.split("://", 1)[0] + "://" if "://" in value else "(none)"
            raise ValueError(
                f"scheme {scheme} is not supported; a weights source is an "
                f"{', '.join(WEIGHTS_SCHEMES)} URL"
            )
        rest = value.split("://", 1)[1]
        if not rest or rest.startswith("/"):
            raise ValueError("must name a host (https://host/path) or a bucket (s3://bucket/key)")
        if value.startswith("hf://"):
            _split_hf(rest)
        return value

    @field_validator("mount_location")
    @classmethod
    def _mount_location(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must be an absolute path (start with /), e.g. /app/model_cache/llama")
        return value

    @field_validator("volume_folder")
    @classmethod
    def _volume_folder(cls, value: str | None) -> str | None:
        if value is not None and (not value or value.startswith("/") or ".." in Path(value).parts):
            raise ValueError("must be a relative folder name without '..', e.g. 'llama'")
        return value

    @field_validator("sha256", mode="before")
    @classmethod
    def _sha256(cls, value: Any) -> Any:
        if value is None:
            return None
        text = str(value).strip().lower().removeprefix("sha256:")
        if not _SHA256_RE.match(text):
            raise ValueError("must be 64 hexadecimal digits (the file's SHA-256)")
        return text

    @model_validator(mode="after")
    def _has_source(self) -> WeightsSource:
        if not (self.source or self.repo_id):
            raise ValueError("each weights entry needs a 'source' URL (https://…, s3://bucket/key or hf://owner/name)")
        if self.repo_id and not self.source and (self.kind or "hf") not in ("hf", "s3"):
            raise ValueError(
                f"model_cache kind {self.kind!r} is not supported; use kind: s3 with "
                "repo_id: s3://bucket/prefix, kind: hf with a Hugging Face repo id, or a weights "
                "entry with an https:// source"
            )
        hf = self.hf_repo
        if hf is None:
            return self
        if self.source and self.source.count("@") and self.revision and hf[1] != self.revision:
            raise ValueError(f"the revision is given twice: {self.source!r} and revision: {self.revision!r}")
        if self.sha256:
            raise ValueError("sha256 pins a single file; a Hugging Face source is pinned by its revision (a commit)")
        return self

    @property
    def hf_repo(self) -> tuple[str, str | None] | None:
        """``(repo id, revision)`` for a Hugging Face source, else ``None``."""
        if self.source:
            if not self.source.startswith("hf://"):
                return None
            repo, revision = _split_hf(self.source[len("hf://"):])
            return repo, revision or self.revision
        repo = self.repo_id or ""
        if repo.startswith(WEIGHTS_SCHEMES) or self.kind == "s3":
            return None
        return _split_hf(repo)[0], self.revision

    @property
    def url(self) -> str:
        """The source as one URL: ``hf://owner/name[@revision]`` for a Hugging Face repo."""
        hf = self.hf_repo
        if hf is not None:
            return f"hf://{hf[0]}" + (f"@{hf[1]}" if hf[1] else "")
        if self.source:
            return self.source
        repo = self.repo_id or ""
        return repo if repo.startswith(WEIGHTS_SCHEMES) else "s3://" + repo

    @property
    def token_secret(self) -> tuple[str, bool] | None:
        """The secret holding this source's token, and whether the config named it.

        An ``http(s)`` source sends ``auth_secret_name`` only; a Hugging Face
        source falls back to Truss's ``hf_access_token`` (used when declared).
        """
        named = self.auth_secret_name or self.runtime_secret_name or (self.auth or {}).get("auth_secret_name")
        if self.hf_repo is not None:
            return (str(named), True) if named else (HF_TOKEN_SECRET, False)
        if self.auth_secret_name and self.url.startswith(("https://", "http://")):
            return self.auth_secret_name, True
        return None

    @property
    def into_hf_cache(self) -> bool:
        """A ``model_cache`` Hugging Face repo with no volume: Truss bakes it into the image's
        Hugging Face cache, where the model's own ``from_pretrained(repo_id)`` finds it; Swell
        lays it out there too (its files linked from Swell's cache)."""
        return (self.hf_repo is not None and not self.source and not self.volume_folder
                and not self.mount_location and not self.use_volume)


#: Why a ``docker_server`` package is refused (Truss's custom-server packages).
DOCKER_SERVER_UNSUPPORTED = (
    "docker_server is not supported: Swell runs the package's Truss model class "
    "(model/model.py, class Model) in its own replica processes, not a container image, so "
    "a package that only names an image and its start command has nothing Swell can run; "
    "wrap the server in a model/model.py (start it in load(), call it from predict) or serve "
    "the image with a container platform"
)


#: Why a ``trt_llm`` package without a model file is refused (Truss's engine-builder packages).
TRT_LLM_UNSUPPORTED = (
    "trt_llm packages without a model file are not supported: Truss builds a TensorRT-LLM "
    "engine from checkpoint_repository and serves it with Baseten's own engine server "
    "(an image with GPUs), not a model class; Swell runs the package's model/model.py in its "
    "own replica processes, so there is nothing here it can run. Write a model/model.py that "
    "loads the checkpoint (for example with vLLM or transformers, listed in requirements:) instead"
)


# Keys Truss accepts that Swell reads and uses (besides the fields below).
_TRUSS_LAYOUT_KEYS = {
    "model_class_name": "Model",
    "model_module_dir": "model",
    "model_class_filename": "model.py",
    "data_dir": "data",
    "bundled_packages_dir": "packages",
    "external_package_dirs": [],
    "requirements_file": None,
    "description": None,
    "live_reload": False,
}

#: Truss keys that are valid in config.yaml but that Swell does not act on, with Truss's
#: defaults (as `truss init` writes them): a key left at its default is not warned about.
_TRUSS_IGNORED_DEFAULTS: dict[str, Any] = {
    "python_version": None,  # always said: which Python replicas run instead
    "base_image": None,
    "system_packages": [],
    "apply_library_patches": True,
    "spec_version": "2.0",
    "model_framework": "custom",
    "model_type": "Model",
    "input_type": "Any",
    "examples_filename": "examples.yaml",
    "trt_llm": None,
    "build": {"arguments": {}, "model_server": "TrussServer", "secret_to_path_mapping": {}},
    "training_checkpoints": None,
    "external_data": None,
    "cache_internal": [],
    "use_local_src": False,
    "model_repo": None,
    "hf_cache": None,
    "docker_auth": None,
    "bdn": None,
    "bis_llm": None,
}
TRUSS_IGNORED_KEYS = frozenset(_TRUSS_IGNORED_DEFAULTS)


def _is_truss_default(key: str, value: Any) -> bool:
    if key == "python_version":
        return False
    default = _TRUSS_IGNORED_DEFAULTS[key]
    if value is None or value == default or value in ([], {}):
        return True
    if key == "build" and isinstance(value, Mapping):  # parts left at their defaults
        return all(part in (None, {}, []) or part == default.get(name) for name, part in value.items())
    return False


def _ignored_key_warning(key: str, value: Any) -> str:
    if key == "python_version":
        return (
            f"python_version {value!r} is not acted on: replicas run the server's Python "
            f"{sys.version_info.major}.{sys.version_info.minor}"
        )
    if key == "system_packages":
        return (
            f"system_packages ({', '.join(map(str, value)) if isinstance(value, list) else value}) are not "
            "installed: Swell runs no apt-get; install them on the machine that runs the replicas"
        )
    if key == "base_image":
        return (
            "base_image is not acted on: replicas run in the server's Python environment, not that image; "
            "declare the Python packages it brings in requirements:"
        )
    if key == "external_data":
        return (
            "external_data is not downloaded: the files it names will be missing from data/; ship them in "
            "the package's data/ or name them in weights:"
        )
    return f"config.yaml key {key!r} is accepted for Truss compatibility but not acted on"


class ModelConfig(BaseModel):
    """A model package's ``config.yaml``: Truss's keys plus Swell's ``autoscaling``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    #: Valid Truss keys taken out before validation (named when an unknown key is refused).
    TRUSS_IGNORED: ClassVar[frozenset[str]] = TRUSS_IGNORED_KEYS
    #: Those keys' values, for the push's warnings (truss_setting_warnings).
    _truss_ignored: dict[str, Any] = PrivateAttr(default_factory=dict)

    model_name: str | None = None
    description: str | None = None
    model_class_name: str = "Model"
    model_module_dir: str = "model"
    model_class_filename: str = "model.py"
    data_dir: str = "data"
    bundled_packages_dir: str = "packages"
    external_package_dirs: list[str] = Field(default_factory=list)
    live_reload: bool = False
    resources: Resources = Field(default_factory=Resources)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    requirements: list[str] = Field(default_factory=list)
    requirements_file: str | None = None
    # Run at push in the package's environment build (modelserver/_build.py, docs/models.md).
    build_commands: list[str] = Field(default_factory=list)
    environment_variables: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str | None] = Field(default_factory=dict)
    model_metadata: dict[str, Any] = Field(default_factory=dict)
    model_cache: list[WeightsSource] = Field(default_factory=list)
    weights: list[WeightsSource] = Field(default_factory=list)
    autoscaling: AutoscalingSettings | None = None

    @field_validator("environment_variables", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        # Truss stringifies: YAML true → "true", 3 → "3".
        if not isinstance(value, Mapping):
            return value
        # Truss's own rule (TrussConfig.from_dict): `FOO:` with no value is "None" there too.
        return {str(key): "true" if item is True else "false" if item is False else str(item)
                for key, item in value.items()}

    @field_validator("requirements", "build_commands", mode="before")
    @classmethod
    def _requirements(cls, value: Any) -> Any:
        return [] if value is None else value

    @property
    def predict_concurrency(self) -> int:
        return self.runtime.predict_concurrency

    def requirements_in(self, package_dir: Path) -> list[str]:
        """The pip requirements the package declares, as Truss installs them: ``requirements``,
        then ``requirements_file``: a pip requirements file (its ``-r`` files read in, pip
        options kept), or ``pyproject.toml``'s ``[project] dependencies`` (also for a
        ``uv.lock``, read from the ``pyproject.toml`` beside it)."""
        requirements = list(self.requirements)
        if self.requirements_file:
            path = package_dir / self.requirements_file
            if path.name in ("pyproject.toml", "uv.lock"):
                requirements += _pyproject_dependencies(path.parent / "pyproject.toml")
            elif path.is_file():
                requirements += _pip_file_lines(path, set())
        return requirements

    @property
    def weight_sources(self) -> list[WeightsSource]:
        return [*self.model_cache, *self.weights]

    @model_validator(mode="after")
    def _unique_mount_locations(self) -> ModelConfig:
        seen: set[str] = set()
        for entry in self.weights:
            if entry.mount_location is None:
                continue
            if entry.mount_location in seen:
                raise ValueError(
                    f"weights: mount_location {entry.mount_location!r} appears twice; "
                    "each source needs its own folder"
                )
            seen.add(entry.mount_location)
        return self


_PIP_COMMENT = re.compile(r"(^|\s+)#.*$")  # pip's rule: '#' at the start or after whitespace (not a URL's #egg=)
_PIP_FILE_OPTIONS = ("-r", "--requirement", "-c", "--constraint")


def _pip_file_lines(path: Path, seen: set[Path]) -> list[str]:
    """A requirements file's lines as ``pip install -r`` reads them, its ``-r`` files read in
    and ``-c`` files made absolute (the lines are installed from another folder)."""
    seen.add(path.resolve())
    lines: list[str] = []
    for raw in path.read_text().splitlines():
        line = _PIP_COMMENT.sub("", raw).strip()
        option, _, rest = line.partition(" ")
        if "=" in option and option.startswith("--"):
            option, _, rest = option.partition("=")
        if option not in _PIP_FILE_OPTIONS:
            if line:
                lines.append(line)
            continue
        target = (path.parent / rest.strip()).resolve()
        if option in ("-r", "--requirement"):
            if target not in seen and target.is_file():
                lines += _pip_file_lines(target, seen)
        else:
            lines.append(f"--constraint {target}")
    return lines


def _pyproject_dependencies(path: Path) -> list[str]:
    """``[project] dependencies`` of a pyproject.toml, as Truss reads them (local paths left out)."""
    if not path.is_file():
        return []
    try:
        dependencies = tomllib.loads(path.read_text()).get("project", {}).get("dependencies", [])
    except tomllib.TOMLDecodeError:
        return []
    if not isinstance(dependencies, list):
        return []
    return [str(d).strip() for d in dependencies if str(d).strip() and not str(d).strip().startswith((".", "/"))]


def load_model_config(
    package_dir: str | Path, *, max_replica_cap: int = DEFAULT_MAX_REPLICA_CAP, stored: bool = False
) -> tuple[ModelConfig, list[str]]:
    """Read ``package_dir/config.yaml``.

    Returns the config and the Truss keys that were present but are not acted
    on by Swell (for the caller to warn about).  Raises :class:`ConfigError`.
    ``stored``: a package accepted at an earlier push (read again at start);
    keys an older Swell let through unchecked are skipped, not refused, so an
    upgrade does not fail a deployment that was serving.
    """
    path = Path(package_dir) / "config.yaml"
    source = str(path)
    if not path.is_file():
        raise ConfigError(
            [FieldError("config.yaml", str(path), "a model package needs a config.yaml")],
            source=str(package_dir),
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError(
            [FieldError("config.yaml", where, f"must be valid YAML ({getattr(exc, 'problem', exc)})")],
            source=source,
        ) from None
    try:
        parsed = parse_model_config(raw, max_replica_cap=max_replica_cap, source=source)
    except ConfigError as exc:
        unknown = [e for e in exc.errors if e.allowed.startswith("unknown key")]
        if not stored or not unknown or len(unknown) != len(exc.errors):
            raise
        data = copy.deepcopy(raw)
        for error in unknown:
            _drop(data, error.field.split("."))
        return parse_model_config(data, max_replica_cap=max_replica_cap, source=source)
    config = parsed[0]
    model_file = Path(package_dir) / config.model_module_dir / config.model_class_filename
    if raw.get("trt_llm") is not None and not model_file.is_file():
        raise ConfigError([FieldError("trt_llm", raw["trt_llm"], TRT_LLM_UNSUPPORTED)], source=source)
    problem = _requirements_file_problem(Path(package_dir), config.requirements_file)
    if problem is not None:
        raise ConfigError([FieldError("requirements_file", config.requirements_file, problem)], source=source)
    return parsed


def _requirements_file_problem(package_dir: Path, name: str | None) -> str | None:
    """Why ``requirements_file`` cannot be installed (Truss fails its image build), or None."""
    if not name:
        return None
    path = package_dir / name
    if not path.is_file():
        return "a file in the package (requirements.txt, pyproject.toml or uv.lock)"
    if path.name in ("pyproject.toml", "uv.lock"):
        pyproject = path.parent / "pyproject.toml"
        if not pyproject.is_file():
            return "a uv.lock with its pyproject.toml beside it"
        try:
            tomllib.loads(pyproject.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            return f"a valid pyproject.toml ({exc})"
    return None


def _drop(data: Any, path: list[str]) -> None:
    for part in path[:-1]:
        data = data[int(part)] if isinstance(data, list) else data[part]
    data.pop(path[-1], None)


def parse_model_config(
    raw: Any, *, max_replica_cap: int = DEFAULT_MAX_REPLICA_CAP, source: str | None = None
) -> tuple[ModelConfig, list[str]]:
    """Validate a parsed config.yaml; every section's errors come in one :class:`ConfigError`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            [FieldError("config.yaml", raw, "must be a mapping of keys to values")], source=source
        )
    data = dict(raw)
    errors: list[FieldError] = []
    if data.get("docker_server") is not None:
        errors.append(FieldError("docker_server", data["docker_server"], DOCKER_SERVER_UNSUPPORTED))
    data.pop("docker_server", None)
    if "hf_cache" in data and "model_cache" not in data:  # Truss's old name, read as model_cache there
        data["model_cache"] = data.pop("hf_cache") or []
    ignored = sorted(k for k in data if k in TRUSS_IGNORED_KEYS)
    ignored_values = {key: data.pop(key) for key in ignored}
    autoscaling = data.pop("autoscaling", None)
    config: ModelConfig | None = None
    try:
        config = ModelConfig.model_validate(data)
    except ValidationError as exc:
        errors.extend(errors_from_validation(exc, ModelConfig))
    settings: AutoscalingSettings | None = None
    if autoscaling is not None:
        try:
            settings = parse_autoscaling(autoscaling, max_replica_cap=max_replica_cap)
        except SettingsError as exc:
            errors.extend(FieldError(f"autoscaling.{e.field}", e.value, e.allowed) for e in exc.errors)
    if errors or config is None:
        raise ConfigError(errors, source=source)
    if settings is not None:
        config = config.model_copy(update={"autoscaling": settings})
    config._truss_ignored = ignored_values
    return config, ignored


def _set_values(value: Any) -> dict[str, Any]:
    """The entries of a Truss sub-block that are set (not null, not false)."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if v is not None and v is not False}


def _wanted_python(value: Any) -> str | None:
    """``py39`` -> ``3.9`` (Truss's spelling of python_version), else None."""
    match = re.fullmatch(r"py3(\d+)", str(value).strip())
    return f"3.{match[1]}" if match else None


def python_version_note(config: ModelConfig) -> str | None:
    """For a failed requirements install: the Python the package was written for, when it is
    not the one replicas run (a pin with wheels only for older Pythons fails to build here)."""
    wanted = _wanted_python(config._truss_ignored.get("python_version"))
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if wanted is None or wanted == running:
        return None
    return (
        f"config.yaml asks for python_version {config._truss_ignored['python_version']} (Truss builds its "
        f"image with Python {wanted}); replicas here run Python {running}, for which these pins may have "
        f"no wheels: pin versions that support Python {running}"
    )


def truss_setting_warnings(config: ModelConfig) -> list[str]:
    """What a push should say about Truss settings the package sets that Swell accepts without
    acting on: the Truss keys it does not read, and the ``runtime``/``resources`` settings that
    change what Truss does. Keys left at Truss's defaults (as ``truss init`` writes them) are
    not mentioned, but ``python_version`` always is, with the Python replicas run."""
    notes = [
        _ignored_key_warning(key, value)
        for key, value in config._truss_ignored.items()
        if not _is_truss_default(key, value)
    ]
    if config.live_reload:
        notes.append(
            "live_reload is not acted on: a development push (or swell watch) reloads the code "
            "by replacing the replicas; there is no in-place patching"
        )
    runtime, resources = config.runtime, config.resources
    checks = _set_values(runtime.health_checks)
    if checks:
        notes.append(
            f"runtime.health_checks ({', '.join(sorted(checks))}) is not acted on: Swell does not stop "
            "traffic to or restart a replica whose is_healthy() fails; it replaces a replica whose "
            "process exits or whose load fails"
        )
    if runtime.egress_restrictions is not None:
        notes.append("runtime.egress_restrictions is not enforced: replicas can reach any address the machine can")
    transport = runtime.transport if isinstance(runtime.transport, Mapping) else {}
    if transport.get("kind") == "grpc":
        notes.append(
            "runtime.transport.kind 'grpc' is not served: Swell serves predict over HTTP "
            "(and a model's websocket method over WebSocket), not gRPC"
        )
    pings = sorted(k for k in ("ping_interval_seconds", "ping_timeout_seconds") if transport.get(k) is not None)
    if pings:
        notes.append(f"runtime.transport {', '.join(pings)} is not acted on: websocket pings keep uvicorn's defaults")
    for key, what in (("oidc", "no OIDC token is mounted for the model"), ("remote_ssh", "replicas have no SSH access")):
        if _set_values(getattr(runtime, key)).get("enabled") is True:
            notes.append(f"runtime.{key}.enabled is not acted on: {what}")
    if resources.gpu_type is not None and resources.gpu_type not in TRUSS_ACCELERATORS:
        notes.append(
            f"resources.accelerator {resources.gpu_type!r} is not one of Truss's GPU types "
            f"({', '.join(TRUSS_ACCELERATORS)}), where the push would be refused; here it is matched "
            "against the machine's GPU names"
        )
    if resources.instance_type:
        notes.append(
            f"resources.instance_type {resources.instance_type!r} is not acted on: Swell reserves what "
            "resources.cpu, memory and accelerator say (Truss ignores those when instance_type is set)"
        )
    if resources.node_count is not None and resources.node_count > 1:
        notes.append(f"resources.node_count {resources.node_count} is not acted on: each replica runs on one machine")
    if resources.fabric is not None:
        notes.append("resources.fabric is not acted on: Swell places replicas without a network fabric requirement")
    return notes


# --------------------------------------------------------------------------- server


class ServerSettings(BaseModel):
    """How ``swell serve`` runs.  Set by flags and ``SWELL_*`` variables."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = Path("swell-data")
    max_replica_cap: int = Field(DEFAULT_MAX_REPLICA_CAP, ge=1, le=10_000)
    tick_seconds: float = Field(1.0, gt=0, le=60)
    queue_limit: int | None = Field(None, ge=1)
    drain_grace_seconds: float = Field(30.0, ge=0)
    load_timeout_seconds: float = Field(1800.0, gt=0)  # start to ready, however busy the load
    # A starting replica with no sign of progress (no event, no bytes of
    # weights, no log line) for this long has failed; a slow one that shows
    # progress runs up to load_timeout_seconds.
    load_stall_seconds: float = Field(300.0, gt=0)
    # The store: SQLite in data_dir when unset, else e.g. postgresql+asyncpg://user@host/db.
    database_url: str | None = None
    # A deployment with no request for this long is deactivated (None: never).
    deactivate_development_after_days: float | None = Field(14.0, gt=0)
    deactivate_published_after_days: float | None = Field(60.0, gt=0)
    housekeeping_seconds: float = Field(60.0, gt=0)  # how often idle times are written and checked
    # How often `swell advise` reruns, in the background, on a deployment's recorded traffic (with
    # new requests since its last run); 0: never.  Its digest shows in `swell status` and the API.
    advice_seconds: float = Field(3600.0, ge=0)
    promotion_timeout_seconds: float = Field(900.0, gt=0)  # how long a promotion waits for warm replicas
    # Fork replicas from a process that has imported their runtime already:
    # a wake costs ~15 ms instead of ~150 ms, for ~8 MiB with one replica.
    fork_server: bool = True
    # Heavy libraries the fork server imports (those installed) before it
    # forks replicas, so a replica's cold start does not import them again.
    prewarm_modules: list[str] = Field(default_factory=lambda: ["numpy", "torch"])
    # Standby replicas forked from the fork server ahead of time, set up as far
    # as a replica gets without its model; a wake takes one (0: fork on demand).
    pool_size: int = Field(1, ge=0, le=32)
    # What runs replicas: "process" (children of the server, this machine) or
    # "ray" (actors on the Ray cluster at ray_address: "auto" or HOST:PORT; docs/cluster.md).
    backend: Literal["process", "ray"] = "process"
    ray_address: str = "auto"
    # Replicas' `resources.cpu` may add up to this many times the machine's
    # cores (CPU only slows down when short; each replica is still capped at
    # its own cpu).  Memory and GPUs are never promised twice.
    cpu_overcommit: float = Field(4.0, ge=1.0, le=100.0)
    # Capacity pressure (DESIGN.md, docs/serving.md): when a replica waits for
    # resources, idle replicas of other deployments above their min_replica are
    # stopped to make room, least recently used first ("reclaim"); "off" leaves
    # it waiting until room frees on its own.
    capacity_policy: Literal["reclaim", "off"] = "reclaim"
    # Largest body of a predict, async_predict or management request; over it
    # the answer is 413.  32 MiB holds a few images or seconds of audio as
    # base64 JSON -- above SageMaker's real-time limit (25 MB) and far above
    # Vertex AI's (1.5 MB) -- while a bigger input belongs in object storage,
    # passed by URL, as hosted platforms advise.
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1)
    # Largest package upload (`swell push`).  Packages carry code and small
    # files; weights come through `weights:` and are fetched by the replica.
    max_upload_bytes: int = Field(2 * 1024 * 1024 * 1024, ge=1)
    # What a package may unpack to: a few MB of compressed zeros could fill the disk.
    max_package_bytes: int = Field(8 * 1024 * 1024 * 1024, ge=1)
    max_package_files: int = Field(100_000, ge=1)
    # Async inputs accepted and not finished yet, held in memory and the store:
    # per API key, and in all.
    async_max_bytes_per_key: int = Field(256 * 1024 * 1024, ge=1)
    async_max_bytes: int = Field(1024 * 1024 * 1024, ge=1)
    # Hosts (names, addresses or networks such as 10.0.0.0/8) webhooks may
    # reach although they are loopback, private, link-local or this server's
    # own: everything else of that kind is refused (server-side request forgery).
    webhook_allow: list[str] = Field(default_factory=list)
    # An empty or foreign database file is refused at start (it would silently
    # be a new workspace with a new key); this moves it aside and begins anew.
    new_workspace: bool = False
    # Disk each replica's log may use (two rotated files of half each), and a
    # deployment's logs in all (oldest files go first); docs/control.md, Logs.
    replica_log_bytes: int = Field(10 * 1024 * 1024, ge=4096)
    # The front door against slow clients (docs/security.md): a request's head
    # must arrive within header_timeout_seconds of its first byte (of the
    # connection, for the first request); a body may stall at most
    # body_timeout_seconds between two pieces; at most max_connections open
    # (None: the open-file limit less a reserve for replicas and the database).
    header_timeout_seconds: float = Field(10.0, gt=0)
    body_timeout_seconds: float = Field(30.0, gt=0)
    max_connections: int | None = Field(None, ge=1)
    # A client (address) that sends auth_failure_burst unknown or revoked keys is
    # answered 429 without a key check until its budget refills at
    # auth_failure_rate a second (control/_throttle.py).
    auth_failure_burst: int = Field(20, ge=1)
    auth_failure_rate: float = Field(1.0, gt=0)
    deployment_log_bytes: int = Field(100 * 1024 * 1024, ge=4096)
    # How long one of a package's build_commands may run at push before the push fails.
    build_timeout_seconds: float = Field(600.0, gt=0)
    # Traces (docs/observability.md): the OTLP/HTTP collector's base URL
    # (http://host:4318) the server's and the replicas' spans go to; None: off.
    otlp_endpoint: str | None = Field(None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
