"""What a model package sees: kwargs, config defaults, env vars, secrets, data/, packages/."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MODEL = '''
import os
import threading

import bundled_mod
import extmod
from model import helpers

from swell.modelserver._secrets import SecretNotFound  # noqa: F401  (type name check below)

FLAG_AT_IMPORT = os.environ.get("FLAG")


class Model:
    def __init__(self, config, data_dir, secrets, lazy_data_resolver, environment):
        self._config = config
        self._data_dir = data_dir
        self._secrets = secrets
        self._lazy = lazy_data_resolver
        self._environment = environment
        self._init_thread = threading.current_thread().name

    def load(self):
        self._lazy.block_until_download_complete()
        self._weights = (self._data_dir / "nested" / "weights.txt").read_text()

    def predict(self, model_input):
        s = self._secrets
        errors = {}
        for label, probe in {
            "undeclared_getitem": lambda: s["undeclared"],
            "undeclared_get": lambda: s.get("undeclared"),
            "undeclared_in": lambda: "undeclared" in s,
            "empty": lambda: s["empty"],
            "iterate": lambda: list(s),
        }.items():
            try:
                probe()
                errors[label] = None
            except Exception as e:
                errors[label] = type(e).__name__
        return {
            "flag_at_import": FLAG_AT_IMPORT,
            "env": [os.environ.get(k) for k in ("FLAG", "NUM", "NAME")],
            "config_env": self._config["environment_variables"],
            "predict_concurrency": self._config["runtime"]["predict_concurrency"],
            "streaming_read_timeout": self._config["runtime"]["streaming_read_timeout"],
            "bundled_packages_dir": self._config["bundled_packages_dir"],
            "model_metadata": self._config["model_metadata"],
            "config_secrets": self._config["secrets"],
            "data_dir": str(self._data_dir),
            "cwd_is_package": os.path.exists("config.yaml"),
            "weights": self._weights,
            "environment": self._environment,
            "init_thread": self._init_thread,
            "modules": [bundled_mod.VALUE, extmod.VALUE, helpers.VALUE],
            "secrets": [s["from_file"], s["from_env"], s["from_default"], len(s)],
            "errors": errors,
        }
'''

CONFIG = {
    "model_name": "kw",
    "environment_variables": {"FLAG": False, "NUM": 3, "NAME": "x"},
    "secrets": {"from_file": None, "from_env": None, "from_default": "dflt", "empty": None},
    "model_metadata": {"k": "v"},
    "external_package_dirs": ["ext"],
}

FILES = {
    "packages/bundled_mod.py": "VALUE = 'bundled'\n",
    "ext/extmod.py": "VALUE = 'external'\n",
    "model/helpers.py": "VALUE = 'helper'\n",
    "data/nested/weights.txt": "w8s",
}


def test_package_sees_what_truss_gives_it(make_package, replica, tmp_path: Path) -> None:
    package = make_package(MODEL, CONFIG, FILES)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "from_file").write_text("file-value")
    env = {"SWELL_SECRETS_DIR": str(secrets_dir), "TRUSS_SECRET_from_env": "env-value",
           "TRUSS_SECRET_from_file": "the file wins", "NAME": "set by the launcher"}
    r = replica(package, env=env)
    r.wait_ready()
    with r.client() as client:
        body = client.post("/v1/models/kw:predict", json={}).json()
    assert body["flag_at_import"] == "false"
    assert body["env"] == ["false", "3", "set by the launcher"]  # the launcher's value wins
    assert body["config_env"] == {"FLAG": "false", "NUM": "3", "NAME": "x"}
    assert (body["predict_concurrency"], body["streaming_read_timeout"]) == (1, 60)
    assert body["bundled_packages_dir"] == "packages"
    assert body["model_metadata"] == {"k": "v"}
    assert body["config_secrets"] == CONFIG["secrets"]  # declared values, never the real secret
    assert body["data_dir"] == "data" and body["cwd_is_package"] and body["weights"] == "w8s"
    assert body["environment"] is None
    assert body["init_thread"] == "load"
    assert body["modules"] == ["bundled", "external", "helper"]
    assert body["errors"] == {"undeclared_getitem": "SecretNotFound", "undeclared_get": "SecretNotFound",
                              "undeclared_in": "SecretNotFound", "empty": "SecretNotFound",
                              "iterate": "NotImplementedError"}
    assert body["secrets"] == ["file-value", "env-value", "dflt", 4]


def test_secret_from_env(make_package, replica) -> None:
    model = '''
class Model:
    def __init__(self, secrets):
        self._secrets = secrets

    def predict(self, name):
        return self._secrets[name]
'''
    package = make_package(model, {"secrets": {"token": None}})
    r = replica(package, env={"SWELL_SECRETS_DIR": str(package / "no-such-dir"), "TRUSS_SECRET_token": "t0k"})
    r.wait_ready()
    with r.client() as client:
        assert client.post("/v1/models/m:predict", json="token").json() == "t0k"
        assert client.post("/v1/models/m:predict", json="other").status_code == 500


TRUSS = shutil.which("truss") or str(Path(sys.executable).with_name("truss"))


@pytest.mark.skipif(not Path(TRUSS).exists(), reason="the `truss` CLI (test extra) is not installed")
def test_truss_init_template_serves_unmodified(replica, tmp_path: Path) -> None:
    target = tmp_path / "from-truss-init"
    subprocess.run([TRUSS, "init", "--backend", "TrussServer", "--name", "Init Model", "--non-interactive",
                    str(target)], check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert (target / "model" / "model.py").exists()
    r = replica(target)
    r.wait_ready()
    with r.client() as client:
        assert client.post("/v1/models/model:predict", json={"x": [1, 2]}).json() == {"x": [1, 2]}
    assert r.terminate() == 0


def test_an_external_package_dir_outside_the_package_is_not_on_the_replicas_path(make_package, replica, tmp_path: Path) -> None:
    # `swell push` packs ../shared into packages/ (swell/_archive.py); on the server ../shared is
    # another folder of the server's (here: one beside the package), which must not be importable.
    model = """
    import importlib.util


    class Model:
        def predict(self, model_input):
            return [importlib.util.find_spec(name) is not None for name in ("outside_mod", "extmod")]
    """
    package = make_package(model, {"model_name": "m", "external_package_dirs": ["../outside", "ext"]},
                           {"ext/extmod.py": "VALUE = 1\n"})
    (package.parent / "outside").mkdir()
    (package.parent / "outside" / "outside_mod.py").write_text("VALUE = 1\n")
    r = replica(package)
    r.wait_ready()
    with r.client() as client:
        assert client.post("/v1/models/m:predict", json={}).json() == [False, True]
