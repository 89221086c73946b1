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

__all__ = ["TABLE_ROWS", "metrics_table", "write_plot", "write_timeline"]

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
        for t, r, ready, c in zip(
            timeline.t.tolist(),
            timeline.replicas.tolist(),
            timeline.ready.tolist(),
            timeline.concurrency.tolist(),
            strict=True,
        ):
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
