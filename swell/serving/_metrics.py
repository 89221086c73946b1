"""Prometheus metrics, read from the router's counters at scrape time.

The hot path only bumps plain integers; this collector turns them into
Prometheus families when ``/metrics`` is scraped, so no metric lock or label
lookup sits on a request.
"""

from __future__ import annotations

from swell.serving._backend import ReplicaState
from swell.serving._cold_start import COLD_START_PHASES, PHASE_BUCKETS
from swell.serving._controller import COLD_START_BUCKETS, Controller
from swell.serving._router import LATENCY_BUCKETS

__all__ = ["CONTENT_TYPE", "MetricFamily", "render_metrics"]

#: The Prometheus text exposition format this module writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in labels) + "}"


def _number(value: float) -> str:
    return repr(float(value))


class MetricFamily:
    """One metric family in the text format (written by hand: prometheus_client
    costs the server several MiB of imports for what is a few lines of text)."""

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = f"{name}_total" if kind == "counter" else name
        self.kind = kind
        self.lines = [f"# HELP {self.name} {help_text}", f"# TYPE {self.name} {kind}"]

    def add(self, labels: Labels, value: float) -> None:
        self.lines.append(f"{self.name}{_labels(labels)} {_number(value)}")

    def add_histogram(self, labels: Labels, bounds: tuple[float, ...], counts: list[int], total: float) -> None:
        running = 0
        for bound, count in zip(bounds, counts, strict=False):
            running += count
            self.lines.append(f"{self.name}_bucket{_labels((*labels, ('le', _number(bound))))} {_number(running)}")
        running += counts[-1]
        self.lines.append(f"{self.name}_bucket{_labels((*labels, ('le', '+Inf')))} {_number(running)}")
        self.lines.append(f"{self.name}_count{_labels(labels)} {_number(running)}")
        self.lines.append(f"{self.name}_sum{_labels(labels)} {_number(total)}")


def render_metrics(controller: Controller, extra: tuple[MetricFamily, ...] = ()) -> bytes:
    """The server's metrics, read from the routers' counters now (and ``extra``
    families from the layers above, e.g. the async queue's)."""
    requests = MetricFamily("swell_requests", "counter", "Predict requests answered, by deployment and HTTP status")
    retries = MetricFamily(
        "swell_request_retries", "counter", "Requests retried on another replica after one dropped them"
    )
    latency = MetricFamily(
        "swell_request_duration_seconds", "histogram", "Predict latency through the router, queueing included"
    )
    queue = MetricFamily("swell_queue_length", "gauge", "Requests waiting in the deployment's queue")
    in_flight = MetricFamily("swell_requests_in_flight", "gauge", "Requests on replicas now")
    replicas = MetricFamily("swell_replicas", "gauge", "Replicas by state")
    target = MetricFamily("swell_replicas_target", "gauge", "Replicas the scaling rule wants")
    cold = MetricFamily("swell_cold_start_seconds", "histogram", "Replica start to ready (model load included)")
    phases = MetricFamily(
        "swell_cold_start_phase_seconds",
        "histogram",
        "Replica cold starts by phase: pending (waiting for resources), process (until its server "
        "accepts), weights (fetching), load (the model's load()), total (start to ready)",
    )
    for scaled in controller:
        router = scaled.router
        labels: Labels = (("model", router.name), ("deployment", router.deployment_id))
        for status, count in sorted(router.responses.items()):
            requests.add((*labels, ("status", str(status))), count)
        retries.add(labels, router.retries)
        latency.add_histogram(labels, LATENCY_BUCKETS, router.latency_counts, router.latency_sum)
        queue.add(labels, router.queued)
        in_flight.add(labels, router.in_flight)
        counts = dict.fromkeys((s.value for s in ReplicaState), 0)
        for handle in router.handles.values():
            key = ReplicaState.DRAINING.value if handle.draining else handle.state.value
            counts[key] += 1
        for state, count in counts.items():
            replicas.add((*labels, ("state", state)), count)
        if scaled.decision is not None:
            target.add(labels, scaled.decision.target)
        cold.add_histogram(labels, COLD_START_BUCKETS, scaled.cold_start_counts, scaled.cold_start_sum)
        for phase in COLD_START_PHASES:
            phases.add_histogram(
                (*labels, ("phase", phase)),
                PHASE_BUCKETS,
                scaled.cold_phases.counts[phase],
                scaled.cold_phases.sums[phase],
            )
    families = (requests, retries, latency, queue, in_flight, replicas, target, cold, phases, *extra)
    return ("\n".join(line for family in families for line in family.lines) + "\n").encode()
