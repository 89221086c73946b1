"""Knative's Pod Autoscaler (KPA) with its default configuration.

Source: knative/serving ``pkg/autoscaler/scaling/autoscaler.go`` (``autoscaler.Scale``)
and the ``config-autoscaler`` defaults: stable window 60 s, panic window 10 % of
it (6 s), panic threshold 200 %, max scale-up rate 1000, max scale-down rate 2,
scale-down delay 0 s, scale-to-zero grace period 30 s, target utilisation
(``container-concurrency-target-percentage``) 70 % of the container concurrency,
which here is the model's ``predict_concurrency``.

Per tick, as ``Scale`` does: desired stable / panic pod counts are
ceil(mean concurrency over the window / target), kept within
[floor(ready / 2), ceil(1000 × ready)] (ready counted as at least 1).  Panic
starts when the panic count reaches twice the ready pods, ends once it has not
for a whole stable window, and while panicking the count never falls.  Scaling
to zero follows the KPA reconciler: the last pod goes once the decider has
wanted zero for the grace period.  A request with no pod wakes one at once (the
activator's poke).  ``min_replica`` / ``max_replica`` act as Knative's
min-scale / max-scale.
"""

from __future__ import annotations

import math

from swell.sim.policies._base import INF, Policy, PolicyContext, View

STABLE_WINDOW = 60.0
PANIC_WINDOW = 6.0  # 10 % of the stable window
PANIC_THRESHOLD = 2.0
MAX_SCALE_UP_RATE = 1000.0
MAX_SCALE_DOWN_RATE = 2.0
SCALE_TO_ZERO_GRACE = 30.0
TARGET_PERCENTAGE = 0.70


class KnativePolicy(Policy):
    name = "knative"
    lookback = STABLE_WINDOW

    def __init__(self, context: PolicyContext) -> None:
        super().__init__(context)
        self.target_value = TARGET_PERCENTAGE * context.predict_concurrency
        self.panic_time: float | None = None
        self.max_panic_pods = 0
        self.zero_since: float | None = None
        self.last_stable = 0.0

    def tick(self, view: View) -> int:
        now = view.now
        ready = max(1.0, float(view.ready))
        stable = view.window.mean(now, STABLE_WINDOW)
        panic = view.window.mean(now, PANIC_WINDOW)
        self.last_stable = stable
        max_up = math.ceil(MAX_SCALE_UP_RATE * ready)
        max_down = math.floor(ready / MAX_SCALE_DOWN_RATE)
        dspc = math.ceil(stable / self.target_value - 1e-9)
        dppc = math.ceil(panic / self.target_value - 1e-9)
        desired_stable = int(min(max(dspc, max_down), max_up))
        desired_panic = int(min(max(dppc, max_down), max_up))
        over = dppc / ready >= PANIC_THRESHOLD
        if over:
            self.panic_time = now
        elif self.panic_time is not None and self.panic_time + STABLE_WINDOW < now:
            self.panic_time = None
            self.max_panic_pods = 0
        desired = desired_stable
        if self.panic_time is not None:
            desired = max(desired, desired_panic)
            self.max_panic_pods = max(self.max_panic_pods, desired)
            desired = self.max_panic_pods
        return self._reconcile(self.clamp(desired), view)

    def _reconcile(self, desired: int, view: View) -> int:
        # The KPA reconciler removes the last pod only after the grace period.
        if desired == 0 and view.replicas > 0:
            if self.zero_since is None:
                self.zero_since = view.now
            if view.now - self.zero_since < SCALE_TO_ZERO_GRACE:
                return view.replicas
            return 0
        self.zero_since = None
        return desired

    def wake(self, view: View) -> int:
        self.zero_since = None
        return max(1, self.tick(view))

    def idle_until(self, view: View, tick: float) -> float:
        if self.last_stable > 0:
            return view.now
        if self.panic_time is not None:
            return self.panic_time + STABLE_WINDOW
        floor = self.clamp(0)
        if view.replicas <= floor:
            return INF
        if view.replicas > 1:
            return view.now  # halving, one tick at a time
        if self.zero_since is None:
            return view.now
        return self.zero_since + SCALE_TO_ZERO_GRACE
