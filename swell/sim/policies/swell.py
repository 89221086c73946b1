"""Swell's own rule: :func:`swell.autoscaling.decide`, the very function the live server runs.

Source: ``DESIGN.md`` § "The scaling rule" and ``swell/autoscaling/_rule.py``.
With the extras in force (the settings' ``burst`` and ``trend``, or the context's
:class:`~swell.autoscaling.Extras`) and the settings' ``schedules`` (read on the
wall clock ``epoch + now``) it is ``swell+``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from swell.autoscaling import (
    Decision,
    Observation,
    ScalerState,
    clamp,
    decide,
    extras_in_force,
    schedule_floor,
    wanted_replicas,
)
from swell.sim.policies._base import INF, IdleWindow, Policy, PolicyContext, SimWindow, View


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
            explain=False,  # a replay reads the numbers only
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
        if wanted_replicas(s, view.window.mean(now, s.autoscaling_window)) != last.wanted:  # (average_concurrency)
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
        #
        # A new wanted that the scale-down delay holds (the target stays) is decided here, on the
        # window as it will be (IdleWindow), and the search goes on from there: a window's decay
        # steps down through several wanted values, each a tick the engine need not stop at.
        last = self.last
        if last is None or last.target != view.replicas or not isinstance(view.window, SimWindow):
            return view.now
        if self.extras.trend and last.average > 0:
            return view.now  # the trend reads the window's shape, not only its mean
        idle = IdleWindow(view.window)
        now = view.now
        while True:
            event, wanted_changes = self._quiet_event(view, idle, now, tick, horizon)
            if not wanted_changes or not event < horizon - tick:
                return event
            decision, state = decide(self.settings, idle, self.state,  # type: ignore[arg-type]
                                     self._observe(event, 0, view.replicas, view.ready), self.extras,
                                     explain=False)
            if decision.target != self.last.target or not decision.wanted:  # type: ignore[union-attr]
                # The engine's tick there decides it again, and acts (or, the window empty,
                # may end the replay there).
                return event
            self.last, self.state, now = decision, state, event

    def _quiet_event(self, view: View, idle: IdleWindow, now: float, tick: float,
                     horizon: float) -> tuple[float, bool]:
        """:meth:`quiet_until` from ``now`` for the policy's last decision, and whether it is the
        tick where the window's mean gives another (non-zero before) wanted."""
        last, state, s = self.last, self.state, self.settings
        assert last is not None
        reach = INF if horizon == INF else max(1, math.ceil((horizon - now) / tick) + 1)
        event = self.tick_time(now, reach) if reach < INF else INF
        wanted_changes = False
        if last.wanted > 0 or last.average > 0:
            # The window's mean only falls from here: the first tick where wanted differs (or, with
            # nothing wanted, where the window is empty: the ticking replay ends only then, so does this).
            span = math.ceil(s.autoscaling_window / tick) + 2
            ahead = min(span, reach)
            # A binary search of probes, each the window's mean as it will be (IdleWindow): a dozen
            # probes even for an hour's window, cheaper than projecting every tick in numpy.
            # average_concurrency(s, idle, self.tick_time(now, j)), written out: the probes are many.
            plan, mean_if_idle, window = self.plan, idle.window.mean_if_idle, s.autoscaling_window
            base = round((now - plan.start) / plan.tick)

            def mean(j: int) -> float:
                return mean_if_idle(plan.start + (base + j) * plan.tick, window)

            if last.wanted > 0:
                def changed(j: int) -> bool:
                    return wanted_replicas(s, mean(j)) != last.wanted
            else:
                def changed(j: int) -> bool:
                    return mean(j) <= 0
            found = _first(ahead, changed)
            if self.tick_time(now, found) < event:
                event = self.tick_time(now, found)
                wanted_changes = last.wanted > 0 and found < ahead
        # A held value that expires changes the target only when the next one, clamped, differs
        # (expiring later, on the next call, leaves the same state: expiry only looks back).
        held = state.held
        floor = state.floor if s.schedules else 0
        for j in range(1, len(held)):
            if clamp(s, held[j].wanted, floor) != last.target:
                until, delay = held[j - 1].until, s.scale_down_delay
                ahead = int(min(max(1, math.ceil((until + delay - now) / tick) + 2), reach))
                expiry = self.tick_time(now, self._first_tick(now, ahead, lambda t: until <= t - delay, until + delay))
                if expiry <= event:
                    event, wanted_changes = expiry, False
                break
        if s.schedules and state.floor_until < INF:
            edge = state.floor_until
            ahead = int(min(max(1, math.ceil((edge - self.epoch - now) / tick) + 2), reach))
            opens = self.tick_time(now, self._first_tick(
                now, ahead, lambda t: self.epoch + t >= edge, edge - self.epoch))
            if opens <= event:
                event, wanted_changes = opens, False
        return event, wanted_changes
