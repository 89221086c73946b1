"""What the engine asks of a policy, and what it tells it.

Every tick the engine hands a policy a :class:`View` (what is true now) and
applies the replica count it returns; a request that finds no replica calls
:meth:`Policy.wake` at once.  :meth:`Policy.idle_until` lets the engine jump
over idle stretches: it must return a time no later than the policy's next
change of mind while no request arrives.  :meth:`Policy.steady` lets it skip
the work of a tick whose answer it can prove is the last one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from swell.autoscaling import ConcurrencyWindow, Extras, clamp
from swell.config import AutoscalingSettings
from swell.sim._models import ColdStart

__all__ = ["IdleWindow", "Plan", "Policy", "PolicyContext", "SimWindow", "View"]


@dataclass(frozen=True)
class PolicyContext:
    """What every policy is built from: the deployment's settings and model."""

    settings: AutoscalingSettings
    predict_concurrency: int = 1
    cold_start: ColdStart = ColdStart("fixed", 10.0)
    extras: Extras = field(default_factory=Extras)  # Swell's opt-in extras (off by default)
    epoch: float = 0.0  # unix seconds at trace time 0: the wall clock that schedules read


@dataclass(frozen=True, eq=False)
class Plan:
    """The whole trace, for a policy that may read the future (the oracle)."""

    arrivals: NDArray[np.float64]
    service: NDArray[np.float64]
    start: float  # the tick grid: start + k × tick
    tick: float


class SimWindow(ConcurrencyWindow):
    """The engine's window, which can also tell its mean at a later time if nothing arrives."""

    __slots__ = ()

    def mean_if_idle(self, now: float, window: float) -> float:
        """``mean(now, window)`` as it will be after ``record(now, 0.0)``: concurrency 0 since the last sample.

        The very arithmetic of :meth:`ConcurrencyWindow.mean` on that window (a zero sample adds
        exactly nothing to the running integral), so a jump that relies on it lands where ticking
        through the silence would.
        """
        # (max(now - window, first) and max(0.0, …) written out, as in ConcurrencyWindow.mean:
        # the jump's search asks a dozen times a step)
        lo = now - window
        first = self._times[0]
        if first > lo:
            lo = first
        if now <= lo:
            return 0.0
        value = (self._cum[-1] - self._integral_at(lo)) / (now - lo)
        return value if value > 0.0 else 0.0


class IdleWindow:
    """A :class:`SimWindow` as ``decide`` would read it at a later time with no request in between."""

    __slots__ = ("window",)

    def __init__(self, window: SimWindow) -> None:
        self.window = window

    def mean(self, now: float, window: float) -> float:
        return self.window.mean_if_idle(now, window)


@dataclass(slots=True)
class View:
    """What is true at ``now``, as a live control loop would see it."""

    now: float
    concurrency: int  # in flight + queued, at this instant
    replicas: int  # replicas that exist and are not draining (starting or ready)
    ready: int  # of those, the ready ones
    window: ConcurrencyWindow  # exact mean concurrency per tick
    last_busy: float  # the last moment concurrency was > 0 (now, if it is)


class Policy:
    """Base class: a scaling policy the simulator replays."""

    name = "policy"
    #: Seconds of window history the policy reads.
    lookback: float = 60.0
    #: How long before an arrival the policy may want to act (only the oracle).
    lead_time: float = 0.0
    plan: Plan

    def __init__(self, context: PolicyContext) -> None:
        self.context = context
        self.settings = context.settings

    def prepare(self, plan: Plan) -> None:
        """Called once before the replay."""
        self.plan = plan

    def tick_time(self, now: float, ahead: int) -> float:
        """The engine's tick ``ahead`` ticks after the tick ``now``, computed as the engine computes it."""
        plan = self.plan
        return plan.start + (round((now - plan.start) / plan.tick) + ahead) * plan.tick

    def steady(self, view: View) -> int | None:
        """``tick(view)``'s answer when it is provably the previous one, and skipping the call changes
        nothing later; ``None``: call :meth:`tick`.  Only a jumping replay asks."""
        return None

    def tick(self, view: View) -> int:
        raise NotImplementedError

    def wake(self, view: View) -> int:
        """A request arrived and no replica exists: at least one, at once."""
        return max(1, self.tick(view))

    def idle_until(self, view: View, tick: float) -> float:
        """With no request from now on, no change of target before this time.

        ``math.inf``: none ever.  Returning ``view.now`` is always safe (no skip).
        """
        return view.now

    def quiet_until(self, view: View, tick: float, horizon: float = math.inf) -> float:
        """As :meth:`idle_until`, also while the window still holds past demand (nothing in flight
        now).  Only a replay that also jumps through busy stretches asks.  ``horizon``: the engine
        stops there anyway (the next arrival, or a replica getting ready), so an answer at or past
        it is as good as any later one."""
        return self.idle_until(view, tick)

    def clamp(self, target: int) -> int:
        return clamp(self.settings, target)


INF = math.inf
