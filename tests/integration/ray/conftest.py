"""``swell serve --backend ray`` against a real multi-node Ray cluster on this
machine, in a loopback-only network namespace (tests/integration/live/ray_live.py).

The fixtures are the live tests' (swell_live.py, ray_live.py) with the
backend fixed to Ray; the live serving suite runs on Ray too
(tests/integration/live/test_live_serving.py).  This folder keeps what only
Ray has: nodes lost and joining, pending reasons, standbys, the package and
secrets on a node, replica output from a node.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "live"))  # the live tests' helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples_support

from ray_live import loopback_namespace, ray_cluster  # type: ignore[import-not-found]  # noqa: F401 -- fixtures
from swell_live import make_model, settle_on_ray, swell  # type: ignore[import-not-found]  # noqa: F401 -- fixtures


@pytest.fixture(scope="module")
def backend() -> str:
    return "ray"
