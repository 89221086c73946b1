"""A fixed keep-alive: the classic serverless baseline.

Source: the fixed 10-minute keep-alive that Shahrad et al. take as the
provider baseline in "Serverless in the Wild: Characterizing and Optimizing
the Serverless Workload at a Large Cloud Provider" (USENIX ATC 2020, § 4),
the policy of OpenWhisk and, then, AWS Lambda.

Defined here as: the replica count follows Swell's ``wanted`` (mean concurrency
over ``autoscaling_window`` / replica capacity, stages 1–2 of the rule, reused
from :mod:`swell.autoscaling`) up *and down* with no scale-down delay, but
never below one replica until 10 minutes after the last request finished.
"""

from __future__ import annotations

from swell.autoscaling import average_concurrency, wanted_replicas
from swell.sim.policies._base import INF, Policy, PolicyContext, View

KEEP_ALIVE_S = 600.0


class KeepAlivePolicy(Policy):
    name = "keepalive"

    def __init__(self, context: PolicyContext) -> None:
        super().__init__(context)
        self.lookback = float(self.settings.autoscaling_window)
        self.last_average = 0.0

    def tick(self, view: View) -> int:
        average = average_concurrency(self.settings, view.window, view.now)
        self.last_average = average
        wanted = wanted_replicas(self.settings, average)
        keep = 1 if view.concurrency > 0 or view.now < view.last_busy + KEEP_ALIVE_S else 0
        return self.clamp(max(wanted, keep))

    def idle_until(self, view: View, tick: float) -> float:
        if self.last_average > 0:
            return view.now
        keeping = view.now < view.last_busy + KEEP_ALIVE_S
        if self.clamp(1 if keeping else 0) != view.replicas:
            return view.now
        if keeping and self.clamp(0) != view.replicas:
            return view.last_busy + KEEP_ALIVE_S
        return INF
