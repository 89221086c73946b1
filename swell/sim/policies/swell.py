"""Swell's own rule: :func:`swell.autoscaling.decide`, the very function the live server runs.

Source: ``DESIGN.md`` § "The scaling rule" and ``swell/autoscaling/_rule.py``.
With the extras in force (the settings' ``burst`` and ``trend``, or the context's
:class:`~swell.autoscaling.Extras`) and the settings' ``schedules`` (read on the
wall clock ``epoch + now``) it is ``swell+``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from swell.autoscaling import (
    Decision,
    Observation,
    ScalerState,
    average_concurrency,
    clamp,
    decide,
    extras_in_force,
    schedule_floor,
    wanted_replicas,
)
from swell.sim.policies._base import INF, IdleWindow, Policy, PolicyContext, SimWindow, View


# Up to this many ticks ahead, the next change of wanted is looked for on the window itself.
_SCAN = 8


def _first(ahead: int, reached: Callable[[int], bool]) -> int:
    """The first j in 1 … ``ahead`` − 1 where ``reached`` holds, a monotone test; else ``ahead``."""
    lo, hi = 0, ahead
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if reached(mid):
            hi = mid
        else:
            lo = mid
    return hi


class SwellPolicy(Policy):
    """Window mean → wanted → held for the scale-down delay → clamped; wake at once."""

    name = "swell"

    def __init__(self, context: PolicyContext) -> None:
        super().__init__(context)
        self.lookback = float(self.settings.autoscaling_window)
        self.state = ScalerState()
        self.last: Decision | None = None
        self._projected: tuple[SimWindow, int, int, list[float]] | None = None
        self.extras = extras_in_force(self.settings, context.extras)
        self.epoch = context.epoch
        if self.extras.active or self.settings.schedules:
            self.name = "swell+"

    def _observe(self, now: float, concurrency: int, replicas: int, ready: int | None) -> Observation:
        # A replay has no promotion and its replicas never fail, so the rule's
        # promotion floor and back-off inputs stay at their defaults (none).
        return Observation(now, concurrency, replicas, ready, self.epoch + now)

    def tick(self, view: View) -> int:
        decision, self.state = decide(
            self.settings,
            view.window,
            self.state,
            self._observe(view.now, view.concurrency, view.replicas, view.ready),
            self.extras,
        )
        self.last = decision
        return decision.target

    def wake(self, view: View) -> int:
        # decide() itself wakes: concurrency > 0 with no replica → target ≥ 1.
        return self.tick(view)

    def clamp(self, target: int) -> int:
        # The floor at the start of the replay includes an open schedule's.
        floor = schedule_floor(self.settings.schedules, self.epoch)[0] if self.settings.schedules else 0
        return clamp(self.settings, target, floor)

    def steady(self, view: View) -> int | None:
        # decide() would answer as last time, and leave a state that behaves the same, when the
        # window still wants what it wanted (a run of equal wanted values is held as one entry),
        # no held value expires and the schedules' floor holds; the extras and a wake read more.
        last, s = self.last, self.settings
        if last is None or self.extras.active or (view.replicas == 0 and view.concurrency > 0):
            return None
        now = view.now
        if wanted_replicas(s, average_concurrency(s, view.window, now)) != last.wanted:
            return None
        state = self.state
        held = state.held
        if len(held) > 1 and held[0].until <= now - s.scale_down_delay:
            return None
        if s.schedules and not state.floor_from <= self.epoch + now < state.floor_until:
            return None
        return last.target

    def _first_tick(self, now: float, ahead: int, reached: Callable[[float], bool], near: float) -> int:
        """The first tick after ``now`` (at most ``ahead`` on) where ``reached`` holds, a monotone test
        of a deadline near ``near`` in plain arithmetic: a probe or two around it settle it."""
        k = min(max(1, math.ceil((near - now) / self.plan.tick)), ahead)
        while k > 1 and reached(self.tick_time(now, k - 1)):
            k -= 1
        while k < ahead and not reached(self.tick_time(now, k)):
            k += 1
        return k

    def _projection(self, window: SimWindow, now: float, span: int) -> tuple[int, list[float]]:
        """The window's mean (:meth:`SimWindow.mean_if_idle`) at the ticks from ``now`` to ``span`` on
        if nothing arrives, as ``(first, means)`` indexed by tick number − ``first``: one numpy pass,
        kept while the window only records zeros (a decay asks again at each step of wanted)."""
        plan = self.plan
        base = round((now - plan.start) / plan.tick)
        cached = self._projected
        if cached is not None and cached[0] is window and cached[1] == window.busy and cached[2] <= base \
                and base + span < cached[2] + len(cached[3]):
            return cached[2], cached[3]
        ticks = plan.start + np.arange(base, base + 2 * span + 1) * plan.tick
        means = window.means_if_idle(ticks, float(self.settings.autoscaling_window)).tolist()
        self._projected = (window, window.busy, base, means)
        return base, means

    def idle_until(self, view: View, tick: float) -> float:
        last = self.last
        if last is None or last.average > 0 or last.wanted > 0:
            return view.now
        return self.quiet_until(view, tick)

    def quiet_until(self, view: View, tick: float, horizon: float = INF) -> float:
        # With nothing in flight from now on, decide() changes its answer (or its state in a way
        # that matters) only at the first tick where the window's mean gives another wanted (it
        # only falls while the busy past leaves the window), where the oldest held value expires,
        # or where the schedules' floor may change.  The engine jumps to the earliest; it looks no
        # further than the first tick at or past ``horizon``.
        last, state, s = self.last, self.state, self.settings
        if last is None or last.target != view.replicas or not isinstance(view.window, SimWindow):
            return view.now
        if self.extras.trend and last.average > 0:
            return view.now  # the trend reads the window's shape, not only its mean
        now = view.now
        reach = INF if horizon == INF else max(1, math.ceil((horizon - now) / tick) + 1)
        event = self.tick_time(now, reach) if reach < INF else INF
        idle = IdleWindow(view.window)
        if last.wanted > 0 or last.average > 0:
            # The window's mean only falls from here: the first tick where wanted differs (or, with
            # nothing wanted, where the window is empty: the ticking replay ends only then, so does this).
            span = math.ceil(s.autoscaling_window / tick) + 2
            ahead = min(span, reach)
            if ahead <= _SCAN:  # a short gap in a burst: a probe or two
                def mean(j: int) -> float:
                    return average_concurrency(s, idle, self.tick_time(now, j))  # type: ignore[arg-type]
            else:
                first, means = self._projection(view.window, now, span)
                offset = round((now - self.plan.start) / self.plan.tick) - first

                def mean(j: int) -> float:
                    return means[offset + j]
            if last.wanted > 0:
                def changed(j: int) -> bool:
                    return wanted_replicas(s, mean(j)) != last.wanted
            else:
                def changed(j: int) -> bool:
                    return mean(j) <= 0
            event = min(event, self.tick_time(now, _first(ahead, changed)))
        # A held value that expires changes the target only when the next one, clamped, differs
        # (expiring later, on the next call, leaves the same state: expiry only looks back).
        held = state.held
        floor = state.floor if s.schedules else 0
        for j in range(1, len(held)):
            if clamp(s, held[j].wanted, floor) != last.target:
                until, delay = held[j - 1].until, s.scale_down_delay
                ahead = min(max(1, math.ceil((until + delay - now) / tick) + 2), reach)
                event = min(event, self.tick_time(now, self._first_tick(
                    now, ahead, lambda t, until=until, delay=delay: until <= t - delay, until + delay)))
                break
        if s.schedules and state.floor_until < INF:
            edge = state.floor_until
            ahead = min(max(1, math.ceil((edge - self.epoch - now) / tick) + 2), reach)
            event = min(event, self.tick_time(now, self._first_tick(
                now, ahead, lambda t: self.epoch + t >= edge, edge - self.epoch)))
        return event
