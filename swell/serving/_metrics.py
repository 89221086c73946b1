"""Prometheus metrics, read from the router's counters at scrape time.

The hot path only bumps plain integers; this collector turns them into
Prometheus families when ``/metrics`` is scraped, so no metric lock or label
lookup sits on a request.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from swell.serving._backend import ReplicaState
from swell.serving._controller import COLD_START_BUCKETS, Controller
from swell.serving._router import LATENCY_BUCKETS

__all__ = ["SwellCollector", "render_metrics"]


def _buckets(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    out = []
    total = 0
    for bound, count in zip(bounds, counts, strict=False):
        total += count
        out.append((repr(float(bound)), float(total)))
    total += counts[-1]
    out.append(("+Inf", float(total)))
    return out


class SwellCollector(Collector):
    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "swell_requests", "Predict requests answered, by deployment and HTTP status",
            labels=["model", "deployment", "status"],
        )
        retries = CounterMetricFamily(
            "swell_request_retries", "Requests retried on another replica after one dropped them",
            labels=["model", "deployment"],
        )
        latency = HistogramMetricFamily(
            "swell_request_duration_seconds", "Predict latency through the router, queueing included",
            labels=["model", "deployment"],
        )
        queue = GaugeMetricFamily(
            "swell_queue_length", "Requests waiting in the deployment's queue", labels=["model", "deployment"]
        )
        in_flight = GaugeMetricFamily(
            "swell_requests_in_flight", "Requests on replicas now", labels=["model", "deployment"]
        )
        replicas = GaugeMetricFamily(
            "swell_replicas", "Replicas by state", labels=["model", "deployment", "state"]
        )
        target = GaugeMetricFamily(
            "swell_replicas_target", "Replicas the scaling rule wants", labels=["model", "deployment"]
        )
        cold = HistogramMetricFamily(
            "swell_cold_start_seconds", "Replica start to ready (model load included)",
            labels=["model", "deployment"],
        )
        for scaled in self.controller:
            router = scaled.router
            labels = [router.name, router.deployment_id]
            for status, count in sorted(router.responses.items()):
                requests.add_metric([*labels, str(status)], count)
            retries.add_metric(labels, router.retries)
            latency.add_metric(labels, _buckets(LATENCY_BUCKETS, router.latency_counts), router.latency_sum)
            queue.add_metric(labels, router.queued)
            in_flight.add_metric(labels, router.in_flight)
            counts = dict.fromkeys((s.value for s in ReplicaState), 0)
            for handle in router.handles.values():
                key = ReplicaState.DRAINING.value if handle.draining else handle.state.value
                counts[key] += 1
            for state, count in counts.items():
                replicas.add_metric([*labels, state], count)
            if scaled.decision is not None:
                target.add_metric(labels, scaled.decision.target)
            cold.add_metric(labels, _buckets(COLD_START_BUCKETS, scaled.cold_start_counts), scaled.cold_start_sum)
        yield from (requests, retries, latency, queue, in_flight, replicas, target, cold)


def render_metrics(controller: Controller) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SwellCollector(controller))
    return generate_latest(registry)
