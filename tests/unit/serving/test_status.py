"""Deployment status and the scale-down choice, as tables."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from swell.serving import (
    BuildState,
    DeploymentStatus,
    ReplicaState,
    deployment_status,
    scale_down_choice,
)

R = ReplicaState
S = DeploymentStatus


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, S.SCALED_TO_ZERO),
        ({"replicas": [R.STARTING]}, S.WAKING_UP),
        ({"replicas": [R.PENDING]}, S.WAKING_UP),
        ({"pending_starts": 1}, S.WAKING_UP),
        ({"replicas": [R.LOADING]}, S.LOADING_MODEL),
        ({"replicas": [R.STARTING, R.LOADING]}, S.LOADING_MODEL),
        ({"replicas": [R.READY]}, S.ACTIVE),
        ({"replicas": [R.LOADING, R.READY]}, S.ACTIVE),
        ({"load_failing": True}, S.UNHEALTHY),
        ({"load_failing": True, "replicas": [R.STARTING]}, S.WAKING_UP),
        ({"build": BuildState.BUILDING}, S.BUILDING),
        ({"build": BuildState.FAILED}, S.FAILED),
        ({"active": False, "replicas": [R.READY]}, S.INACTIVE),
    ],
)
def test_deployment_status(kwargs: dict, expected: DeploymentStatus) -> None:
    assert deployment_status(**kwargs) is expected


def test_status_words_are_the_documented_ones() -> None:
    assert [s.value for s in S] == [
        "Scaled to zero", "Waking up", "Loading model", "Active", "Building", "Unhealthy", "Failed", "Inactive",
    ]


@dataclass
class C:
    name: str
    ready: bool
    in_flight: int


@pytest.mark.parametrize(
    ("candidates", "count", "expected"),
    [
        ([C("a", True, 0), C("b", False, 0)], 1, ["b"]),
        ([C("a", True, 3), C("b", True, 1), C("c", True, 2)], 1, ["b"]),
        ([C("a", True, 3), C("b", True, 1), C("c", False, 0)], 2, ["c", "b"]),
        ([C("a", True, 0), C("b", True, 0)], 1, ["b"]),  # newest among equals
        ([C("a", True, 0)], 0, []),
        ([C("a", True, 0)], 5, ["a"]),
    ],
)
def test_scale_down_picks_not_ready_then_least_loaded(candidates: list[C], count: int, expected: list[str]) -> None:
    assert [c.name for c in scale_down_choice(candidates, count)] == expected
