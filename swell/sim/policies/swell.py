"""Swell's own rule: :func:`swell.autoscaling.decide`, the very function the live server runs.

Source: ``DESIGN.md`` § "The scaling rule" and ``swell/autoscaling/_rule.py``.
"""

from __future__ import annotations

from swell.autoscaling import ConcurrencyWindow, Decision, Observation, ScalerState, decide
from swell.sim.policies._base import INF, Policy, PolicyContext, View


class SwellPolicy(Policy):
    """Window mean → wanted → held for the scale-down delay → clamped; wake at once."""

    name = "swell"

    def __init__(self, context: PolicyContext) -> None:
        super().__init__(context)
        self.lookback = float(self.settings.autoscaling_window)
        self.state = ScalerState()
        self.last: Decision | None = None

    def tick(self, view: View) -> int:
        decision, self.state = decide(
            self.settings, view.window, self.state, Observation(view.now, view.concurrency, view.replicas)
        )
        self.last = decision
        return decision.target

    def wake(self, view: View) -> int:
        # decide() itself wakes: concurrency > 0 with no replica → target ≥ 1.
        return self.tick(view)

    def _idle_target(self, t: float, replicas: int) -> int:
        # An empty window has mean 0: exactly what the real window holds when no
        # request has been seen for a whole autoscaling window.
        decision, _ = decide(self.settings, ConcurrencyWindow(t), self.state, Observation(t, 0, replicas))
        return decision.target

    def idle_until(self, view: View, tick: float) -> float:
        last = self.last
        if last is None or last.average > 0 or last.wanted > 0 or last.target != view.replicas:
            return view.now
        now, current = view.now, last.target
        # Zero demand: the held maximum only falls, and after scale_down_delay
        # every value held now has expired; search the first tick it differs.
        limit = int((self.settings.scale_down_delay + tick) // tick) + 2
        if self._idle_target(now + limit * tick, view.replicas) == current:
            return INF
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
