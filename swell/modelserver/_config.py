"""Truss ``config.yaml`` as the Truss server sees it: every default written out.

Truss rewrites a package's config with ``TrussConfig.to_dict(verbose=True)`` before
the server reads it (TRUSS_CONTRACT.md §14), so a model's ``config`` kwarg always
holds every top-level key. The table below is that dict for truss 0.18.36, taken
from ``TrussConfig().to_dict(verbose=True)``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

TRUSS_CONFIG_DEFAULTS: dict[str, Any] = {
    "apply_library_patches": True,
    "base_image": None,
    "bdn": {"access": [], "hotload": {"enabled": False}, "mounts": []},
    "bis_llm": None,
    "build": {
        "arguments": {},
        "model_server": "TrussServer",
        "no_cache": False,
        "secret_to_path_mapping": {},
    },
    "build_commands": [],
    "bundled_packages_dir": "packages",
    "cache_internal": [],
    "data_dir": "data",
    "description": None,
    "docker_server": None,
    "environment_variables": {},
    "examples_filename": "examples.yaml",
    "external_data": None,
    "external_package_dirs": [],
    "input_type": "Any",
    "live_reload": False,
    "model_cache": [],
    "model_class_filename": "model.py",
    "model_class_name": "Model",
    "model_framework": "custom",
    "model_metadata": {},
    "model_module_dir": "model",
    "model_name": None,
    "model_type": "Model",
    "python_version": "py313",
    "requirements": [],
    "requirements_file": None,
    "resources": {"accelerator": None, "cpu": "1", "memory": "2Gi", "use_gpu": False},
    "runtime": {
        "egress_restrictions": None,
        "enable_debug_logs": False,
        "enable_tracing_data": False,
        "health_checks": {
            "restart_check_delay_seconds": None,
            "restart_threshold_seconds": None,
            "startup_threshold_seconds": None,
            "stop_traffic_threshold_seconds": None,
        },
        "is_websocket_endpoint": False,
        "oidc": {"enabled": None},
        "predict_concurrency": 1,
        "remote_ssh": {"enabled": False},
        "streaming_read_timeout": 60,
        "transport": {"kind": "http"},
        "truss_server_version_override": None,
    },
    "secrets": {},
    "spec_version": "2.0",
    "system_packages": [],
    "training_checkpoints": None,
    "trt_llm": None,
    "use_local_src": False,
    "weights": [],
}


def stringify_env_value(value: Any) -> str:
    """Truss's env-var stringification: YAML bools in lower case, the rest via ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _merge(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        base = out.get(key)
        if isinstance(base, dict) and base and isinstance(value, dict):
            out[key] = _merge(base, value)
        else:
            out[key] = value
    return out


def fill_truss_defaults(raw: dict[str, Any] | None) -> dict[str, Any]:
    """Return ``raw`` with every Truss default filled in (nested sections too).

    Free-form maps (``model_metadata``, ``secrets``, ``environment_variables``)
    pass through as written, except that env values are stringified as Truss does.
    Keys Truss does not know are kept.
    """
    given = dict(raw or {})
    # An explicit null for a section means "default", as pydantic reads it.
    given = {k: v for k, v in given.items() if not (v is None and isinstance(TRUSS_CONFIG_DEFAULTS.get(k), (dict, list)))}
    config = _merge(TRUSS_CONFIG_DEFAULTS, given)
    config["environment_variables"] = {
        str(k): stringify_env_value(v) for k, v in (config["environment_variables"] or {}).items()
    }
    if config["secrets"] is None:
        config["secrets"] = {}
    return config


def load_truss_config(model_dir: str | Path) -> dict[str, Any]:
    """Read ``<model_dir>/config.yaml`` and return it with every Truss default filled."""
    import yaml  # type: ignore[import-untyped]

    path = Path(model_dir) / "config.yaml"
    if path.exists():
        text = path.read_text()
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        raw = yaml.load(text, Loader=loader)
    else:
        raw = {}
    if raw is not None and not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return fill_truss_defaults(raw)
