"""The pure autoscaling rule, its sliding window and the clock interface.

Imports nothing of Swell but :mod:`swell.config`.
"""

from swell.autoscaling._clock import Clock, RealClock, VirtualClock
from swell.autoscaling._rule import (
    Action,
    Decision,
    Observation,
    ScalerState,
    average_concurrency,
    clamp,
    decide,
    hold_for_scale_down,
    wanted_replicas,
)
from swell.autoscaling._window import ConcurrencyWindow

__all__ = [
    "Action",
    "Clock",
    "ConcurrencyWindow",
    "Decision",
    "Observation",
    "RealClock",
    "ScalerState",
    "VirtualClock",
    "average_concurrency",
    "clamp",
    "decide",
    "hold_for_scale_down",
    "wanted_replicas",
]
