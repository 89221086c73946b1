"""Scaling policies the simulator can replay: Swell's rule and its peers.

Each peer is re-implemented from its published algorithm, with the source in
its module's docstring, so that ``swell simulate --compare`` puts Swell's rule
next to what else a team could run.
"""

from __future__ import annotations

from swell.sim.policies._base import IdleWindow, Plan, Policy, PolicyContext, SimWindow, View
from swell.sim.policies.keepalive import KeepAlivePolicy
from swell.sim.policies.knative import KnativePolicy
from swell.sim.policies.oracle import OraclePolicy
from swell.sim.policies.ray_serve import RayServePolicy
from swell.sim.policies.swell import SwellPolicy

POLICIES: dict[str, type[Policy]] = {
    "swell": SwellPolicy,
    "knative": KnativePolicy,
    "ray-serve": RayServePolicy,
    "keepalive": KeepAlivePolicy,
    "oracle": OraclePolicy,
}

DESCRIPTIONS: dict[str, str] = {
    "swell": "Swell's rule (swell.autoscaling.decide) with the given settings",
    "knative": "Knative KPA defaults: 60 s stable / 6 s panic window, 70 % target, 30 s scale-to-zero grace",
    "ray-serve": "Ray Serve defaults: 2 ongoing requests per replica, 30 s up / 600 s down delay",
    "keepalive": "Swell's wanted with no scale-down delay, ≥ 1 replica until 10 min after the last request",
    "oracle": "clairvoyant: starts replicas one cold start before they are needed, drains them when idle",
}


def make_policy(name: str, context: PolicyContext) -> Policy:
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}") from None
    return cls(context)


__all__ = [
    "DESCRIPTIONS",
    "IdleWindow",
    "POLICIES",
    "KeepAlivePolicy",
    "KnativePolicy",
    "OraclePolicy",
    "Plan",
    "Policy",
    "PolicyContext",
    "RayServePolicy",
    "SimWindow",
    "SwellPolicy",
    "View",
    "make_policy",
]
