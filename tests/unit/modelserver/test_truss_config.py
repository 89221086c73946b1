from __future__ import annotations

from pathlib import Path

import pytest

from swell.modelserver import load_truss_config
from swell.modelserver._config import (
    TRUSS_CONFIG_DEFAULTS,
    fill_truss_defaults,
    stringify_env_value,
)


def test_empty_config_gets_every_truss_default() -> None:
    config = fill_truss_defaults({})
    assert config == TRUSS_CONFIG_DEFAULTS
    assert config is not TRUSS_CONFIG_DEFAULTS and config["runtime"] is not TRUSS_CONFIG_DEFAULTS["runtime"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("model_metadata", {}), ("secrets", {}), ("environment_variables", {}), ("requirements", []),
        ("live_reload", False), ("data_dir", "data"), ("bundled_packages_dir", "packages"),
        ("model_class_name", "Model"), ("model_class_filename", "model.py"), ("model_module_dir", "model"),
        ("external_package_dirs", []), ("python_version", "py313"),
    ],
)
def test_documented_defaults(key: str, value: object) -> None:
    assert fill_truss_defaults({})[key] == value


def test_nested_sections_are_merged_not_replaced() -> None:
    config = fill_truss_defaults({"runtime": {"predict_concurrency": 4}, "resources": {"cpu": "500m"}})
    assert config["runtime"]["predict_concurrency"] == 4
    assert config["runtime"]["streaming_read_timeout"] == 60
    assert config["runtime"]["health_checks"]["restart_threshold_seconds"] is None
    assert config["resources"] == {"accelerator": None, "cpu": "500m", "memory": "2Gi", "use_gpu": False}


def test_free_form_maps_pass_through() -> None:
    config = fill_truss_defaults({"model_metadata": {"repo_id": "x", "nested": {"a": 1}}, "secrets": {"hf": None},
                                  "unknown_key": 5})
    assert config["model_metadata"] == {"repo_id": "x", "nested": {"a": 1}}
    assert config["secrets"] == {"hf": None}
    assert config["unknown_key"] == 5


def test_null_sections_mean_default() -> None:
    config = fill_truss_defaults({"secrets": None, "runtime": None, "environment_variables": None})
    assert config["secrets"] == {} and config["environment_variables"] == {}
    assert config["runtime"]["predict_concurrency"] == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [(False, "false"), (True, "true"), (3, "3"), (1.5, "1.5"), (None, "None"), ("x", "x")],
)
def test_env_values_are_stringified_as_truss_does(value: object, expected: str) -> None:
    assert stringify_env_value(value) == expected
    assert fill_truss_defaults({"environment_variables": {"K": value}})["environment_variables"] == {"K": expected}


def test_load_truss_config_reads_yaml(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("model_name: m\nenvironment_variables:\n  DEBUG: false\n")
    config = load_truss_config(tmp_path)
    assert config["model_name"] == "m"
    assert config["environment_variables"] == {"DEBUG": "false"}
    assert config["runtime"]["predict_concurrency"] == 1


def test_load_truss_config_rejects_a_non_mapping(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        load_truss_config(tmp_path)
