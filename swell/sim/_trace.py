"""Request traces as numpy arrays: CSV files (Azure LLM or generic) and synthetic load.

A trace is arrival times in seconds (sorted) plus whatever per-request columns
the file had (a service duration, token counts).  Never one Python object per
request: a day at 50 req/s is 4.3 M rows.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from swell.sim._errors import SimulationError, TraceError, nonnegative_number

__all__ = [
    "AZURE_HEADER",
    "GENERATORS",
    "Trace",
    "is_synthetic_spec",
    "load_trace",
    "read_csv_trace",
    "synthetic_trace",
]

AZURE_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")

Floats = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Trace:
    """Arrival times (s, sorted, the first at 0 for files) and optional columns."""

    arrivals: Floats
    source: str
    kind: str  # "azure-llm", "csv" or "synthetic"
    durations: Floats | None = None
    input_tokens: Floats | None = None
    output_tokens: Floats | None = None

    def __len__(self) -> int:
        return int(self.arrivals.shape[0])

    @property
    def span(self) -> float:
        """Seconds from the first arrival to the last."""
        return float(self.arrivals[-1] - self.arrivals[0]) if len(self) else 0.0

    def describe(self) -> dict[str, object]:
        return {"source": self.source, "kind": self.kind, "requests": len(self), "span_s": round(self.span, 3)}


# --------------------------------------------------------------------------- files


def load_trace(source: str | Path, *, model: str | None = None, seed: int = 0) -> Trace:
    """A file path, or a synthetic spec such as ``poisson:rate=50,duration=1h``."""
    text = str(source)
    if is_synthetic_spec(text):
        if model is not None:
            raise SimulationError("--model filters a CSV trace's 'model' column; a synthetic trace has none")
        return synthetic_trace(text, seed=seed)
    return read_csv_trace(Path(text), model=model)


def read_csv_trace(path: Path, *, model: str | None = None) -> Trace:
    """Read an Azure LLM inference CSV (auto-detected) or a generic CSV.

    Generic: a header with ``timestamp`` (seconds, or ISO 8601), optional
    ``duration`` (seconds of service) and optional ``model`` (filtered by ``model``).
    Rows need not be sorted; arrival times are made relative to the first.
    """
    name = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TraceError(name, None, "no such file (and not a synthetic spec such as 'poisson:rate=5,duration=1h')") from None
    except OSError as exc:
        raise TraceError(name, None, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TraceError(name, line, "not UTF-8 text") from None
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise TraceError(name, 1, "the file is empty; expected a header line such as 'timestamp,duration'")
    header = [c.strip() for c in next(csv.reader([lines[first]]))]
    if tuple(header) == AZURE_HEADER:
        if model is not None:
            raise TraceError(name, first + 1, "--model needs a 'model' column; an Azure LLM trace has none")
        return _read_azure(name, lines, first)
    return _read_generic(name, lines, first, header, model)


def _data_rows(name: str, lines: list[str], first: int) -> list[tuple[int, str]]:
    rows = [(i + 1, line) for i, line in enumerate(lines[first + 1 :], start=first + 1) if line.strip()]
    if not rows:
        raise TraceError(name, first + 2, "no requests after the header")
    return rows


def _read_azure(name: str, lines: list[str], first: int) -> Trace:
    rows = _data_rows(name, lines, first)
    stamps: list[str] = []
    context: list[str] = []
    generated: list[str] = []
    for number, line in rows:
        fields = line.split(",")
        if len(fields) != 3:
            raise TraceError(name, number, f"expected 3 fields (TIMESTAMP,ContextTokens,GeneratedTokens), got {len(fields)}")
        stamps.append(fields[0].strip())
        context.append(fields[1].strip())
        generated.append(fields[2].strip())
    try:
        times = np.array(stamps, dtype="datetime64[ns]")
    except ValueError:
        times = None
    if times is None or np.isnat(times).any():
        for (number, _), stamp in zip(rows, stamps, strict=True):
            try:
                bad = np.isnat(np.datetime64(stamp, "ns"))
            except ValueError:
                bad = True
            if bad:
                raise TraceError(name, number, f"TIMESTAMP {stamp!r} is not a date and time such as '2023-11-16 18:17:03.9799600'")
    assert times is not None
    seconds = (times - times.min()).astype(np.int64) / 1e9
    tokens_in = _token_column(name, rows, context, "ContextTokens")
    tokens_out = _token_column(name, rows, generated, "GeneratedTokens")
    order = np.argsort(seconds, kind="stable")
    return Trace(
        arrivals=np.ascontiguousarray(seconds[order]),
        source=name,
        kind="azure-llm",
        input_tokens=tokens_in[order],
        output_tokens=tokens_out[order],
    )


def _token_column(name: str, rows: list[tuple[int, str]], values: list[str], column: str) -> Floats:
    try:
        out = np.array(values, dtype=np.int64)
    except ValueError:
        out = None
    if out is None or (out < 0).any():
        for (number, _), value in zip(rows, values, strict=True):
            if not value.isdigit():
                raise TraceError(name, number, f"{column} {value!r} is not a whole number ≥ 0")
    assert out is not None
    return out.astype(np.float64)


_FRACTION = re.compile(r"(\.\d{6})\d+")


def _iso_seconds(value: str) -> float:
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    text = _FRACTION.sub(r"\1", text, count=1)  # fromisoformat takes at most 6 digits
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _read_generic(name: str, lines: list[str], first: int, header: list[str], model: str | None) -> Trace:
    columns = [c.lower() for c in header]
    if "timestamp" not in columns:
        raise TraceError(
            name,
            first + 1,
            f"no 'timestamp' column in the header (found: {', '.join(header) or 'nothing'}); "
            "expected 'timestamp[,duration][,model]' or the Azure LLM header "
            + ",".join(AZURE_HEADER),
        )
    at = columns.index("timestamp")
    dur_at = columns.index("duration") if "duration" in columns else None
    model_at = columns.index("model") if "model" in columns else None
    if model is not None and model_at is None:
        raise TraceError(name, first + 1, f"--model {model!r} given but the header has no 'model' column")
    rows = _data_rows(name, lines, first)
    stamps: list[float] = []
    durations: list[float] = []
    numeric: bool | None = None
    width = len(columns)
    for number, fields in zip(
        (n for n, _ in rows), csv.reader(line for _, line in rows), strict=True
    ):
        if len(fields) != width:
            raise TraceError(name, number, f"expected {width} fields ({','.join(header)}), got {len(fields)}")
        if model_at is not None and model is not None and fields[model_at].strip() != model:
            continue
        raw = fields[at].strip()
        if numeric is None:
            numeric = _is_number(raw)
        if numeric:
            try:
                stamp = float(raw)
            except ValueError:
                raise TraceError(name, number, f"timestamp {raw!r} is not a number of seconds (earlier rows are)") from None
        else:
            try:
                stamp = _iso_seconds(raw)
            except ValueError:
                raise TraceError(name, number, f"timestamp {raw!r} is neither seconds nor an ISO 8601 date-time") from None
        if not math.isfinite(stamp):
            raise TraceError(name, number, f"timestamp {raw!r} is not a finite number")
        stamps.append(stamp)
        if dur_at is not None:
            text = fields[dur_at].strip()
            try:
                duration = float(text)
            except ValueError:
                raise TraceError(name, number, f"duration {text!r} is not a number of seconds") from None
            if not math.isfinite(duration) or duration < 0:
                raise TraceError(name, number, f"duration {text!r} must be a finite number of seconds ≥ 0")
            durations.append(duration)
    if not stamps:
        raise TraceError(name, None, f"no rows for model {model!r}")
    times = np.array(stamps, dtype=np.float64)
    order = np.argsort(times, kind="stable")
    times = times[order]
    return Trace(
        arrivals=times - times[0],
        source=name,
        kind="csv",
        durations=np.array(durations, dtype=np.float64)[order] if dur_at is not None else None,
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- synthetic

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(s|m|min|h|d)?\s*$")


def _seconds(key: str, value: str) -> float:
    match = _QUANTITY.match(value)
    if not match:
        raise SimulationError(f"{key}={value!r}: expected a number of seconds, or with a unit (30s, 10m, 24h, 1d)")
    return float(match[1]) * _UNITS[match[2] or ""]


def _number(key: str, value: str) -> float:
    return nonnegative_number(key, value)


def _homogeneous(rng: np.random.Generator, rate: float, start: float, end: float) -> Floats:
    """A Poisson process at ``rate`` on [start, end): cumulative exponential gaps."""
    if rate <= 0 or end <= start:
        return np.empty(0)
    expected = rate * (end - start)
    chunks: list[Floats] = []
    t = start
    while True:
        size = int(expected + 6 * math.sqrt(expected) + 16)
        times = t + np.cumsum(rng.exponential(1.0 / rate, size))
        if times[-1] >= end:
            chunks.append(times[: np.searchsorted(times, end)])
            break
        chunks.append(times)
        t = float(times[-1])
    return np.concatenate(chunks)


def _piecewise(rng: np.random.Generator, edges: list[float], rates: list[float]) -> Floats:
    return np.concatenate(
        [_homogeneous(rng, r, a, b) for a, b, r in zip(edges[:-1], edges[1:], rates, strict=True)]
        or [np.empty(0)]
    )


def _poisson(rng: np.random.Generator, p: dict[str, str]) -> Floats:
    return _homogeneous(rng, _number("rate", p["rate"]), 0.0, _seconds("duration", p.get("duration", "1h")))


def _steps(rng: np.random.Generator, p: dict[str, str]) -> Floats:
    rates = [_number("rates", r) for r in p["rates"].split("/")]
    step = _seconds("step", p.get("step", "10m"))
    edges = [i * step for i in range(len(rates) + 1)]
    return _piecewise(rng, edges, rates)


def _spike(rng: np.random.Generator, p: dict[str, str]) -> Floats:
    base = _number("base", p.get("base", "1"))
    peak = _number("peak", p["peak"])
    duration = _seconds("duration", p.get("duration", "1h"))
    at = _seconds("at", p.get("at", str(duration / 2)))
    width = _seconds("width", p.get("width", "60"))
    edges = sorted({0.0, min(at, duration), min(at + width, duration), duration})
    rates = [peak if a >= at and b <= at + width else base for a, b in zip(edges[:-1], edges[1:], strict=False)]
    return _piecewise(rng, edges, rates)


def _diurnal(rng: np.random.Generator, p: dict[str, str]) -> Floats:
    mean = _number("mean", p["mean"])
    amplitude = _number("amplitude", p.get("amplitude", "0.8"))
    if amplitude > 1:
        raise SimulationError(f"amplitude={amplitude:g}: must be between 0 and 1 (a fraction of the mean)")
    period = _seconds("period", p.get("period", "1d"))
    duration = _seconds("duration", p.get("duration", str(period)))
    peak = mean * (1 + amplitude)
    times = _homogeneous(rng, peak, 0.0, duration)
    # Thinning: keep each arrival with probability rate(t)/peak (trough at t = 0).
    rate = mean * (1 - amplitude * np.cos(2 * np.pi * times / period))
    return times[rng.random(times.shape[0]) * peak < rate]


def _bursts(rng: np.random.Generator, p: dict[str, str]) -> Floats:
    rate = _number("rate", p["rate"])
    width = _seconds("width", p.get("width", "20s"))
    low, _, high = p.get("lull", "2m/8m").partition("/")
    lull_lo = _seconds("lull", low)
    lull_hi = _seconds("lull", high or low)
    if lull_hi < lull_lo:
        raise SimulationError(f"lull={p['lull']!r}: the shortest lull comes first (e.g. 2m/8m)")
    duration = _seconds("duration", p.get("duration", "1h"))
    starts: list[float] = []
    t = 0.0
    while t < duration:
        starts.append(t)
        t += width + float(rng.uniform(lull_lo, lull_hi))
    return np.concatenate([_homogeneous(rng, rate, a, min(a + width, duration)) for a in starts] or [np.empty(0)])


_Generator = Callable[[np.random.Generator, dict[str, str]], Floats]

GENERATORS: dict[str, tuple[_Generator, set[str], set[str]]] = {
    # name: (function, required keys, optional keys)
    "poisson": (_poisson, {"rate"}, {"duration", "seed"}),
    "steps": (_steps, {"rates"}, {"step", "seed"}),
    "spike": (_spike, {"peak"}, {"base", "at", "width", "duration", "seed"}),
    "diurnal": (_diurnal, {"mean"}, {"amplitude", "period", "duration", "seed"}),
    "bursts": (_bursts, {"rate"}, {"width", "lull", "duration", "seed"}),
}

SYNTHETIC_GRAMMAR = """\
poisson:rate=R[,duration=D]                     Poisson arrivals at R req/s (duration 1h)
steps:rates=R1/R2/...[,step=D]                   Poisson, rate R1 for D, then R2, ... (step 10m)
spike:peak=P[,base=B,at=T,width=W,duration=D]    base rate B (1), P req/s during [T, T+W) (W 60s)
diurnal:mean=M[,amplitude=A,period=D,duration=D] rate M·(1 − A·cos 2πt/period) (A 0.8, period 1d)
bursts:rate=R[,width=W,lull=L1/L2,duration=D]    R req/s for W (20s), then silence for a uniform
                                                 L1 … L2 (2m/8m), again and again
durations take s, m, h, d (e.g. 24h); seed=N overrides --seed"""


def is_synthetic_spec(text: str) -> bool:
    name, sep, _ = text.partition(":")
    return bool(sep) and name in GENERATORS and not Path(text).exists()


def synthetic_trace(spec: str, *, seed: int = 0) -> Trace:
    """Generate arrivals from a spec such as ``poisson:rate=50,duration=24h``."""
    name, _, body = spec.partition(":")
    if name not in GENERATORS:
        raise SimulationError(f"unknown synthetic trace {name!r}; known: {', '.join(GENERATORS)}")
    function, required, optional = GENERATORS[name]
    params: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not value.strip():
            raise SimulationError(f"{spec!r}: {part!r} is not key=value")
        if key not in required | optional:
            allowed = ", ".join(sorted(required | optional))
            raise SimulationError(f"{spec!r}: unknown key {key!r} for {name}; allowed: {allowed}")
        params[key] = value.strip()
    missing = required - params.keys()
    if missing:
        raise SimulationError(f"{spec!r}: {name} needs {', '.join(sorted(missing))}")
    if "seed" in params:
        try:
            seed = int(params["seed"])
        except ValueError:
            raise SimulationError(f"seed={params['seed']!r}: expected a whole number") from None
    arrivals = function(np.random.default_rng(seed), params)
    if arrivals.shape[0] == 0:
        raise SimulationError(f"{spec!r} generated no requests")
    return Trace(arrivals=np.ascontiguousarray(arrivals, dtype=np.float64), source=spec, kind="synthetic")
