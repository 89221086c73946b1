"""A package's build_commands on the Ray backend: what they installed into the build's
environment (here a module written into ``$VIRTUAL_ENV``'s site-packages, as ``pip install``
would put it; the namespace has no package index) and what they wrote into the package
both reach the replica on a worker node."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from ray_live import RayCluster, require_ray  # type: ignore[import-not-found]
from swell_live import Swell  # type: ignore[import-not-found]

require_ray()  # CI (SWELL_REQUIRE_RAY=1): these tests must run, not skip

pytestmark = pytest.mark.slow

INSTALLED = '''
import os

import greeter


class Model:
    def __init__(self, **kwargs):
        self._data_dir = kwargs["data_dir"]

    def load(self):
        self._note = (self._data_dir / "note.txt").read_text().strip()

    def predict(self, model_input):
        return {"greeting": greeter.GREETING, "note": self._note, "port": int(os.environ["SWELL_REPLICA_PORT"])}
'''

COMMANDS = [
    "echo 'GREETING = \"installed at push\"' > \"$(python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')/greeter.py\"",
    "mkdir -p data && echo written at push > /app/data/note.txt",
]


def test_what_build_commands_installed_and_wrote_reaches_a_worker_node(
    swell: Swell, ray_cluster: RayCluster, make_model: Callable[..., Path]
) -> None:
    config = {"runtime": {"predict_concurrency": 1}, "build_commands": COMMANDS}
    pushed = swell.push(make_model(INSTALLED, config), name="built")
    response = swell.http.post(swell.predict_path(pushed), json={}, timeout=120)
    assert response.status_code == 200, f"{response.text}\n{swell.tail()}"
    answer = response.json()
    assert answer["greeting"] == "installed at push" and answer["note"] == "written at push"
    (replica,) = swell.deployment(pushed)["replicas"]
    assert ray_cluster.label_of(replica["node"]) in ("node_a", "node_b"), replica
