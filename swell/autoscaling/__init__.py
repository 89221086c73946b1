"""The pure autoscaling rule, its sliding window and the clock interface.

Imports nothing of Swell but :mod:`swell.config`.
"""

from swell.autoscaling._clock import Clock, RealClock, VirtualClock
from swell.autoscaling._rule import (
    Action,
    Decision,
    Extras,
    Observation,
    ScalerState,
    average_concurrency,
    backoff,
    burst_replicas,
    capacity_ceiling,
    clamp,
    decide,
    extras_in_force,
    hold_for_scale_down,
    promotion_floor,
    scheduled_floor,
    wanted_replicas,
)
from swell.autoscaling._history import TrafficHistory
from swell.autoscaling._schedule import next_schedule_change, schedule_floor, schedule_is_open
from swell.autoscaling._window import ConcurrencyWindow

__all__ = [
    "Action",
    "Clock",
    "ConcurrencyWindow",
    "Decision",
    "Extras",
    "Observation",
    "RealClock",
    "ScalerState",
    "TrafficHistory",
    "VirtualClock",
    "average_concurrency",
    "backoff",
    "burst_replicas",
    "capacity_ceiling",
    "clamp",
    "decide",
    "extras_in_force",
    "hold_for_scale_down",
    "next_schedule_change",
    "promotion_floor",
    "schedule_floor",
    "schedule_is_open",
    "scheduled_floor",
    "wanted_replicas",
]
