"""A real ``swell serve`` subprocess on 127.0.0.1, real replica processes, real HTTP.

The fixtures live in swell_live.py (and the Ray cluster's in ray_live.py),
shared with tests/integration/ray.  ``swell`` runs the process backend here;
a module that overrides ``backend`` with params (test_live_serving.py) runs
on each backend it names.
"""

from __future__ import annotations

import pytest
from ray_live import loopback_namespace, ray_cluster  # type: ignore[import-not-found]  # noqa: F401 -- fixtures
from swell_live import make_model, settle_on_ray, swell  # type: ignore[import-not-found]  # noqa: F401 -- fixtures


@pytest.fixture(scope="module")
def backend() -> str:
    return "process"
