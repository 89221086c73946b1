"""API keys: workspace keys manage everything, invoke keys only call predict.

Only a key's sha256 is stored.  The table lives in the store; this object is
its in-memory index, asked once per request: a header value seen before is one
dict lookup, a new one is hashed and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from swell.control._ids import new_id
from swell.serving import MetricFamily

__all__ = ["ApiKeys", "KeyRecord", "KeyType", "digest", "new_secret"]

_SCHEMES = (b"api-key ", b"bearer ")
_CACHE_LIMIT = 1024


class KeyType(str, Enum):
    WORKSPACE = "workspace"  # every route
    INVOKE = "invoke"  # predict only, optionally on some models


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_secret() -> str:
    return "sw_" + secrets.token_urlsafe(24)


@dataclass
class KeyRecord:
    id: str
    type: KeyType
    sha256: str
    created_at: float
    name: str | None = None
    model_ids: list[str] | None = None  # invoke keys: the models they may call; None: all
    last_used_at: float | None = None
    revoked_at: float | None = None

    @classmethod
    def create(
        cls, *, type: KeyType, name: str | None, model_ids: list[str] | None, now: float
    ) -> tuple[KeyRecord, str]:
        """A new record and its secret (shown once, never stored)."""
        secret = new_secret()
        return cls(new_id(10), type, digest(secret), now, name, model_ids), secret

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> KeyRecord:
        return cls(
            id=row["id"],
            type=KeyType(row["type"]),
            sha256=row["sha256"],
            created_at=row["created_at"],
            name=row["name"],
            model_ids=row["model_ids"],
            last_used_at=row["last_used_at"],
            revoked_at=row["revoked_at"],
        )

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type.value,
            "model_ids": self.model_ids,
            "sha256": self.sha256,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "revoked_at": self.revoked_at,
        }

    def can_manage(self) -> bool:
        return self.type is KeyType.WORKSPACE

    def can_invoke(self, model_id: str) -> bool:
        return self.type is KeyType.WORKSPACE or self.model_ids is None or model_id in self.model_ids


log = logging.getLogger("swell.auth")
_FAILURE_LOG_EVERY = 10.0  # seconds between two log lines about bad keys


class ApiKeys:
    """The workspace's live keys, by digest."""

    def __init__(self) -> None:
        self.records: dict[str, KeyRecord] = {}  # by id, revoked ones included
        self._by_digest: dict[str, KeyRecord] = {}
        self._accepted: dict[bytes, KeyRecord] = {}  # header values already checked
        self._used: dict[str, float] = {}  # key id -> last use, not yet written to the store
        # Authorization headers that named no live key (a guesser's tries): counted
        # for /metrics, logged at most once per _FAILURE_LOG_EVERY seconds.
        self.failures = 0
        self._failures_logged = 0
        self._next_failure_log = 0.0

    def __len__(self) -> int:
        return len(self._by_digest)

    def load(self, records: Iterable[KeyRecord]) -> None:
        for record in records:
            self.add(record)

    def add(self, record: KeyRecord) -> None:
        self.records[record.id] = record
        if record.revoked_at is None:
            self._by_digest[record.sha256] = record

    def revoke(self, key_id: str, now: float) -> KeyRecord:
        record = self.records[key_id]
        record.revoked_at = now
        self._by_digest.pop(record.sha256, None)
        self._accepted.clear()  # a cached header must not outlive its key
        self._used.pop(key_id, None)
        return record

    def live(self) -> list[KeyRecord]:
        return [r for r in self.records.values() if r.revoked_at is None]

    def accepted(self, value: bytes | None) -> KeyRecord | None:
        """The key of a header value already checked and accepted (no hashing), if any."""
        record = self._accepted.get(value) if value else None
        if record is not None:
            self._used[record.id] = time.time()
        return record

    def authenticate(self, value: bytes | None) -> KeyRecord | None:
        """The key that ``Authorization: Api-Key <key>`` (or ``Bearer``) names, if live."""
        if not value:
            return None
        record = self.accepted(value)
        if record is not None:
            return record
        record = self._check(value)
        if record is None:
            self._failed()
            return None
        if len(self._accepted) >= _CACHE_LIMIT:
            self._accepted.clear()
        self._accepted[value] = record
        self._used[record.id] = time.time()
        return record

    def _failed(self) -> None:
        self.failures += 1
        now = time.monotonic()
        if now >= self._next_failure_log:
            log.warning(
                "%d request(s) with an unknown or revoked API key since the last such line (%d in all); "
                "swell_auth_failures_total counts them",
                self.failures - self._failures_logged,
                self.failures,
            )
            self._failures_logged = self.failures
            self._next_failure_log = now + _FAILURE_LOG_EVERY

    def metric_families(self) -> tuple[MetricFamily, ...]:
        failures = MetricFamily(
            "swell_auth_failures", "counter", "Requests whose Authorization header named no live API key"
        )
        failures.add((), self.failures)
        return (failures,)

    def _check(self, value: bytes) -> KeyRecord | None:
        lowered = value[:8].lower()
        for scheme in _SCHEMES:
            if lowered.startswith(scheme):
                key = value[len(scheme):].strip().decode("latin-1")
                break
        else:
            return None
        wanted = digest(key)
        for known, record in self._by_digest.items():
            if hmac.compare_digest(wanted, known):
                return record
        return None

    def take_used(self) -> dict[str, float]:
        """Last-use times since the previous call, for the store."""
        used, self._used = self._used, {}
        for key_id, at in used.items():
            if key_id in self.records:
                self.records[key_id].last_used_at = at
        return used
