"""Workspace API keys: only their sha256 is kept on disk."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

__all__ = ["ApiKeys"]

_SCHEMES = (b"api-key ", b"bearer ")
_CACHE_LIMIT = 256


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    """The keys of the workspace, stored as ``{"keys": [{"id", "sha256", "created_at"}]}``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digests: list[str] = []
        self._accepted: set[bytes] = set()  # header values already checked
        if path.is_file():
            data = json.loads(path.read_text() or "{}")
            self._digests = [entry["sha256"] for entry in data.get("keys", [])]

    def __len__(self) -> int:
        return len(self._digests)

    def _save(self, entries: list[dict[str, object]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"keys": entries}, indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(self.path)

    def _entries(self) -> list[dict[str, object]]:
        if self.path.is_file():
            return list(json.loads(self.path.read_text() or "{}").get("keys", []))
        return []

    def add(self, key: str) -> None:
        digest = _digest(key)
        if digest in self._digests:
            return
        entries = self._entries()
        entries.append({"id": "k_" + digest[:8], "sha256": digest, "created_at": time.time()})
        self._save(entries)
        self._digests.append(digest)

    def ensure(self, env_key: str | None) -> str | None:
        """Make sure the workspace has a key; return a newly created one (shown once)."""
        if env_key:
            self.add(env_key)
            return None
        if self._digests:
            return None
        key = "sw_" + secrets.token_urlsafe(24)
        self.add(key)
        return key

    def check_header(self, value: bytes | None) -> bool:
        """True if ``Authorization: Api-Key <key>`` names a workspace key."""
        if not value:
            return False
        if value in self._accepted:
            return True
        lowered = value[:8].lower()
        for scheme in _SCHEMES:
            if lowered.startswith(scheme):
                key = value[len(scheme):].strip().decode("latin-1")
                break
        else:
            return False
        digest = _digest(key)
        if any(hmac.compare_digest(digest, known) for known in self._digests):
            if len(self._accepted) < _CACHE_LIMIT:
                self._accepted.add(value)
            return True
        return False
