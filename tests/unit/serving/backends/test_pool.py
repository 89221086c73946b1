"""The standby pool's pure parts: when it may refill, how many to make, the assignment."""

from __future__ import annotations

import pytest

from swell.serving.backends.process._pool import (
    STANDBY_MEMORY,
    assignment,
    pool_room,
    to_make,
)
from swell.serving.backends.process._resources import Capacity, Placement

GIB = 1024**3


@pytest.mark.parametrize(
    ("capacity", "used", "pending", "overcommit", "why"),
    [
        (Capacity(cpu=4, memory=8 * GIB), Placement(), 0, 1.0, None),
        (None, Placement(cpu=99, memory=99 * GIB), 0, 1.0, None),  # resources not placed
        (None, Placement(), 1, 1.0, "1 replica(s) wait for resources"),
        (Capacity(cpu=4, memory=8 * GIB), Placement(), 2, 1.0, "2 replica(s) wait for resources"),
        (Capacity(cpu=4, memory=8 * GIB), Placement(memory=8 * GIB - STANDBY_MEMORY), 0, 1.0, None),
        (Capacity(cpu=4, memory=8 * GIB), Placement(memory=8 * GIB - STANDBY_MEMORY + 1), 0, 1.0, "memory:"),
        (Capacity(cpu=4, memory=8 * GIB), Placement(cpu=4.0), 0, 1.0, "CPU: all 4 promised"),
        (Capacity(cpu=4, memory=8 * GIB), Placement(cpu=4.0), 0, 2.0, None),
        (Capacity(cpu=4, memory=8 * GIB), Placement(cpu=8.0), 0, 2.0, "CPU: all 8 promised"),
        (Capacity(cpu=1, memory=STANDBY_MEMORY - 1), Placement(), 0, 1.0, "memory:"),
    ],
)
def test_pool_room(
    capacity: Capacity | None, used: Placement, pending: int, overcommit: float, why: str | None
) -> None:
    got = pool_room(capacity, used, pending, overcommit)
    if why is None:
        assert got is None
    else:
        assert got is not None and got.startswith(why)


@pytest.mark.parametrize(
    ("size", "standing", "making", "want"),
    [(0, 0, 0, 0), (1, 0, 0, 1), (2, 1, 0, 1), (2, 1, 1, 0), (2, 3, 0, 0), (3, 0, 1, 2)],
)
def test_to_make(size: int, standing: int, making: int, want: int) -> None:
    assert to_make(size, standing, making) == want


def test_assignment_leaves_the_standbys_own_descriptors_to_it() -> None:
    env = {"A": "1", "SWELL_EVENTS_FD": "-1", "SWELL_LIFELINE_FD": "-1", "SWELL_REPLICA_SOCKET": "/s.sock"}
    message = assignment("r-abc123", "swell.modelserver", ("--model-dir", "/pkg"), env, "/pkg")
    assert message == {
        "op": "assign", "id": "r-abc123", "module": "swell.modelserver", "args": ["--model-dir", "/pkg"],
        "cwd": "/pkg", "env": {"A": "1", "SWELL_REPLICA_SOCKET": "/s.sock"},
    }
