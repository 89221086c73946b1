"""Settings ranges, messages and the config.yaml schema, as tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from swell.config import (
    DEVELOPMENT_AUTOSCALING,
    AutoscalingSettings,
    ConfigError,
    SettingsError,
    load_model_config,
    parse_autoscaling,
    parse_cpu,
    parse_memory,
)


def test_defaults_are_basetens() -> None:
    s = AutoscalingSettings()
    assert s.model_dump() == {
        "min_replica": 0,
        "max_replica": 1,
        "autoscaling_window": 60,
        "scale_down_delay": 900,
        "concurrency_target": 1,
        "target_utilization_percentage": 70,
        "schedules": (),
    }
    assert DEVELOPMENT_AUTOSCALING.model_dump() == s.model_dump()


@pytest.mark.parametrize(
    ("body", "field", "allowed"),
    [
        ({"min_replica": -1}, "min_replica", "between 0 and max_replica"),
        ({"max_replica": 0}, "max_replica", "between 1 and 10"),
        ({"max_replica": 11}, "max_replica", "between 1 and 10"),
        ({"autoscaling_window": 9}, "autoscaling_window", "between 10 and 3600"),
        ({"autoscaling_window": 3601}, "autoscaling_window", "between 10 and 3600"),
        ({"scale_down_delay": -5}, "scale_down_delay", "between 0 and 3600"),
        ({"scale_down_delay": 3601}, "scale_down_delay", "between 0 and 3600"),
        ({"concurrency_target": 0}, "concurrency_target", "≥ 1"),
        ({"target_utilization_percentage": 0}, "target_utilization_percentage", "between 1 and 100"),
        ({"target_utilization_percentage": 101}, "target_utilization_percentage", "between 1 and 100"),
        ({"autoscaling_window": 12.5}, "autoscaling_window", "whole number"),
        ({"autoscaling_window": "soon"}, "autoscaling_window", "between 10 and 3600"),
        ({"min_replica": 3, "max_replica": 2}, "min_replica", "must be ≤ max_replica"),
        ({"max_replicas": 3}, "max_replicas", "unknown key"),
    ],
)
def test_bad_settings_name_field_value_and_range(body: dict[str, Any], field: str, allowed: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_autoscaling(body)
    (error,) = info.value.errors
    assert error.field == field
    assert allowed in error.allowed
    assert field in str(info.value)
    as_json = info.value.as_dict()
    assert as_json["detail"][0]["field"] == field
    assert "value" in as_json["detail"][0]


def test_at_most_100_schedules_and_the_refusal_gives_the_count_not_the_list() -> None:
    window = {"min_replica": 0, "start": "08:00", "end": "09:00"}
    assert len(parse_autoscaling({"schedules": [window] * 100}).schedules) == 100
    with pytest.raises(SettingsError) as info:
        parse_autoscaling({"schedules": [window] * 300_000})
    (error,) = info.value.errors
    assert (error.field, error.value) == ("schedules", "300000 items")
    assert "at most 100" in error.allowed


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        parse_autoscaling({"autoscaling_window": 1, "scale_down_delay": -1})
    assert {e.field for e in info.value.errors} == {"autoscaling_window", "scale_down_delay"}


def test_partial_update_merges_onto_base_and_cap_is_a_server_setting() -> None:
    base = AutoscalingSettings(max_replica=3)
    s = parse_autoscaling({"min_replica": 2}, base=base)
    assert (s.min_replica, s.max_replica) == (2, 3)
    assert parse_autoscaling({"max_replica": 50}, max_replica_cap=64).max_replica == 50
    with pytest.raises(SettingsError, match="between 1 and 64"):
        parse_autoscaling({"max_replica": 65}, max_replica_cap=64)


def test_whole_floats_are_accepted() -> None:
    assert parse_autoscaling({"autoscaling_window": 30.0}).autoscaling_window == 30


@pytest.mark.parametrize(
    ("text", "cores"), [("500m", 0.5), ("250m", 0.25), ("2", 2.0), ("1.5", 1.5), (3, 3.0)]
)
def test_parse_cpu(text: Any, cores: float) -> None:
    assert parse_cpu(text) == cores


@pytest.mark.parametrize(
    ("text", "size"),
    [("512Mi", 512 * 1024**2), ("2Gi", 2 * 1024**3), ("1G", 10**9), ("100M", 10**8), (4096, 4096)],
)
def test_parse_memory(text: Any, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("bad", ["lots", "-1", "0", "1.5x", ""])
def test_bad_cpu(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_cpu(bad)


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "config.yaml").write_text(text)
    return tmp_path


def test_truss_config_round_trip(tmp_path: Path) -> None:
    config, ignored = load_model_config(
        write(
            tmp_path,
            """
model_name: iris
python_version: py311
base_image: {image: foo}
resources: {cpu: "500m", memory: "512Mi", accelerator: "H100:2", use_gpu: true}
runtime: {predict_concurrency: 8, streaming_read_timeout: 30, enable_tracing_data: false}
requirements: [numpy]
environment_variables: {DEBUG_MODE: false, THREADS: 3, NAME: x}
secrets: {hf_access_token: null}
model_metadata: {example_model_input: {x: 1}}
model_cache:
  - {repo_id: org/model, allow_patterns: ["*.json"], volume_folder: m}
weights:
  - {source: "s3://bucket/key", mount_location: /app/model_cache/w, sha256: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}
autoscaling: {min_replica: 1, max_replica: 3, scale_down_delay: 60}
""",
        )
    )
    assert config.model_name == "iris"
    assert ignored == ["base_image", "python_version"]
    assert config.resources.cpu_cores == 0.5
    assert config.resources.memory_bytes == 512 * 1024**2
    assert (config.resources.gpu_type, config.resources.gpu_count) == ("H100", 2)
    assert config.predict_concurrency == 8
    assert config.environment_variables == {"DEBUG_MODE": "false", "THREADS": "3", "NAME": "x"}
    assert len(config.weight_sources) == 2
    assert config.autoscaling is not None and config.autoscaling.min_replica == 1


@pytest.mark.parametrize(
    ("text", "field", "allowed"),
    [
        ("model_name: x\nmodle_name: y\n", "modle_name", "unknown key"),
        ("resources: {cpu: lots}\n", "resources.cpu", "CPU quantity"),
        ("resources: {memory: 12 potatoes}\n", "resources.memory", "memory quantity"),
        ("resources: {accelerator: 'H100:two'}\n", "resources.accelerator", "GPU type"),
        ("runtime: {predict_concurrency: 0}\n", "runtime.predict_concurrency", "≥ 1"),
        ("autoscaling: {max_replica: 99}\n", "autoscaling.max_replica", "between 1 and 10"),
        ("weights: [{mount_location: /x}]\n", "weights.0", "source"),
        ("model_name: [unclosed\n", "config.yaml", "valid YAML"),
        ("- just\n- a list\n", "config.yaml", "mapping"),
    ],
)
def test_bad_config_yaml(tmp_path: Path, text: str, field: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_model_config(write(tmp_path, text))
    assert any(e.field == field and allowed in e.allowed for e in info.value.errors), info.value.errors
    assert "config.yaml" in str(info.value)


def test_missing_config_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a config.yaml"):
        load_model_config(tmp_path)


def test_empty_config_gets_truss_defaults(tmp_path: Path) -> None:
    config, ignored = load_model_config(write(tmp_path, ""))
    assert ignored == []
    assert config.predict_concurrency == 1
    assert config.model_class_name == "Model"
    assert config.autoscaling is None
