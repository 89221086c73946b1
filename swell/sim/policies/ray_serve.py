"""Ray Serve's default autoscaling policy with its default configuration.

Source: ray-project/ray ``python/ray/serve/autoscaling_policy.py``
(``replica_queue_length_autoscaling_policy`` with ``_apply_autoscaling_config``:
``_get_cold_start_scale_up_replicas``, ``_apply_scaling_factors``,
``_apply_bounds``, ``_apply_delay_logic``) and ``AutoscalingConfig`` defaults in
``python/ray/serve/config.py``: ``target_ongoing_requests`` 2,
``upscale_delay_s`` 30, ``downscale_delay_s`` 600, ``downscale_to_zero_delay_s``
unset (so 600), ``look_back_period_s`` 30 (mean aggregation), scaling factors 1.

Per tick: total ongoing requests (running + queued) averaged over the look-back
period; desired = total / target_ongoing_requests, rounded up, clamped to
[min_replica, max_replica].  A change must be wanted in the same direction for
the whole delay before it happens; scale-down stops at 1 first, and 1 → 0 then
waits its own delay again.  With no running replica and a request waiting,
Ray scales to 1 at once (its cold-start fast path).  Ray counts the delays in
control-loop periods; here they are in seconds, which is the same thing at
Ray's 0.1 s period and stays so whatever the tick.
"""

from __future__ import annotations

import math

from swell.sim.policies._base import INF, Policy, PolicyContext, View

TARGET_ONGOING_REQUESTS = 2.0
UPSCALE_DELAY_S = 30.0
DOWNSCALE_DELAY_S = 600.0
DOWNSCALE_TO_ZERO_DELAY_S: float | None = None
LOOK_BACK_PERIOD_S = 30.0


class RayServePolicy(Policy):
    name = "ray-serve"
    lookback = LOOK_BACK_PERIOD_S

    def __init__(self, context: PolicyContext) -> None:
        super().__init__(context)
        self.target = self.clamp(0)  # Ray starts at min_replicas
        self.direction = 0  # +1 up, -1 down, 0 none: the sign of Ray's decision counter
        self.since = 0.0  # when the current streak of decisions began
        self.last_average = 0.0

    def tick(self, view: View) -> int:
        now = view.now
        total = view.window.mean(now, LOOK_BACK_PERIOD_S)
        self.last_average = total
        if view.ready == 0:
            # Cold-start fast path: no running replica; bypasses the delays.
            if view.concurrency > 0 or total > 0:
                self.target = max(1, self.target)
            self.direction = 0
            return self.target
        desired = self.clamp(math.ceil(total / TARGET_ONGOING_REQUESTS - 1e-9))
        if desired > self.target:
            self._streak(+1, now)
            if now - self.since >= UPSCALE_DELAY_S:
                self.target, self.direction = desired, 0
        elif desired < self.target:
            self._streak(-1, now)
            if self.target == 1:
                delay = DOWNSCALE_TO_ZERO_DELAY_S if DOWNSCALE_TO_ZERO_DELAY_S is not None else DOWNSCALE_DELAY_S
            else:
                delay = DOWNSCALE_DELAY_S
                desired = max(1, desired)  # only 1 → 0 may reach zero
            if now - self.since >= delay:
                self.target, self.direction = desired, 0
        else:
            self.direction = 0
        return self.target

    def _streak(self, direction: int, now: float) -> None:
        if self.direction != direction:
            self.direction, self.since = direction, now

    def wake(self, view: View) -> int:
        self.target = max(1, self.target)
        self.direction = 0
        return self.target

    def idle_until(self, view: View, tick: float) -> float:
        if self.last_average > 0:
            return view.now
        floor = self.clamp(0)
        if self.target <= floor:
            return INF
        if self.direction != -1:
            return view.now
        if self.target == 1 and DOWNSCALE_TO_ZERO_DELAY_S is not None:
            return self.since + DOWNSCALE_TO_ZERO_DELAY_S
        return self.since + DOWNSCALE_DELAY_S
