"""The simulator: replay a request trace through Swell's scaling rule (or a peer's)
on a virtual clock, and report cost and latency.

Depends only on :mod:`swell.autoscaling` and :mod:`swell.config`; the rule it
runs is the very ``decide`` the live server runs.
"""

from swell.sim._engine import SimConfig, SimResult, Timeline, replay
from swell.sim._errors import SimulationError, TraceError
from swell.sim._models import DEFAULT_TOKEN_MODEL, ColdStart, ServiceTime
from swell.sim._trace import GENERATORS, Trace, is_synthetic_spec, load_trace, read_csv_trace, synthetic_trace
from swell.sim.policies import DESCRIPTIONS, POLICIES, Policy, PolicyContext, View, make_policy

__all__ = [
    "DEFAULT_TOKEN_MODEL",
    "DESCRIPTIONS",
    "GENERATORS",
    "POLICIES",
    "ColdStart",
    "Policy",
    "PolicyContext",
    "ServiceTime",
    "SimConfig",
    "SimResult",
    "SimulationError",
    "Timeline",
    "Trace",
    "TraceError",
    "View",
    "is_synthetic_spec",
    "load_trace",
    "make_policy",
    "read_csv_trace",
    "replay",
    "synthetic_trace",
]
