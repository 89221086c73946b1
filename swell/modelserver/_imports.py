"""What Truss's server image lets model code import without declaring it.

Truss installs its server's own requirements into the image beside the
model's (``truss/templates/server/requirements.txt``; TRUSS_CONTRACT.md §17),
so model code written for Truss may import them undeclared.  Swell's replicas
see Swell's dependencies (which include the light, commonly imported part of
that set: OpenTelemetry, requests, loguru, prometheus-client)
and the package's ``requirements:``; ``pip install 'swell[truss-runtime]'``
adds the rest.  When an import still fails, :func:`missing_module_hint` says
which package to declare.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TRUSS_SERVER_MODULES", "missing_module_hint"]

#: Module → the requirement that provides it, for Truss 0.18's server requirements; a dotted
#: name is matched before its parent (OpenTelemetry's parts are separate distributions).
TRUSS_SERVER_MODULES = {
    "aiocontextvars": "aiocontextvars",
    "aiofiles": "aiofiles",
    "aiohttp": "aiohttp",
    "certifi": "certifi",
    "Cython": "cython",
    "cython": "cython",
    "fastapi": "fastapi",
    "joblib": "joblib",
    "loguru": "loguru",
    "msgpack_numpy": "msgpack-numpy",
    "msgpack": "msgpack",
    "numpy": "numpy",
    "opentelemetry": "opentelemetry-api",
    "opentelemetry.sdk": "opentelemetry-sdk",
    "opentelemetry.exporter": "opentelemetry-exporter-otlp",
    "opentelemetry.exporter.otlp.proto.http": "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry.exporter.otlp.proto.grpc": "opentelemetry-exporter-otlp-proto-grpc",
    "prometheus_client": "prometheus-client",
    "psutil": "psutil",
    "pythonjsonlogger": "python-json-logger",
    "yaml": "pyyaml",
    "requests": "requests",
    "truss_transfer": "truss-transfer",
    "uvicorn": "uvicorn",
    "uvloop": "uvloop",
    "websockets": "websockets",
}


def _missing_module(exc: BaseException) -> str | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ModuleNotFoundError) and current.name:
            return current.name
        current = current.__cause__ or current.__context__
    return None


def _requirement(module: str) -> str | None:
    """The Truss server requirement that provides ``module``: its longest listed prefix's."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        requirement = TRUSS_SERVER_MODULES.get(".".join(parts[:end]))
        if requirement is not None:
            return requirement
    return None


def missing_module_hint(
    exc: BaseException, own_modules: tuple[str, ...] = ("model",), model_dir: Path | None = None
) -> str | None:
    """One line for a load that failed on a missing module: which, and what to declare.

    ``own_modules``: the package's own top-level names (its model folder), whose
    missing submodules are the package's mistake, not a missing requirement.
    ``model_dir``: the folder of model.py, whose other modules are imported as ``model.<name>``.
    """
    name = _missing_module(exc)
    if name is None:
        return None
    top = name.split(".", 1)[0]
    if top in own_modules:
        return None
    if model_dir is not None and ((model_dir / f"{top}.py").is_file() or (model_dir / top / "__init__.py").is_file()):
        return (
            f"model code imports {top!r}, a module beside model.py, by its own name: import it as "
            f"`from model import {top}` (Truss imports model.py as model.model, so a plain "
            f"`import {top}` fails there too)"
        )
    requirement = _requirement(name)
    if requirement is not None:
        return (
            f"model code imports {name!r}, which Truss's server image ships but this replica's "
            f"environment lacks: declare it in config.yaml requirements: (- {requirement}), "
            "or install Truss's server packages beside Swell: pip install 'swell[truss-runtime]'"
        )
    return (
        f"model code imports {name!r}, which is not installed in this replica's environment: "
        "declare the package that provides it in config.yaml requirements:"
    )
