from __future__ import annotations

from pathlib import Path

import pytest

from swell.modelserver._secrets import (
    LazyDataResolver,
    SecretNotFound,
    Secrets,
    secrets_dir,
)


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SWELL_SECRETS_DIR", str(tmp_path))
    return tmp_path


def test_resolution_order_default_then_env_then_file(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = Secrets({"a": "default"})
    assert secrets["a"] == "default"
    monkeypatch.setenv("TRUSS_SECRET_a", "env")
    assert secrets["a"] == "env"
    (folder / "a").write_text("file")
    assert secrets["a"] == "file"  # resolved afresh on every read


@pytest.mark.parametrize("declared", [None, ""])
def test_empty_value_is_not_found(folder: Path, declared: str | None) -> None:
    with pytest.raises(SecretNotFound):
        Secrets({"a": declared})["a"]


def test_undeclared_name_raises_secret_not_found_everywhere(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSS_SECRET_b", "set but undeclared")
    secrets = Secrets({"a": "x"})
    assert not issubclass(SecretNotFound, KeyError)
    with pytest.raises(SecretNotFound):
        secrets["b"]
    with pytest.raises(SecretNotFound):
        secrets.get("b")
    with pytest.raises(SecretNotFound):
        "b" in secrets  # noqa: B015
    assert "a" in secrets._base_secrets  # how real trusses test for a name


def test_iteration_is_refused_and_len_counts_declared(folder: Path) -> None:
    secrets = Secrets({"a": None, "b": None})
    assert len(secrets) == 2
    with pytest.raises(NotImplementedError):
        list(secrets)


def test_secrets_dir_defaults_to_slash_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWELL_SECRETS_DIR", raising=False)
    assert secrets_dir() == Path("/secrets")


def test_lazy_data_resolver_stub_returns_at_once() -> None:
    resolver = LazyDataResolver(Path("data"))
    assert resolver.block_until_download_complete() == "data"
    resolver.raise_if_not_collected()
