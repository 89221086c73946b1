"""The load error's hint for a module the replica lacks."""

from __future__ import annotations

import pytest

from swell.modelserver._imports import TRUSS_SERVER_MODULES, missing_module_hint


def _missing(name: str) -> ModuleNotFoundError:
    return ModuleNotFoundError(f"No module named {name!r}", name=name)


def test_a_truss_server_package_is_named_with_its_requirement() -> None:
    hint = missing_module_hint(_missing("prometheus_client"))
    assert hint is not None
    assert "'prometheus_client'" in hint and "- prometheus-client" in hint and "swell[truss-runtime]" in hint


def test_a_submodule_is_traced_to_its_package() -> None:
    hint = missing_module_hint(_missing("opentelemetry.sdk"))
    assert hint is not None and "- opentelemetry-sdk" in hint


def test_any_other_module_says_to_declare_its_package() -> None:
    hint = missing_module_hint(_missing("transformers"))
    assert hint is not None and "'transformers'" in hint and "requirements:" in hint
    assert "truss-runtime" not in hint


def test_a_missing_module_raised_under_another_error_is_found() -> None:
    try:
        try:
            raise _missing("aiohttp")
        except ImportError as e:
            raise RuntimeError("could not start the client") from e
    except RuntimeError as outer:
        hint = missing_module_hint(outer)
    assert hint is not None and "'aiohttp'" in hint


def test_the_packages_own_modules_and_other_errors_get_no_hint() -> None:
    assert missing_module_hint(_missing("model.helpers")) is None
    assert missing_module_hint(_missing("mymodel.x"), ("mymodel",)) is None
    assert missing_module_hint(RuntimeError("boom")) is None


def test_the_table_covers_the_contracts_list() -> None:
    for module in ("opentelemetry", "requests", "aiohttp", "loguru", "prometheus_client"):
        assert module in TRUSS_SERVER_MODULES


@pytest.mark.parametrize(("module", "requirement"), sorted(TRUSS_SERVER_MODULES.items()))
def test_every_truss_server_module_is_named_with_its_requirement(module: str, requirement: str) -> None:
    hint = missing_module_hint(_missing(module))
    assert hint is not None
    assert f"{module!r}" in hint and f"(- {requirement})" in hint and "Truss's server image ships" in hint


@pytest.mark.parametrize(
    ("missing", "requirement"),
    [
        ("opentelemetry.sdk.trace.export", "opentelemetry-sdk"),
        ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "opentelemetry-exporter-otlp-proto-grpc"),
        ("opentelemetry.exporter.otlp.proto.http", "opentelemetry-exporter-otlp-proto-http"),
        ("opentelemetry.exporter.otlp", "opentelemetry-exporter-otlp"),
        ("opentelemetry.trace", "opentelemetry-api"),
        ("aiohttp.web", "aiohttp"),
    ],
)
def test_a_dotted_module_gets_its_own_distribution(missing: str, requirement: str) -> None:
    hint = missing_module_hint(_missing(missing))
    assert hint is not None and f"(- {requirement})" in hint


@pytest.mark.parametrize("layout", ["helpers.py", "helpers/__init__.py"])
def test_a_module_beside_model_py_imported_by_its_own_name_says_how_truss_imports_it(tmp_path, layout: str) -> None:
    # A package written as a script: `import helpers` next to model.py (Truss fails it too).
    (tmp_path / layout).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / layout).write_text("")
    hint = missing_module_hint(_missing("helpers"), ("model",), tmp_path)
    assert hint is not None and "`from model import helpers`" in hint and "requirements" not in hint


def test_a_module_not_beside_model_py_still_says_to_declare_it(tmp_path) -> None:
    hint = missing_module_hint(_missing("helpers"), ("model",), tmp_path)
    assert hint is not None and "requirements:" in hint
