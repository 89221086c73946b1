"""Resources through a real ``swell serve``: a model over its memory limit is
stopped and reported on the deployment while the server lives on; a replica
that does not fit waits as pending and the deployment says why."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from swell_live import Swell  # type: ignore[import-not-found]

from swell.serving.backends.process._resources import machine_capacity

pytestmark = [pytest.mark.timeout(90)]

HOG = """
class Model:
    def load(self):
        self.hog = bytearray(400 * 1024 * 1024)
        for i in range(0, len(self.hog), 4096):
            self.hog[i] = 1

    def predict(self, model_input):
        return {}
"""

SMALL = """
class Model:
    def predict(self, model_input):
        return {"ok": True}
"""


def _push(swell: Swell, root: Path, source: str, resources: dict[str, Any]) -> dict[str, Any]:
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text(textwrap.dedent(source))
    (root / "config.yaml").write_text(yaml.safe_dump({"resources": resources}))
    return swell.push(root, name=root.name)


def test_model_over_its_memory_limit_is_reported_and_the_server_lives_on(swell: Swell, tmp_path: Path) -> None:
    pushed = _push(swell, tmp_path / "hog", HOG, {"memory": "128Mi"})
    response = swell.http.post(swell.predict_path(pushed), json={})
    assert response.status_code == 503, response.text
    assert "exceeded its memory limit of 128Mi" in response.json()["reason"]
    view = swell.deployment(pushed)
    assert "exceeded its memory limit of 128Mi" in (view["error"] or "")
    assert view["status"] == "Unhealthy"
    assert swell.http.get("/health").status_code == 200
    said = [line for line in swell.log.read_text().splitlines() if "resources: " in line and "enforced" in line or "no writable cgroup" in line]
    assert len(said) == 1  # how limits are enforced is said once


def test_replica_that_does_not_fit_waits_pending_and_the_deployment_says_why(swell: Swell, tmp_path: Path) -> None:
    # Each replica reserves 60% of the machine's memory: the second can not be placed.
    share = int(machine_capacity(gpus=()).memory * 0.6) // (1 << 20)
    pushed = _push(swell, tmp_path / "big", SMALL, {"memory": f"{share}Mi"})
    assert swell.patch(pushed, min_replica=2, max_replica=2, scale_down_delay=60).status_code == 200
    view = swell.wait_for(
        pushed,
        lambda v: any(r["state"] == "pending" for r in v["replicas"]) and any(r["state"] == "ready" for r in v["replicas"]),
        timeout=30,
        what="one ready replica and one pending",
    )
    [pending] = [r for r in view["replicas"] if r["state"] == "pending"]
    assert pending["reason"].startswith(f"waiting for resources: needs {share}Mi of memory")
    assert view["pending_reason"] == pending["reason"]
    assert view["status"] == "Active"  # the ready one serves meanwhile
    assert swell.http.post(swell.predict_path(pushed), json={}).json() == {"ok": True}
    # Back to one: the pending replica is dropped, never started.
    assert swell.patch(pushed, min_replica=0, max_replica=1, scale_down_delay=0).status_code == 200
    swell.wait_for(pushed, lambda v: not any(r["state"] == "pending" for r in v["replicas"]), timeout=30,
                   what="the pending replica to go")
