"""The deployment page's series: latency quantiles from histogram deltas, and the SVG."""

from __future__ import annotations

import math

from swell.dashboard._charts import Sample, Sampler, async_requests, histogram_quantile, latency_buckets, svg_chart

METRICS = """\
swell_request_duration_seconds_bucket{model="m",deployment="d1",le="0.1"} 5
swell_request_duration_seconds_bucket{model="m",deployment="d1",le="1.0"} 9
swell_request_duration_seconds_bucket{model="m",deployment="d1",le="+Inf"} 10
swell_request_duration_seconds_bucket{model="m",deployment="d2",le="0.1"} 7
swell_request_duration_seconds_count{model="m",deployment="d1"} 10
"""


def test_latency_buckets_of_one_deployment() -> None:
    assert latency_buckets(METRICS, "d1") == ((0.1, 5.0), (1.0, 9.0), (math.inf, 10.0))
    assert latency_buckets(METRICS, "nope") == ()


def test_histogram_quantile_interpolates_within_the_bucket() -> None:
    buckets = [(0.1, 5.0), (1.0, 9.0), (math.inf, 10.0)]
    assert histogram_quantile(0.5, buckets) == 0.1
    assert histogram_quantile(0.7, buckets) == 0.1 + 0.9 * (2 / 4)
    assert histogram_quantile(0.99, buckets) == 1.0  # in +Inf: the last finite bound
    assert histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert histogram_quantile(0.5, []) is None


def test_the_sampler_reads_latency_between_two_samples_and_keeps_a_bounded_series() -> None:
    sampler = Sampler(kept=3)
    first = Sample(0.0, 0, 0, 0, 0, ((0.1, 5.0), (math.inf, 5.0)))
    assert sampler.add("d", first).p50 is None
    second = sampler.add("d", Sample(1.0, 1, 1, 0, 0, ((0.1, 5.0), (1.0, 9.0), (math.inf, 9.0))))
    assert second.p50 is not None and 0.1 <= second.p50 <= 1.0  # the 4 new requests took 0.1–1 s
    assert sampler.add("d", Sample(1.0, 9, 9, 0, 0, ())) is second  # not newer: ignored
    for t in range(2, 6):
        sampler.add("d", Sample(float(t), t, t, 0, 0, ()))
    assert [s.at for s in sampler.series("d")] == [3.0, 4.0, 5.0]
    sampler.forget(set())
    assert sampler.series("d") == []


def test_svg_chart_draws_series_gaps_and_an_empty_state() -> None:
    svg = svg_chart("queue <&>", [("queued", [0, 2, None, 1]), ("in flight", [1, 1, 1, 1])])
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "queue &lt;&amp;&gt;" in svg
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 1  # the lone 1 after the gap
    assert "no data yet" in svg_chart("empty", [("x", [])])


def test_async_requests_of_one_deployment_by_status() -> None:
    text = (
        'swell_async_requests{deployment="d1",status="QUEUED"} 3\n'
        'swell_async_requests{deployment="d1",status="IN_PROGRESS"} 1\n'
        'swell_async_requests{deployment="d2",status="QUEUED"} 9\n'
        'swell_async_requests_finished{status="SUCCEEDED"} 4\n'
    )
    assert async_requests(text, "d1") == {"QUEUED": 3, "IN_PROGRESS": 1}
    assert async_requests(text, "d3") == {}
