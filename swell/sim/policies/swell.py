"""Swell's own rule: :func:`swell.autoscaling.decide`, the very function the live server runs.

Source: ``DESIGN.md`` § "The scaling rule" and ``swell/autoscaling/_rule.py``.
With the context's :class:`~swell.autoscaling.Extras` (burst) and the settings'
``schedules`` (read on the wall clock ``epoch + now``) it is ``swell+``.
"""

from __future__ import annotations

from swell.autoscaling import (
    ConcurrencyWindow,
    Decision,
    Observation,
    ScalerState,
    clamp,
    decide,
    next_schedule_change,
    schedule_floor,
)
from swell.sim.policies._base import INF, Policy, PolicyContext, View


class SwellPolicy(Policy):
    """Window mean → wanted → held for the scale-down delay → clamped; wake at once."""

    name = "swell"

    def __init__(self, context: PolicyContext) -> None:
        super().__init__(context)
        self.lookback = float(self.settings.autoscaling_window)
        self.state = ScalerState()
        self.last: Decision | None = None
        self.extras = context.extras
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

    def _idle_target(self, t: float, replicas: int) -> int:
        # An empty window has mean 0: exactly what the real window holds when no
        # request has been seen for a whole autoscaling window.
        decision, _ = decide(
            self.settings, ConcurrencyWindow(t), self.state, self._observe(t, 0, replicas, replicas), self.extras
        )
        return decision.target

    def idle_until(self, view: View, tick: float) -> float:
        last = self.last
        if last is None or last.average > 0 or last.wanted > 0 or last.target != view.replicas:
            return view.now
        now, current = view.now, last.target
        # A schedule's window opening or closing changes the floor: stop there
        # (no later), and search for a scale-down only up to it.
        bound = INF
        if self.settings.schedules:
            bound = next_schedule_change(self.settings.schedules, self.epoch + now) - self.epoch
        # Zero demand: the held maximum only falls, and after scale_down_delay
        # every value held now has expired; search the first tick it differs.
        limit = int((self.settings.scale_down_delay + tick) // tick) + 2
        if bound < INF:
            limit = max(1, min(limit, int((bound - now) // tick)))
        if self._idle_target(now + limit * tick, view.replicas) == current:
            return INF if bound == INF else max(now, now + limit * tick)
        lo, hi = 0, 1
        while hi < limit and self._idle_target(now + hi * tick, view.replicas) == current:
            lo, hi = hi, hi * 2
        hi = min(hi, limit)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._idle_target(now + mid * tick, view.replicas) == current:
                lo = mid
            else:
                hi = mid
        return now + hi * tick
