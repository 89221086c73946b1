"""Where a replica's cold start went: pending, process, weights, load(), total.

Pure: a :class:`Replica`'s recorded times in, a :class:`ColdStart` out.  The
controller feeds the phases to histograms, the deployment view shows them per
replica, and one log line says them when the replica becomes ready.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from swell.serving._backend import Replica

__all__ = ["COLD_START_PHASES", "PHASE_BUCKETS", "ColdStart", "ColdStartHistograms", "cold_start_of"]

#: The phases, in the order they happen; ``total`` is start to ready.
COLD_START_PHASES = ("pending", "process", "weights", "load", "total")
PHASE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True)
class ColdStart:
    """Seconds per phase of one replica's start; ``None`` where not known.

    - ``pending``: asked for until its process existed (waiting for resources);
    - ``process``: process created until its server accepted (interpreter,
      imports, or a fork of a prewarmed process);
    - ``weights``: fetching the package's weights (0 when it has none);
    - ``load``: the model's own ``load()``;
    - ``total``: asked for until ready, all of the above and the gaps between.
    """

    pending: float | None
    process: float | None
    weights: float | None
    load: float | None
    total: float
    start: str = ""  # "prewarmed", "forked", "spawned" or "" (unknown)

    def as_dict(self) -> dict[str, float | str | None]:
        return {
            "pending_seconds": _round(self.pending),
            "process_seconds": _round(self.process),
            "weights_seconds": _round(self.weights),
            "load_seconds": _round(self.load),
            "total_seconds": _round(self.total),
            "start": self.start or None,
        }

    def phases(self) -> dict[str, float]:
        """The known phases, for the histograms."""
        values = {
            "pending": self.pending,
            "process": self.process,
            "weights": self.weights,
            "load": self.load,
            "total": self.total,
        }
        return {k: v for k, v in values.items() if v is not None}

    def describe(self) -> str:
        """``pending 0.00 s, process 0.02 s, weights 1.20 s, load() 3.40 s``."""
        parts = []
        for name, value in (("pending", self.pending), ("process", self.process),
                            ("weights", self.weights), ("load()", self.load)):
            if value is not None:
                parts.append(f"{name} {value:.2f} s")
        return ", ".join(parts)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _span(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, end - start)


def cold_start_of(replica: Replica, fallback_total: float | None = None) -> ColdStart | None:
    """The breakdown of a replica that is ready; ``None`` before.

    The backend's times are monotonic seconds of one clock (``created_at``,
    ``marks``, ``ready_at``); ``fallback_total`` is used when it recorded none
    (a backend that reports states only).
    """
    created = replica.created_at or None
    marks = replica.marks
    ready = replica.ready_at
    total = _span(created, ready)
    if total is None:
        if fallback_total is None:
            return None
        total = max(0.0, fallback_total)
    spawned = marks.get("spawned")
    return ColdStart(
        pending=_span(created, spawned),
        process=_span(spawned, marks.get("live")),
        weights=replica.weights_seconds if replica.weights_seconds is not None else (0.0 if ready else None),
        load=replica.load_seconds,
        total=total,
        start=replica.start_mode,
    )


@dataclass
class ColdStartHistograms:
    """Per-phase bucket counts for one deployment (``/metrics`` reads them)."""

    counts: dict[str, list[int]] = field(
        default_factory=lambda: {p: [0] * (len(PHASE_BUCKETS) + 1) for p in COLD_START_PHASES}
    )
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COLD_START_PHASES, 0.0))

    def observe(self, cold: ColdStart) -> None:
        for phase, seconds in cold.phases().items():
            self.counts[phase][bisect_left(PHASE_BUCKETS, seconds)] += 1
            self.sums[phase] += seconds
