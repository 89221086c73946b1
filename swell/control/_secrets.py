"""Workspace secrets: encrypted in the store, handed to replicas as Truss does.

Values are encrypted with Fernet (AES-128-CBC with an HMAC) under a key kept
outside the database: ``$SWELL_SECRETS_KEY`` if set, else the file
``secrets.key`` in the data dir (created with mode 0600 on first use).  A copy of
the database alone reveals no value.

A replica sees only the secrets its ``config.yaml`` declares, as files in a
folder of its own (``SWELL_SECRETS_DIR``, Truss's ``/secrets``) that lives in
``/dev/shm`` (memory, never disk) where that exists.  The files are rewritten
when a secret changes, so a running model that reads the secret again sees
the new value, as on Truss.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from swell.files import atomic_write, claim, sweep

if TYPE_CHECKING:  # imported when a secret is first used: the server's idle memory stays lean
    from cryptography.fernet import Fernet

__all__ = [
    "MAX_SECRET_BYTES",
    "SecretBox",
    "SecretFolders",
    "SecretKeyError",
    "valid_secret_name",
]

log = logging.getLogger("swell.secrets")

MAX_SECRET_BYTES = 64 * 1024
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}\Z")  # \Z: "$" would let a trailing newline through
KEY_ENV = "SWELL_SECRETS_KEY"


def valid_secret_name(name: str) -> bool:
    return bool(_NAME_RE.match(name)) and name not in (".", "..")


class SecretKeyError(RuntimeError):
    """The encryption key is missing, malformed or not the one the values were written with."""


class SecretBox:
    """Encrypts and decrypts values with the workspace's key."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self._fernet: Fernet | None = None

    def _key(self) -> Fernet:
        if self._fernet is not None:
            return self._fernet
        from cryptography.fernet import Fernet
        raw = os.environ.get(KEY_ENV)
        if raw is None:
            if not self.key_file.exists():
                self.key_file.parent.mkdir(parents=True, exist_ok=True)
                # All or nothing: a full disk must not leave an empty key behind.
                atomic_write(self.key_file, Fernet.generate_key())
                log.info("created the secrets key %s (keep it with backups of the database)", self.key_file)
            raw = self.key_file.read_bytes().decode("latin-1").strip()
        try:
            self._fernet = Fernet(raw.encode())
        except (ValueError, TypeError) as exc:
            raise SecretKeyError(self._unusable(raw, exc)) from None
        return self._fernet

    def _unusable(self, raw: str, exc: Exception) -> str:
        what = "empty" if not raw else f"not a Fernet key ({exc})"
        if KEY_ENV in os.environ:
            return f"the secrets key in ${KEY_ENV} is {what}: set it to the key the secrets were written with"
        return (
            f"the secrets key {self.key_file} is {what}: restore it from a backup of the data dir "
            f"(or set ${KEY_ENV} to the key); if no secret was stored with it, delete the file "
            "and a new key is made on first use"
        )

    def check_at_start(self, stored_values: int) -> None:
        """Say at start-up what is wrong with the key, if anything.

        A damaged key file that encrypted nothing (e.g. left empty by a full disk
        before atomic writes) is moved aside and replaced on first use; one that
        ``stored_values`` depend on is reported, and each use answers with what to do.
        """
        if KEY_ENV not in os.environ and not self.key_file.exists():
            return
        try:
            self._key()
        except SecretKeyError as exc:
            if KEY_ENV in os.environ or stored_values:
                log.error("%s (%d stored value(s) need it)", exc, stored_values)
                return
            aside = self.key_file.with_name(self.key_file.name + ".damaged")
            self.key_file.replace(aside)
            log.warning("%s; nothing was encrypted with it: moved to %s, a new key is made on first use", exc, aside)

    def encrypt(self, value: str) -> bytes:
        return self._key().encrypt(value.encode())

    def decrypt(self, token: bytes) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._key().decrypt(bytes(token)).decode()
        except InvalidToken:
            raise SecretKeyError(
                f"a secret cannot be decrypted: the key ({KEY_ENV} or {self.key_file}) "
                "is not the one it was written with"
            ) from None


class SecretFolders:
    """One folder per deployment with the secrets it declares, in memory where possible."""

    def __init__(self, data_dir: Path) -> None:
        tag = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK):
            self.root = shm / f"swell-secrets-{tag}"
        else:  # pragma: no cover - Linux has /dev/shm
            self.root = data_dir / "run" / "secrets"
            log.warning("no /dev/shm: secrets for replicas are written under %s (mode 0700)", self.root)

    def reset(self) -> None:
        """Remove what an earlier run (perhaps killed) left behind: this data dir's folder, and
        those of other servers that were killed (their secrets must not outlive them in memory)."""
        shutil.rmtree(self.root, ignore_errors=True)
        for stale in sweep(self.root.parent, "swell-secrets-"):
            log.info("removed %s, left by a server that was killed", stale)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        claim(self.root)

    def folder(self, deployment_id: str) -> Path:
        return self.root / deployment_id

    def write(self, deployment_id: str, declared: Iterable[str], values: Mapping[str, str]) -> Path:
        """Make the folder hold exactly the declared secrets that have values."""
        folder = self.folder(deployment_id)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        wanted = {name for name in declared if name in values and valid_secret_name(name)}
        for path in folder.iterdir():
            if path.name not in wanted:
                path.unlink(missing_ok=True)
        for name in wanted:
            tmp = folder / f".{name}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(values[name])
            tmp.replace(folder / name)
        return folder

    def remove(self, deployment_id: str) -> None:
        shutil.rmtree(self.folder(deployment_id), ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
