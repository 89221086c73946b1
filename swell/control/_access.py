"""Who may call, and what replicas may read: API keys and secrets.

Keys are checked on every request (the front door asks :attr:`Access.keys`);
secrets are kept encrypted in the store and written, decrypted, into a folder
per deployment that declares them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from swell.config import FieldError
from swell.control._errors import ApiError
from swell.control._ids import new_id
from swell.control._keys import ApiKeys, KeyRecord, KeyType, digest
from swell.control._registry import DeploymentRecord, NotFound
from swell.control._secrets import MAX_SECRET_BYTES, SecretBox, SecretFolders, valid_secret_name
from swell.control._shared import Part, Shared
from swell.control._store import Snapshot
from swell.control._time import iso
from swell.control._views import key_view

__all__ = ["Access"]

log = logging.getLogger("swell.control")


class Access(Part):
    def __init__(self, shared: Shared, *, api_key: str | None = None) -> None:
        super().__init__(shared)
        self.keys = ApiKeys()
        self.secret_box = SecretBox(self.data_dir / "secrets.key")
        self.secret_folders = SecretFolders(self.data_dir)
        self.new_key: str | None = None  # a key created at start-up, to show the operator once
        self._env_key = api_key

    async def start(self, snapshot: Snapshot) -> None:
        """Load the stored keys (and make the first if there is none); check the secrets key."""
        self.keys.load(KeyRecord.from_row(row) for row in snapshot.api_keys)
        await self._bootstrap_keys()
        self.secret_box.check_at_start(await self.store.encrypted_values())
        self.secret_folders.reset()

    async def secrets_dir(self, record: DeploymentRecord) -> Path | None:
        """The folder with the secrets ``record``'s package declares, written now (None if it declares none)."""
        if not record.config.secrets:
            return None
        values = await self.secret_values(record.config.secrets)
        return self.secret_folders.write(record.id, record.config.secrets, values)

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

    async def secret_values(self, names: Iterable[str]) -> dict[str, str]:
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
        values = await self.secret_values({n for record in affected for n in record.config.secrets})
        for record in affected:  # each folder keeps only what its package declares
            self.secret_folders.write(record.id, record.config.secrets, values)
