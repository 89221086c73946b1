"""Loading a Truss model package: import, construct, ``load()`` (TRUSS_CONTRACT.md §2-4, §16)."""

from __future__ import annotations

import enum
import importlib.util
import inspect
import json
import logging
import os
import sys
import time
import traceback
import types
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

from swell.modelserver._imports import missing_module_hint
from swell.modelserver._methods import ModelDescriptor
from swell.modelserver._secrets import LazyDataResolver, Secrets

logger = logging.getLogger("swell.modelserver")

DYNAMIC_ENVIRONMENT_FILE = Path("/etc/b10_dynamic_config/environment")
LOAD_RETRY_GAP_SECONDS = 1.0


class Status(enum.Enum):
    NOT_READY = "not_ready"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


def num_load_retries() -> int:
    return int(os.environ.get("NUM_LOAD_RETRIES_TRUSS", "1"))


def filter_traceback(exc: BaseException, model_file_name: str) -> tuple[Any, BaseException, TracebackType | None]:
    """Cut the traceback to start at the last frame in the model file, as Truss logs it."""
    tb = exc.__traceback__
    last = None
    current = tb
    while current is not None:
        if current.tb_frame.f_code.co_filename.endswith(model_file_name):
            last = current
        current = current.tb_next
    return type(exc), exc, last or tb


def read_dynamic_environment() -> Any:
    if DYNAMIC_ENVIRONMENT_FILE.exists():
        text = DYNAMIC_ENVIRONMENT_FILE.read_text()
        if text:
            return json.loads(text)
    return None


def prepare_init_args(cls: Any, config: dict[str, Any], data_dir: Path, secrets: Secrets,
                      lazy_data_resolver: LazyDataResolver) -> dict[str, Any]:
    """Only the kwargs the constructor declares (or all, given ``**kwargs``)."""
    params = inspect.signature(cls).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {}
    for name, value in (("config", config), ("data_dir", data_dir), ("secrets", secrets),
                        ("lazy_data_resolver", lazy_data_resolver)):
        if takes_all or name in params:
            kwargs[name] = value
    if takes_all or "environment" in params:
        kwargs["environment"] = read_dynamic_environment()
    return kwargs


def extend_sys_path(config: dict[str, Any], package_dir: Path) -> None:
    """The package dir first (Truss's ``/app``), bundled and external packages last."""
    if str(package_dir) not in sys.path:
        sys.path.insert(0, str(package_dir))
    module_dir = config["model_module_dir"]
    if Path(module_dir).name != "model" and "model" not in sys.modules:
        # In the image the module dir is always copied to /app/model, so
        # `from model import helpers` works whatever the folder is called.
        alias = types.ModuleType("model")
        alias.__path__ = [str((package_dir / module_dir).resolve())]
        sys.modules["model"] = alias
    extra = [config.get("bundled_packages_dir") or "packages", *(config.get("external_package_dirs") or [])]
    root = package_dir.resolve()
    for entry in extra:
        path = (package_dir / entry).resolve()
        # Only folders of the package: `swell push` packed the contents of those outside it
        # into bundled_packages_dir, as `truss push` gathers them; ../x here is the server's.
        if path.is_dir() and path.is_relative_to(root) and str(path) not in sys.path:
            sys.path.append(str(path))


def import_model_module(path: Path) -> types.ModuleType:
    """Import model.py as Truss 0.18.36 does: ``model.model``, registered, no relative imports."""
    path = path.resolve()
    if not path.is_file():
        raise ImportError(f"`{path}` is not a file. You must point to a python file where the model is defined.")
    stem, parent = path.stem, path.parent.name
    module_name = f"{parent}.{stem}" if parent == stem else stem
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"Could not import `{path}`. Check path.")
    module = importlib.util.module_from_spec(spec)
    if "." in module_name:
        module.__package__ = None  # keep top-level relative imports unsupported, as in Truss
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(module_name, None)
        if isinstance(e, ImportError) and "attempted relative import" in str(e):
            raise ImportError(
                f"During import of `{path}`: relative imports (starting with '.') in the top-level "
                "model file are not supported (as in Truss). Use absolute imports, e.g. "
                "`from model import helpers`, or put shared code in `packages/`."
            ) from e
        raise
    return module


class ModelWrapper:
    """One model instance and its load status; the predict chain lives in ``_app``."""

    def __init__(self, config: dict[str, Any], package_dir: Path) -> None:
        self.config = config
        self.package_dir = package_dir
        self.status = Status.NOT_READY
        self.model: Any = None
        self.descriptor: ModelDescriptor | None = None
        self.error: str | None = None
        self.load_seconds: float | None = None
        self.model_file_name: str = config["model_class_filename"]
        runtime = config.get("runtime") or {}
        self.predict_concurrency = int(runtime.get("predict_concurrency") or 1)
        self.streaming_read_timeout = float(runtime.get("streaming_read_timeout") or 60)

    def load(self) -> bool:
        """Run the whole load; True on success. Called once, in the load thread."""
        self.status = Status.LOADING
        start = time.perf_counter()
        logger.info("Executing model.load()...")
        try:
            self._load()
        except BaseException as exc:  # SystemExit from model code must fail the load, not end the thread
            self.error = "".join(traceback.format_exception(exc))
            self.status = Status.FAILED
            logger.error("Exception while loading model", exc_info=filter_traceback(exc, self.model_file_name))
            module_dir = str(self.config.get("model_module_dir") or "model")
            hint = missing_module_hint(exc, (module_dir,), self.package_dir / module_dir)
            if hint is not None:  # the error's last line: what the deployment's status shows
                logger.error("%s", hint)
                self.error += hint + "\n"
            return False
        self.load_seconds = time.perf_counter() - start
        logger.info("Completed model.load() execution in %d ms", self.load_seconds * 1000)
        self.status = Status.READY
        return True

    def _load(self) -> None:
        config = self.config
        data_dir = Path(config.get("data_dir") or "data")
        data_dir.mkdir(parents=True, exist_ok=True)
        extend_sys_path(config, self.package_dir)
        secrets = Secrets(config.get("secrets"))
        lazy_data_resolver = LazyDataResolver(data_dir)
        module = import_model_module(self.package_dir / config["model_module_dir"] / self.model_file_name)
        cls = getattr(module, config["model_class_name"])
        model = cls(**prepare_init_args(cls, config, data_dir, secrets, lazy_data_resolver))
        descriptor = ModelDescriptor.of(model)
        if descriptor.setup_environment:
            environment = read_dynamic_environment()
            if environment is not None:
                model.setup_environment(environment)
        if hasattr(model, "load"):
            self._call_load(model.load)
        lazy_data_resolver.raise_if_not_collected()
        self.model, self.descriptor = model, descriptor

    def _call_load(self, load: Any) -> None:
        retries = num_load_retries()
        attempt = 0
        while True:
            try:
                result = load()
                if inspect.iscoroutine(result):
                    # Truss calls an async load and drops the coroutine: its body never runs.
                    result.close()
                    warnings.warn(f"coroutine '{load.__qualname__}' was never awaited "
                                  "(Truss does not await an async load(); make it sync)",
                                  RuntimeWarning, stacklevel=1)
                return
            except Exception:
                if attempt >= retries:
                    raise
                attempt += 1
                logger.warning("Failed to load model. Retrying%s...",
                               "" if attempt == 1 else f". Retry count: {attempt - 1}")
                time.sleep(LOAD_RETRY_GAP_SECONDS)
