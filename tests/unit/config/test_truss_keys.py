"""config.yaml as Truss users write it: typos are refused with the right name,
Truss's own keys are accepted, every section's errors come at once, and
docker_server packages are refused saying why."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from swell.config import (
    ConfigError,
    load_model_config,
    python_version_note,
    truss_setting_warnings,
)


def write(tmp_path: Path, config: dict) -> Path:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def refused(tmp_path: Path, config: dict) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_model_config(write(tmp_path, config))
    return {e.field: e.allowed for e in info.value.errors}


@pytest.mark.parametrize(
    ("config", "field", "suggestion"),
    [
        ({"runtime": {"predict_concurency": 4}}, "runtime.predict_concurency", "predict_concurrency"),
        ({"runtime": {"streaming_read_timout": 5}}, "runtime.streaming_read_timout", "streaming_read_timeout"),
        ({"resources": {"cpus": "2"}}, "resources.cpus", "cpu"),
        ({"requirments": ["numpy"]}, "requirments", "requirements"),
        ({"modle_name": "m"}, "modle_name", "model_name"),
        ({"autoscaling": {"max_replicas": 3}}, "autoscaling.max_replicas", "max_replica"),
        ({"weights": [{"source": "https://h/w", "mount_locaton": "/w"}]}, "weights.0.mount_locaton", "mount_location"),
    ],
)
def test_a_typo_is_refused_naming_the_key_and_the_right_one(
    tmp_path: Path, config: dict, field: str, suggestion: str
) -> None:
    errors = refused(tmp_path, config)
    assert field in errors, errors
    assert "unknown key" in errors[field]
    assert f"did you mean {suggestion!r}?" in errors[field]


def test_a_nested_unknown_key_lists_its_own_sections_keys(tmp_path: Path) -> None:
    allowed = refused(tmp_path, {"runtime": {"predict_concurency": 4}})["runtime.predict_concurency"]
    known = allowed.split("known keys are: ", 1)[1].split(", ")
    assert "predict_concurrency" in known and "streaming_read_timeout" in known
    assert "model_name" not in known  # not the top level's keys


def test_a_key_far_from_any_gets_no_guess(tmp_path: Path) -> None:
    allowed = refused(tmp_path, {"runtime": {"zzzz": 1}})["runtime.zzzz"]
    assert "did you mean" not in allowed and "known keys are:" in allowed


@pytest.mark.parametrize(
    "config",
    [
        {"runtime": {"enable_tracing_data": True, "enable_debug_logs": False}},
        {"runtime": {"transport": {"kind": "http"}, "is_websocket_endpoint": False}},
        {"runtime": {"health_checks": {"restart_threshold_seconds": 600, "stop_traffic_threshold_seconds": 60}}},
        {"runtime": {"oidc": {"enabled": None}, "remote_ssh": {"enabled": False}, "egress_restrictions": None}},
        {"runtime": {"truss_server_version_override": "0.9.100", "num_workers": 1}},
        {"resources": {"cpu": "1", "fabric": {"use_rdma": True}}},
        {"bdn": {"mounts": []}, "bis_llm": None, "docker_server": None},
    ],
)
def test_keys_truss_knows_are_accepted_though_not_acted_on(tmp_path: Path, config: dict) -> None:
    config_obj, _ = load_model_config(write(tmp_path, config))
    assert config_obj.predict_concurrency == 1


def test_every_sections_errors_come_in_one_answer(tmp_path: Path) -> None:
    errors = refused(
        tmp_path,
        {
            "runtime": {"predict_concurency": 4},
            "resources": {"cpu": "lots"},
            "autoscaling": {"max_replica": 99, "scale_down_delay": -1},
            "docker_server": {"start_command": "vllm serve", "server_port": 8000},
        },
    )
    assert set(errors) == {
        "runtime.predict_concurency",
        "resources.cpu",
        "autoscaling.max_replica",
        "autoscaling.scale_down_delay",
        "docker_server",
    }


def test_docker_server_package_is_refused_saying_why(tmp_path: Path) -> None:
    # A Truss custom-server package: an image, a start command, no model/model.py.
    config = {
        "model_name": "vllm server",
        "base_image": {"image": "vllm/vllm-openai:v0.7.3"},
        "docker_server": {
            "start_command": "vllm serve meta-llama/Llama-3.1-8B",
            "readiness_endpoint": "/health",
            "liveness_endpoint": "/health",
            "predict_endpoint": "/v1/chat/completions",
            "server_port": 8000,
        },
        "resources": {"accelerator": "H100"},
    }
    with pytest.raises(ConfigError) as info:
        load_model_config(write(tmp_path, config))
    (error,) = info.value.errors
    assert error.field == "docker_server"
    assert "docker_server is not supported" in error.allowed
    assert "model class" in error.allowed and "container image" in error.allowed
    assert "no model file" not in str(info.value)


def test_a_stored_package_with_a_key_an_older_swell_let_through_still_loads(tmp_path: Path) -> None:
    # Pushed before runtime keys were checked; read again when the server restarts.
    package = write(tmp_path, {"model_name": "m", "runtime": {"predict_concurency": 4, "predict_concurrency": 2}})
    with pytest.raises(ConfigError):
        load_model_config(package)  # a new push is refused
    config, _ = load_model_config(package, stored=True)
    assert config.predict_concurrency == 2


def test_a_stored_package_is_still_refused_for_real_errors(tmp_path: Path) -> None:
    package = write(tmp_path, {"runtime": {"predict_concurency": 4, "predict_concurrency": 0}})
    with pytest.raises(ConfigError) as info:
        load_model_config(package, stored=True)
    assert {e.field for e in info.value.errors} == {"runtime.predict_concurency", "runtime.predict_concurrency"}


def warnings_for(tmp_path: Path, config: dict) -> list[str]:
    loaded, _ = load_model_config(write(tmp_path, {"model_name": "m", **config}))
    return truss_setting_warnings(loaded)


@pytest.mark.parametrize(
    ("config", "said"),
    [
        # Modelled on truss-examples' LLM packages: Baseten restarts a replica whose is_healthy fails.
        ({"runtime": {"health_checks": {"restart_check_delay_seconds": 1800, "restart_threshold_seconds": 600}}},
         ["runtime.health_checks (restart_check_delay_seconds, restart_threshold_seconds)", "is_healthy()"]),
        ({"runtime": {"egress_restrictions": {"fqdn_allow_list": ["huggingface.co"]}}}, ["egress_restrictions is not enforced"]),
        ({"runtime": {"transport": {"kind": "grpc"}}}, ["'grpc' is not served"]),
        ({"runtime": {"transport": {"kind": "websocket", "ping_interval_seconds": 5}}}, ["ping_interval_seconds is not acted on"]),
        ({"runtime": {"oidc": {"enabled": True}}}, ["runtime.oidc.enabled", "OIDC token"]),
        ({"runtime": {"remote_ssh": {"enabled": True}}}, ["runtime.remote_ssh.enabled"]),
        ({"resources": {"instance_type": "L4:4x16"}}, ["'L4:4x16'", "Truss ignores those"]),
        ({"resources": {"node_count": 2}}, ["node_count 2", "one machine"]),
        ({"live_reload": True}, ["live_reload is not acted on", "swell watch"]),
        ({"resources": {"accelerator": "H100x2"}}, ["'H100x2' is not one of Truss's GPU types", "A10G"]),
    ],
)
def test_a_truss_setting_swell_does_not_act_on_is_a_push_warning(tmp_path: Path, config: dict, said: list[str]) -> None:
    (warning,) = warnings_for(tmp_path, config)
    assert all(part in warning for part in said), warning


def test_truss_defaults_and_settings_that_change_nothing_here_are_not_warned(tmp_path: Path) -> None:
    # As Truss writes every default out (`truss init`, a rewritten config.yaml).
    config = {
        "runtime": {
            "predict_concurrency": 4, "streaming_read_timeout": 60, "enable_tracing_data": False,
            "enable_debug_logs": False, "is_websocket_endpoint": False, "transport": {"kind": "http"},
            "health_checks": {"restart_check_delay_seconds": None, "restart_threshold_seconds": None,
                              "stop_traffic_threshold_seconds": None},
            "oidc": {"enabled": False}, "remote_ssh": {"enabled": False}, "egress_restrictions": None,
            "truss_server_version_override": None,
        },
        "resources": {"cpu": "1", "memory": "2Gi", "use_gpu": False, "accelerator": None, "node_count": 1},
    }
    assert warnings_for(tmp_path, config) == []


def test_a_trt_llm_package_without_a_model_file_is_refused_saying_why(tmp_path: Path) -> None:
    # Modelled on truss-examples' engine-builder packages: a checkpoint and a build, no model/.
    config = {
        "model_name": "llama engine",
        "resources": {"accelerator": "H100", "use_gpu": True},
        "trt_llm": {"build": {"base_model": "decoder", "checkpoint_repository": {"repo": "meta-llama/Llama-3.1-8B", "source": "HF"}}},
    }
    errors = refused(tmp_path, config)
    assert list(errors) == ["trt_llm"]
    assert "TensorRT-LLM engine" in errors["trt_llm"] and "model/model.py" in errors["trt_llm"]


def test_a_trt_llm_package_with_its_own_model_file_loads_with_the_key_ignored(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.py").write_text("class Model:\n    def predict(self, x):\n        return x\n")
    _, ignored = load_model_config(write(tmp_path, {"model_name": "m", "trt_llm": {"build": {"base_model": "decoder"}}}))
    assert ignored == ["trt_llm"]


def test_truss_keys_left_at_their_defaults_are_not_warned(tmp_path: Path) -> None:
    # What `truss init` and Truss's rewritten config.yaml write out.
    config = {
        "base_image": None, "system_packages": [], "apply_library_patches": True, "spec_version": "2.0",
        "model_framework": "custom", "model_type": "Model", "input_type": "Any", "examples_filename": "examples.yaml",
        "trt_llm": None, "external_data": None, "cache_internal": [], "use_local_src": False,
        "build": {"arguments": {}, "model_server": "TrussServer", "secret_to_path_mapping": {}},
    }
    assert warnings_for(tmp_path, config) == []


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ({"python_version": "py39"}, ["python_version 'py39' is not acted on", "the server's Python 3."]),
        ({"system_packages": ["ffmpeg", "tesseract-ocr"]}, ["system_packages (ffmpeg, tesseract-ocr) are not installed"]),
        ({"base_image": {"image": "vllm/vllm-openai:latest"}}, ["base_image is not acted on", "requirements:"]),
        ({"external_data": [{"url": "https://example.com/w.bin", "local_data_path": "w.bin"}]}, ["external_data is not downloaded", "data/"]),
        ({"model_framework": "sklearn"}, ["'model_framework' is accepted for Truss compatibility but not acted on"]),
    ],
)
def test_a_truss_key_set_away_from_its_default_says_what_swell_does(tmp_path: Path, config: dict, said: list[str]) -> None:
    (warning,) = warnings_for(tmp_path, config)
    assert all(part in warning for part in said), warning


def test_a_requirements_file_is_read_as_pip_reads_it(tmp_path: Path) -> None:
    # Modelled on truss-examples' requirements.txt files: an index option, a git URL with an
    # #egg fragment, comments, and a second file pulled in with -r.
    (tmp_path / "requirements.txt").write_text(
        "# the model's own\n"
        "--extra-index-url https://pypi.ngc.nvidia.com\n"
        "numpy==1.26.4  # pinned\n"
        "git+https://github.com/org/repo.git@abc123#egg=repo\n"
        "-r more/extra.txt\n"
    )
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "extra.txt").write_text("requests\n-c constraints.txt\n")
    (tmp_path / "more" / "constraints.txt").write_text("requests<3\n")
    config, _ = load_model_config(write(tmp_path, {"model_name": "m", "requirements_file": "./requirements.txt"}))
    assert config.requirements_in(tmp_path) == [
        "--extra-index-url https://pypi.ngc.nvidia.com",
        "numpy==1.26.4",
        "git+https://github.com/org/repo.git@abc123#egg=repo",
        "requests",
        f"--constraint {(tmp_path / 'more' / 'constraints.txt').resolve()}",
    ]


@pytest.mark.parametrize("name", ["pyproject.toml", "uv.lock"])
def test_a_pyproject_requirements_file_installs_its_project_dependencies(tmp_path: Path, name: str) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "m"\nversion = "0.1"\ndependencies = ["numpy>=1.26", "./local-lib", "pydantic<3"]\n'
    )
    if name == "uv.lock":
        (tmp_path / "uv.lock").write_text("version = 1\n")  # pins are not read: pyproject's ranges are
    config, _ = load_model_config(write(tmp_path, {"model_name": "m", "requirements_file": name}))
    assert config.requirements_in(tmp_path) == ["numpy>=1.26", "pydantic<3"]


@pytest.mark.parametrize(
    ("files", "name", "said"),
    [
        ({}, "requirements.txt", "a file in the package"),
        ({"uv.lock": "version = 1\n"}, "uv.lock", "pyproject.toml beside it"),
        ({"pyproject.toml": "[project\n"}, "pyproject.toml", "a valid pyproject.toml"),
    ],
)
def test_a_requirements_file_that_cannot_be_installed_is_refused(tmp_path: Path, files: dict, name: str, said: str) -> None:
    for file, text in files.items():
        (tmp_path / file).write_text(text)
    errors = refused(tmp_path, {"model_name": "m", "requirements_file": name})
    assert said in errors["requirements_file"]


def test_the_python_version_note_is_only_for_another_python(tmp_path: Path) -> None:
    import sys

    running = f"py3{sys.version_info.minor}"
    config, _ = load_model_config(write(tmp_path, {"model_name": "m", "python_version": running}))
    assert python_version_note(config) is None
    config, _ = load_model_config(write(tmp_path, {"model_name": "m"}))
    assert python_version_note(config) is None
    config, _ = load_model_config(write(tmp_path, {"model_name": "m", "python_version": "py38"}))
    note = python_version_note(config)
    assert note is not None and "Python 3.8" in note and f"Python 3.{sys.version_info.minor}" in note


def test_hf_cache_is_read_as_model_cache_as_truss_reads_it(tmp_path: Path) -> None:
    # Truss's older name for model_cache (TrussConfig.from_dict moves it over).
    config, ignored = load_model_config(write(tmp_path, {"model_name": "m", "hf_cache": [{"repo_id": "org/model"}]}))
    assert [s.repo_id for s in config.model_cache] == ["org/model"] and ignored == []


def test_an_environment_variable_without_a_value_is_the_text_none_as_in_truss(tmp_path: Path) -> None:
    config, _ = load_model_config(write(tmp_path, {"model_name": "m", "environment_variables": {"EMPTY": None, "ON": True}}))
    assert config.environment_variables == {"EMPTY": "None", "ON": "true"}


def test_an_accelerator_count_of_zero_is_refused_as_truss_refuses_it(tmp_path: Path) -> None:
    assert "positive integer" in refused(tmp_path, {"resources": {"accelerator": "H100:0"}})["resources.accelerator"]
    config, _ = load_model_config(write(tmp_path, {"resources": {"accelerator": "H100:2"}}))
    assert truss_setting_warnings(config) == []
