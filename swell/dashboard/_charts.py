"""The deployment page's time series and their inline SVG.

Arrivals and concurrency come from the server's own traffic history (one bucket
a second, what ``swell advise`` replays).  Replicas, queue and latency are not
in that history, so the dashboard samples them while someone looks at the page
(one sample a refresh, the last :data:`SAMPLES_KEPT`): latency p50/p99 are read
from the difference of the router's latency histogram between two samples.

Pure: samples and times come in as arguments.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Sample", "Sampler", "async_requests", "histogram_quantile", "latency_buckets", "svg_chart"]

SAMPLES_KEPT = 300
_BUCKET = re.compile(r'^swell_request_duration_seconds_bucket\{(?P<labels>[^}]*)\} (?P<value>\S+)$')
_ASYNC = re.compile(r'^swell_async_requests\{(?P<labels>[^}]*)\} (?P<value>\S+)$')


@dataclass(frozen=True)
class Sample:
    at: float
    replicas_ready: int
    replicas_total: int
    in_flight: int
    queued: int
    buckets: tuple[tuple[float, float], ...]  # (le, cumulative count)
    p50: float | None = None
    p99: float | None = None


def latency_buckets(metrics: str, deployment_id: str) -> tuple[tuple[float, float], ...]:
    """The cumulative latency histogram of one deployment, from Prometheus text."""
    wanted = f'deployment="{deployment_id}"'
    out: list[tuple[float, float]] = []
    for line in metrics.splitlines():
        match = _BUCKET.match(line)
        if match is None or wanted not in match["labels"]:
            continue
        le = re.search(r'le="([^"]+)"', match["labels"])
        if le is None:
            continue
        out.append((math.inf if le[1] == "+Inf" else float(le[1]), float(match["value"])))
    return tuple(sorted(out))


def async_requests(metrics: str, deployment_id: str) -> dict[str, int]:
    """The deployment's unfinished async requests by status (QUEUED, IN_PROGRESS), from Prometheus text."""
    wanted = f'deployment="{deployment_id}"'
    out: dict[str, int] = {}
    for line in metrics.splitlines():
        match = _ASYNC.match(line)
        if match is None or wanted not in match["labels"]:
            continue
        status = re.search(r'status="([^"]+)"', match["labels"])
        if status is not None:
            out[status[1]] = int(float(match["value"]))
    return out


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus's estimate: linear within the bucket holding the q-th request; None without requests."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower
            inside = count - below
            return lower + (le - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = le, count
    return lower


def _delta(new: Sequence[tuple[float, float]], old: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    before = dict(old)
    return [(le, max(0.0, count - before.get(le, 0.0))) for le, count in new]


class Sampler:
    """The last samples of each deployment someone is looking at."""

    def __init__(self, kept: int = SAMPLES_KEPT) -> None:
        self.kept = kept
        self._series: dict[str, deque[Sample]] = {}

    def add(self, deployment_id: str, sample: Sample) -> Sample:
        series = self._series.setdefault(deployment_id, deque(maxlen=self.kept))
        if series and sample.at <= series[-1].at:
            return series[-1]
        if series:
            recent = _delta(sample.buckets, series[-1].buckets)
            sample = Sample(**{**sample.__dict__, "p50": histogram_quantile(0.5, recent), "p99": histogram_quantile(0.99, recent)})
        series.append(sample)
        return sample

    def series(self, deployment_id: str) -> list[Sample]:
        return list(self._series.get(deployment_id, ()))

    def forget(self, keep: set[str]) -> None:
        for deployment_id in list(self._series):
            if deployment_id not in keep:
                del self._series[deployment_id]


def svg_chart(
    title: str,
    lines: Sequence[tuple[str, Sequence[float | None]]],
    *,
    unit: str = "",
    width: int = 360,
    height: int = 90,
) -> str:
    """A small line chart: one polyline a series (None is a gap), the maximum on the axis."""
    values = [v for _, series in lines for v in series if v is not None]
    top = max(values, default=0.0)
    top = top if top > 0 else 1.0
    n = max((len(series) for _, series in lines), default=0)
    colours = ("#2563eb", "#dc2626", "#16a34a", "#9333ea")
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height + 18}" '
        f'width="{width}" height="{height + 18}">',
        f'<text x="0" y="11" class="t">{escape(title)}</text>',
        f'<text x="{width}" y="11" text-anchor="end" class="t">max {_fmt(top)}{escape(unit)}</text>',
        f'<rect x="0" y="16" width="{width}" height="{height}" class="frame"/>',
    ]
    for index, (name, series) in enumerate(lines):
        colour = colours[index % len(colours)]
        runs: list[list[str]] = [[]]
        for i, value in enumerate(series):
            if value is None:
                runs.append([])
                continue
            x = width * (i / (n - 1) if n > 1 else 1.0)
            y = 16 + height - height * (value / top)
            runs[-1].append(f"{x:.1f},{y:.1f}")
        for run in runs:
            if len(run) == 1:  # a lone value between gaps: a dot
                cx, cy = run[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{colour}"/>')
            elif run:
                parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(run)}"/>')
        parts.append(f'<text x="{4 + 90 * index}" y="{height + 12}" fill="{colour}" class="t">{escape(name)}</text>')
    if not values:
        parts.append(f'<text x="{width / 2}" y="{16 + height / 2}" text-anchor="middle" class="t">no data yet</text>')
    parts.append("</svg>")
    return "".join(parts)


def _fmt(value: float) -> str:
    return f"{value:.3g}"
