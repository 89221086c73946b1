"""Secrets and the lazy-data resolver stub, with Truss's semantics (TRUSS_CONTRACT.md §13)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

SECRET_ENV_VAR_PREFIX = "TRUSS_SECRET_"
DEFAULT_SECRETS_DIR = "/secrets"
SECRETS_DIR_ENV = "SWELL_SECRETS_DIR"


class SecretNotFound(Exception):
    """Raised on reading a secret that is undeclared or resolves to an empty value.

    A plain ``Exception`` (not ``KeyError``) as in Truss, so ``.get()`` and ``in``
    raise it too for undeclared names.
    """


def _missing(key: str) -> str:
    return (
        f"Secret '{key}' not found. Please ensure that:\n"
        f"  * Secret '{key}' is defined in the 'secrets' section of the Truss config file\n"
        f"  * Secret '{key}' is set (env var {SECRET_ENV_VAR_PREFIX}{key} or a file in the secrets folder)"
    )


def secrets_dir() -> Path:
    return Path(os.environ.get(SECRETS_DIR_ENV) or DEFAULT_SECRETS_DIR)


class Secrets(Mapping[str, str]):
    """Read-only view of the declared secrets; each read resolves afresh.

    Resolution order, later wins: config default, ``TRUSS_SECRET_<name>``, the file
    ``<secrets dir>/<name>``.
    """

    def __init__(self, base_secrets: dict[str, Any] | None, directory: Path | None = None) -> None:
        self._base_secrets = dict(base_secrets or {})
        self._dir = directory

    def __getitem__(self, key: str) -> str:
        if key not in self._base_secrets:
            raise SecretNotFound(_missing(key))
        value = self._base_secrets[key]
        env_name = SECRET_ENV_VAR_PREFIX + key
        if env_name in os.environ:
            value = os.environ[env_name]
        path = (self._dir or secrets_dir()) / key
        if path.is_file():
            value = path.read_text()
        if not value:
            raise SecretNotFound(_missing(key))
        return cast(str, value)

    def __iter__(self) -> Iterator[str]:
        raise NotImplementedError("Secrets are meant for lookup and can't be iterated on")

    def __len__(self) -> int:
        return len(self._base_secrets)


class LazyDataResolver:
    """Stand-in for Truss's ``LazyDataResolverV2``: Swell has no lazy downloads.

    ``block_until_download_complete()`` returns at once, so models written for
    ``weights``/``model_cache`` v2 load unchanged when their data is already local.
    """

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._collected = False

    def block_until_download_complete(self, *args: Any, **kwargs: Any) -> str:
        self._collected = True
        return str(self._data_dir)

    def raise_if_not_collected(self) -> None:
        return None
