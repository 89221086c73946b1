"""What a replay is shown as: a table, a timeline CSV, a PNG or a self-contained HTML plot."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from swell.sim._engine import SimResult, Timeline
from swell.sim._errors import SimulationError

__all__ = ["REPORT_COLUMNS", "TABLE_ROWS", "metrics_table", "pareto_front", "render_report", "write_plot", "write_report", "write_timeline"]

#: (key, label, unit) in the order the table shows them.
TABLE_ROWS: list[tuple[str, str, str]] = [
    ("requests", "requests", ""),
    ("dropped", "dropped", ""),
    ("replica_seconds", "replica-seconds", "s"),
    ("replica_hours", "replica-hours", "h"),
    ("mean_replicas", "mean replicas", ""),
    ("max_replicas", "max replicas", ""),
    ("cold_starts", "cold starts", ""),
    ("requests_delayed_by_cold_start", "delayed by cold start", ""),
    ("queue_wait_p50", "queue wait p50", "s"),
    ("queue_wait_p95", "queue wait p95", "s"),
    ("queue_wait_p99", "queue wait p99", "s"),
    ("queue_wait_max", "queue wait max", "s"),
    ("latency_p50", "latency p50", "s"),
    ("latency_p99", "latency p99", "s"),
]


def _cell(value: Any, unit: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if unit == "s" and abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def metrics_table(results: Mapping[str, Mapping[str, Any]], title: str | None = None) -> Any:
    """A rich Table: one row per metric, one column per policy."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for name in results:
        table.add_column(name, justify="right")
    for key, label, unit in TABLE_ROWS:
        suffix = f" ({unit})" if unit else ""
        table.add_row(label + suffix, *(_cell(m.get(key), unit) for m in results.values()))
    return table


def _fmt_t(t: float) -> str:
    text = f"{t:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def write_timeline(path: Path, timeline: Timeline) -> None:
    """CSV ``t,replicas,ready,concurrency``: a row at each tick where one of them changed."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("t,replicas,ready,concurrency\n")
        last: tuple[int, int, int] | None = None
        for t, r, ready, c in zip(
            timeline.t.tolist(),
            timeline.replicas.tolist(),
            timeline.ready.tolist(),
            timeline.concurrency.tolist(),
            strict=True,
        ):
            if (r, ready, c) == last:
                continue  # only the queue changed (the timeline has that column too)
            last = (r, ready, c)
            out.write(f"{_fmt_t(t)},{r},{ready},{c}\n")


# --------------------------------------------------------------------------- plots


def _steps(t: np.ndarray, y: np.ndarray, end: float, points: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """A step series reduced to about ``points`` samples, keeping each bin's peak."""
    if t.shape[0] == 0:
        return np.array([0.0, end]), np.array([0.0, 0.0])
    t = np.append(t, max(end, float(t[-1])))
    y = np.append(y, y[-1])
    if t.shape[0] <= points:
        return t, y.astype(np.float64)
    edges = np.linspace(float(t[0]), float(t[-1]), points + 1)
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, points - 1)
    yf = y.astype(np.float64)
    peak = np.full(points, -np.inf)
    np.maximum.at(peak, idx, yf)
    # Each bin's level is also what was carried in from the left.
    before = np.searchsorted(idx, np.arange(points), side="left") - 1
    carried = np.where(before >= 0, yf[np.clip(before, 0, None)], 0.0)
    return edges[:-1], np.maximum(peak, carried)


def write_plot(path: Path, results: Sequence[SimResult], title: str) -> None:
    """Replicas (and ready replicas) and concurrency over time: PNG, or HTML for ``.html``."""
    timed = [r for r in results if r.timeline is not None]
    if not timed:
        raise SimulationError("nothing to plot: no timeline was recorded")
    if path.suffix.lower() in (".html", ".htm"):
        path.write_text(_html(timed, title), encoding="utf-8")
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SimulationError(
            "--plot needs matplotlib for a PNG: pip install 'swell[plot]' (or name an .html file)"
        ) from None
    end = max(float(r.timeline.t[-1]) for r in timed if r.timeline is not None and r.timeline.t.size)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, height_ratios=[2, 1])
    first = timed[0].timeline
    assert first is not None
    for result in timed:
        tl = result.timeline
        assert tl is not None
        t = np.append(tl.t, end)
        top.step(t, np.append(tl.replicas, tl.replicas[-1]), where="post", label=f"{result.policy} replicas")
        if len(timed) == 1:
            top.step(t, np.append(tl.ready, tl.ready[-1]), where="post", label="ready", linestyle="--")
    top.set_ylabel("replicas")
    top.legend(loc="upper right", fontsize="small")
    top.set_title(title, fontsize="medium")
    t = np.append(first.t, end)
    bottom.step(t, np.append(first.concurrency, first.concurrency[-1]), where="post", color="grey")
    bottom.set_ylabel(f"concurrency\n({timed[0].policy})")
    bottom.set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _polyline(t: np.ndarray, y: np.ndarray, x0: float, x1: float, ymax: float, box: tuple[int, int, int, int]) -> str:
    left, top, width, height = box
    xs = left + (t - x0) / max(x1 - x0, 1e-9) * width
    ys = top + height - y / max(ymax, 1e-9) * height
    pts: list[str] = []
    prev_y: float | None = None
    for x, yv in zip(xs.tolist(), ys.tolist(), strict=True):
        if prev_y is not None:
            pts.append(f"{x:.1f},{prev_y:.1f}")
        pts.append(f"{x:.1f},{yv:.1f}")
        prev_y = yv
    return " ".join(pts)


def _axis(box: tuple[int, int, int, int], ymax: float, label: str) -> str:
    left, top, width, height = box
    parts = [f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#ccc"/>']
    step = _nice_step(ymax)
    v = 0.0
    while v <= ymax + 1e-9:
        y = top + height - v / max(ymax, 1e-9) * height
        parts.append(f'<line x1="{left}" x2="{left + width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
        v += step
    parts.append(
        f'<text x="{left - 40}" y="{top + height / 2}" transform="rotate(-90 {left - 40} {top + height / 2})" '
        f'text-anchor="middle">{html.escape(label)}</text>'
    )
    return "".join(parts)


def _nice_step(ymax: float) -> float:
    if ymax <= 0:
        return 1.0
    raw = ymax / 5
    base = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * base:
            return float(max(m * base, 1.0))
    return float(10 * base)


def _html(results: Sequence[SimResult], title: str) -> str:
    width, height = 1000, 520
    top_box = (70, 40, 880, 260)
    bottom_box = (70, 340, 880, 130)
    timelines = [r.timeline for r in results]
    end = max(float(tl.t[-1]) for tl in timelines if tl is not None and tl.t.size)
    start = min(float(tl.t[0]) for tl in timelines if tl is not None and tl.t.size)
    series = []
    rmax = 1.0
    for result in results:
        tl = result.timeline
        assert tl is not None
        t, y = _steps(tl.t, tl.replicas, end)
        series.append((result.policy, t, y))
        rmax = max(rmax, float(y.max()))
    first = timelines[0]
    assert first is not None
    ct, cy = _steps(first.t, first.concurrency, end)
    cmax = max(1.0, float(cy.max()))
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="70" y="22" font-size="14">{html.escape(title)}</text>',
        _axis(top_box, rmax * 1.05, "replicas"),
        _axis(bottom_box, cmax * 1.05, "concurrency"),
    ]
    for i, (name, t, y) in enumerate(series):
        colour = _COLOURS[i % len(_COLOURS)]
        svg.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.3" '
            f'points="{_polyline(t, y, start, end, rmax * 1.05, top_box)}"><title>{html.escape(name)}</title></polyline>'
        )
        svg.append(f'<text x="{top_box[0] + 8 + 130 * i}" y="{top_box[1] + 14}" fill="{colour}">■ {html.escape(name)}</text>')
    svg.append(
        f'<polyline fill="none" stroke="#777" stroke-width="1" '
        f'points="{_polyline(ct, cy, start, end, cmax * 1.05, bottom_box)}"/>'
    )
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = bottom_box[0] + frac * bottom_box[2]
        svg.append(f'<text x="{x:.0f}" y="{bottom_box[1] + bottom_box[3] + 16}" text-anchor="middle">'
                   f"{start + frac * (end - start):,.0f} s</text>")
    svg.append("</svg>")
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title></head>\n<body>\n"
        + "\n".join(svg)
        + f"\n<p style=\"font-family:sans-serif;font-size:12px\">Concurrency (in flight + queued) is "
        f"{html.escape(results[0].policy)}'s.</p>\n</body></html>\n"
    )


# --------------------------------------------------------------------------- the shareable report

#: (key, label) of the report's table, one row per policy.
REPORT_COLUMNS: list[tuple[str, str]] = [
    ("replica_seconds", "replica-seconds"),
    ("replica_hours", "replica-hours"),
    ("mean_replicas", "mean replicas"),
    ("max_replicas", "max replicas"),
    ("cold_starts", "cold starts"),
    ("requests_delayed_by_cold_start", "delayed by cold start"),
    ("queue_wait_p50", "queue wait p50 (s)"),
    ("queue_wait_p99", "queue wait p99 (s)"),
    ("queue_wait_max", "queue wait max (s)"),
    ("latency_p99", "latency p99 (s)"),
    ("dropped", "dropped"),
]

_COST = "replica_seconds"
_DELAYED = "requests_delayed_by_cold_start"


def pareto_front(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """Names of the points no other point beats on both axes (lower is better on each)."""
    front = []
    for name, (x, y) in points.items():
        dominated = any(
            (x2 <= x and y2 <= y) and (x2 < x or y2 < y) for other, (x2, y2) in points.items() if other != name
        )
        if not dominated:
            front.append(name)
    return front


_ORACLE = "oracle"


def _front(points: Mapping[str, tuple[float, float]]) -> set[str]:
    """The Pareto front of the policies one can run: the clairvoyant oracle is a bound, left out."""
    return set(pareto_front({n: p for n, p in points.items() if n != _ORACLE}))


def _fmt_clock(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 600:
        return f"{seconds:.0f} s"
    h, rem = divmod(round(seconds), 3600)
    return f"{h}:{rem // 60:02d} h"


def _x_axis(box: tuple[int, int, int, int], x0: float, x1: float) -> str:
    left, top, width, height = box
    parts = []
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + frac * width
        parts.append(
            f'<text x="{x:.0f}" y="{top + height + 14}" text-anchor="middle">{_fmt_clock(x0 + frac * (x1 - x0))}</text>'
        )
    return "".join(parts)


def _timeline_svg(result: SimResult, colour: str, start: float, end: float, rmax: float) -> str:
    """One policy: replicas (existing, and ready dashed) over time, and the queue under them.

    Replicas share one scale across policies; each queue has its own (one policy's
    long queue would flatten every other's to nothing).
    """
    tl = result.timeline
    assert tl is not None
    qmax = max(1.0, float(tl.queued.max())) * 1.05
    width, height = 1000, 300
    top_box = (70, 28, 880, 150)
    bottom_box = (70, 208, 880, 66)
    t, replicas = _steps(tl.t, tl.replicas, end)
    tr, ready = _steps(tl.t, tl.ready, end)
    tq, queued = _steps(tl.t, tl.queued, end)
    name = html.escape(result.policy)
    return "".join(
        [
            (
                f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
                f'height="{height}" role="img" aria-label="{name}: replicas and queue over time" '
                'font-family="sans-serif" font-size="11">'
            ),
            f'<text x="70" y="16" font-size="13" fill="{colour}">{name}</text>',
            '<text x="950" y="16" text-anchor="end" fill="#555">— replicas (existing)  ┅ ready</text>',
            _axis(top_box, rmax, "replicas"),
            _axis(bottom_box, qmax, "queued"),
            (
                f'<polyline fill="none" stroke="{colour}" stroke-width="1.4" '
                f'points="{_polyline(t, replicas, start, end, rmax, top_box)}"/>'
            ),
            (
                f'<polyline fill="none" stroke="{colour}" stroke-width="1" stroke-dasharray="3 2" opacity="0.7" '
                f'points="{_polyline(tr, ready, start, end, rmax, top_box)}"/>'
            ),
            (
                '<polyline fill="none" stroke="#777" stroke-width="1" '
                f'points="{_polyline(tq, queued, start, end, qmax, bottom_box)}"/>'
            ),
            _x_axis(bottom_box, start, end),
            "</svg>",
        ]
    )


def _pareto_svg(metrics: Mapping[str, Mapping[str, Any]], colours: Mapping[str, str]) -> str:
    """Replica-seconds (cost, x) against requests delayed by a cold start (y); the Pareto front joined."""
    points = {n: (float(m.get(_COST) or 0.0), float(m.get(_DELAYED) or 0.0)) for n, m in metrics.items()}
    front = _front(points)
    width, height = 1000, 440
    box = (90, 30, 640, 360)
    left, top, w, h = box
    xmax = max(1.0, max(x for x, _ in points.values())) * 1.08
    ymax = max(1.0, max(y for _, y in points.values())) * 1.12

    def at(x: float, y: float) -> tuple[float, float]:
        return left + x / xmax * w, top + h - y / ymax * h

    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="cost against requests delayed by a cold start" '
            'font-family="sans-serif" font-size="11">'
        ),
        _axis(box, ymax, "requests delayed by a cold start"),
    ]
    step = _nice_step(xmax)
    v = 0.0
    while v <= xmax + 1e-9:
        x, _ = at(v, 0)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + h}" stroke="#f2f2f2"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + h + 14}" text-anchor="middle">{v:,.0f}</text>')
        v += step
    parts.append(f'<text x="{left + w / 2}" y="{top + h + 34}" text-anchor="middle">replica-seconds (cost)</text>')
    ordered = sorted((points[n], n) for n in front)
    if len(ordered) > 1:
        coords = " ".join("{:.1f},{:.1f}".format(*at(x, y)) for (x, y), _ in ordered)
        parts.append(f'<polyline fill="none" stroke="#999" stroke-dasharray="4 3" points="{coords}"/>')
    for i, (name, (x, y)) in enumerate(points.items()):
        px, py = at(x, y)
        colour = colours[name]
        fill = colour if name in front else "white"
        label = html.escape(name)
        tip = f"<title>{label}: {x:,.0f} replica-seconds, {y:,.0f} delayed</title>"
        if name == _ORACLE:  # a bound, not a policy: a diamond
            parts.append(f'<path d="M{px:.1f},{py - 7:.1f} l7,7 l-7,7 l-7,-7 z" fill="white" stroke="{colour}" '
                         f'stroke-width="2">{tip}</path>')
        else:
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="6" fill="{fill}" stroke="{colour}" '
                         f'stroke-width="2">{tip}</circle>')
        parts.append(f'<text x="{px + 9:.1f}" y="{py - 7 - 11 * (i % 2):.1f}" fill="{colour}">{label}</text>')
    legend_x = left + w + 30
    parts.append(f'<text x="{legend_x}" y="{top + 10}" font-weight="bold">lower left is better</text>')
    parts.append(f'<circle cx="{legend_x + 5}" cy="{top + 30}" r="5" fill="#555"/>'
                 f'<text x="{legend_x + 16}" y="{top + 34}">on the Pareto front</text>')
    parts.append(f'<circle cx="{legend_x + 5}" cy="{top + 50}" r="5" fill="white" stroke="#555" stroke-width="2"/>'
                 f'<text x="{legend_x + 16}" y="{top + 54}">beaten on both axes</text>')
    if _ORACLE in points:
        parts.append(f'<path d="M{legend_x + 5},{top + 63} l6,6 l-6,6 l-6,-6 z" fill="white" stroke="#555" '
                     f'stroke-width="2"/><text x="{legend_x + 16}" y="{top + 74}">oracle: knows the future,</text>'
                     f'<text x="{legend_x + 16}" y="{top + 88}">a bound, not on the front</text>')
    parts.append("</svg>")
    return "".join(parts)


def _report_cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return html.escape(str(value))


_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1060px; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.front { font-weight: bold; }
p.note, dl { font-size: 13px; color: #444; }
dt { font-weight: bold; float: left; width: 160px; } dd { margin-left: 170px; }
svg { display: block; margin: 8px 0; max-width: 100%; height: auto; }
"""


def render_report(results: Sequence[SimResult], header: Mapping[str, Any], title: str) -> str:
    """One self-contained HTML page: the policies' table, replicas and queue per policy, the Pareto chart.

    Inline SVG and CSS only: no script, nothing fetched, so it opens offline and can be mailed.
    """
    timed = [r for r in results if r.timeline is not None and r.timeline.t.size]
    if not timed:
        raise SimulationError("nothing to report: no timeline was recorded")
    colours = {r.policy: _COLOURS[i % len(_COLOURS)] for i, r in enumerate(results)}
    metrics = {r.policy: r.metrics for r in results}
    front = _front({n: (float(m.get(_COST) or 0.0), float(m.get(_DELAYED) or 0.0)) for n, m in metrics.items()})
    start = min(float(r.timeline.t[0]) for r in timed if r.timeline is not None)
    end = max(float(r.timeline.t[-1]) for r in timed if r.timeline is not None)
    rmax = max(1.0, max(float(r.timeline.replicas.max()) for r in timed if r.timeline is not None)) * 1.05

    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    trace = header.get("trace")
    model = header.get("model")
    settings = header.get("settings")
    out.append("<dl>")
    if isinstance(trace, Mapping):
        out.append(f"<dt>trace</dt><dd>{html.escape(str(trace.get('source', '')))}: "
                   f"{_report_cell(trace.get('requests'))} requests over {_fmt_clock(float(trace.get('span_s') or 0.0))}</dd>")
    if isinstance(model, Mapping):
        out.append("<dt>model</dt><dd>" + html.escape(
            f"service {model.get('service_time')} (mean {float(model.get('service_time_mean_s') or 0.0):.3g} s); "
            f"cold start {model.get('cold_start')}; predict_concurrency {model.get('predict_concurrency')}"
        ) + "</dd>")
    if isinstance(settings, Mapping):
        shown = ", ".join(f"{k} {v}" for k, v in settings.items() if k != "schedules" or v)
        out.append(f"<dt>settings</dt><dd>{html.escape(shown)}</dd>")
    out.append("</dl>")

    out.append('<h2>Policies</h2><table id="policies"><thead><tr><th>policy</th>')
    out.extend(f'<th data-metric="{key}">{html.escape(label)}</th>' for key, label in REPORT_COLUMNS)
    out.append("</tr></thead><tbody>")
    for name, m in metrics.items():
        cls = ' class="front"' if name in front else ""
        out.append(f'<tr data-policy="{html.escape(name)}"><td{cls}>{html.escape(name)}</td>')
        out.extend(f'<td data-metric="{key}" data-value="{m.get(key)}">{_report_cell(m.get(key))}</td>'
                   for key, _ in REPORT_COLUMNS)
        out.append("</tr>")
    out.append("</tbody></table>")
    out.append('<p class="note">Bold: on the cost/latency Pareto front (no other policy has both fewer '
               "replica-seconds and fewer requests delayed by a cold start; the oracle, which knows every "
               "arrival in advance, is the bound, not a contender). Replica-seconds count starting, "
               "ready and draining replicas: what you pay for.</p>")

    out.append("<h2>Cost against cold-start delays</h2>")
    out.append(_pareto_svg(metrics, colours))

    out.append("<h2>Replicas and queue over time</h2>")
    out.append('<p class="note">Per policy, on the same axes: replicas that exist (solid) and ready ones (dashed); '
               "below, requests waiting in the queue (each on its own scale).</p>")
    out.extend(_timeline_svg(r, colours[r.policy], start, end, rmax) for r in timed)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(path: Path, results: Sequence[SimResult], header: Mapping[str, Any], title: str) -> None:
    """Write :func:`render_report` to ``path`` (HTML)."""
    if path.suffix.lower() not in (".html", ".htm"):
        raise SimulationError(f"--report writes one HTML page: name a .html file (got {path.name!r})")
    path.write_text(render_report(results, header, title), encoding="utf-8")
