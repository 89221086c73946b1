"""How long a request is served, and how long a replica takes to start.

Service time: ``auto`` (the default), a number of seconds, ``column`` (the
trace's ``duration``), or ``tokens[:IN_S,OUT_S,OVERHEAD]`` for LLM traces.
Cold start: a number of seconds, ``lognormal:MEDIAN,SIGMA`` or ``uniform:A,B``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from swell.sim._errors import SimulationError, nonnegative_number
from swell.sim._trace import Trace

__all__ = ["DEFAULT_TOKEN_MODEL", "ColdStart", "ServiceTime"]

#: Seconds per input token, per output token, and per request, for LLM traces when
#: none are given: prefill at 10k tokens/s, decode at 50 tokens/s, 50 ms overhead.
DEFAULT_TOKEN_MODEL = (0.0001, 0.02, 0.05)
DEFAULT_SERVICE_SECONDS = 1.0


def _floats(spec: str, text: str, count: int) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != count:
        raise SimulationError(f"{spec!r}: expected {count} comma-separated numbers")
    return [nonnegative_number(repr(spec), part) for part in parts]


def _seconds(flag: str, spec: str, text: str, expected: str) -> float:
    """A fixed number of seconds (``9`` or ``9s``), finite and ≥ 0."""
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        raise SimulationError(f"{flag} {spec!r}: expected {expected}") from None
    if not math.isfinite(value) or value < 0:
        raise SimulationError(f"{flag} {spec!r}: must be a finite number of seconds ≥ 0")
    return value


@dataclass(frozen=True)
class ServiceTime:
    """Per-request service seconds from a spec; see the module docstring."""

    kind: str  # "auto", "fixed", "column", "tokens"
    seconds: float = DEFAULT_SERVICE_SECONDS
    tokens: tuple[float, float, float] = DEFAULT_TOKEN_MODEL

    @classmethod
    def parse(cls, spec: str | float | None) -> ServiceTime:
        if spec is None or spec == "auto":
            return cls("auto")
        if isinstance(spec, (int, float)):
            spec = str(spec)
        text = spec.strip()
        if text in ("column", "duration"):
            return cls("column")
        if text == "tokens":
            return cls("tokens")
        if text.startswith("tokens:"):
            a, b, c = _floats(spec, text.removeprefix("tokens:"), 3)
            return cls("tokens", tokens=(a, b, c))
        value = _seconds(
            "--service-time", spec, text, "seconds (e.g. 1.5), 'column', or 'tokens:IN_S,OUT_S,OVERHEAD'"
        )
        return cls("fixed", seconds=value)

    def resolve(self, trace: Trace) -> ServiceTime:
        """What ``auto`` means for this trace: tokens, then the duration column, then 1 s."""
        if self.kind != "auto":
            return self
        if trace.input_tokens is not None and trace.output_tokens is not None:
            return ServiceTime("tokens")
        if trace.durations is not None:
            return ServiceTime("column")
        return ServiceTime("fixed", seconds=DEFAULT_SERVICE_SECONDS)

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"{self.seconds:g} s"
        if self.kind == "column":
            return "the trace's duration column"
        if self.kind == "tokens":
            a, b, c = self.tokens
            return f"tokens: {a:g} s/input token + {b:g} s/output token + {c:g} s"
        return "auto"

    def durations(self, trace: Trace) -> NDArray[np.float64]:
        model = self.resolve(trace)
        n = len(trace)
        if model.kind == "fixed":
            return np.full(n, model.seconds)
        if model.kind == "column":
            if trace.durations is None:
                raise SimulationError(f"--service-time column: {trace.source} has no 'duration' column")
            return trace.durations.astype(np.float64, copy=True)
        if trace.input_tokens is None or trace.output_tokens is None:
            raise SimulationError(f"--service-time tokens: {trace.source} has no token counts")
        a, b, c = model.tokens
        return trace.input_tokens * a + trace.output_tokens * b + c


@dataclass(frozen=True)
class ColdStart:
    """Seconds from creating a replica to its being ready; seeded draws."""

    kind: str  # "fixed", "lognormal", "uniform"
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, spec: str | float) -> ColdStart:
        if isinstance(spec, (int, float)):
            spec = str(spec)
        text = spec.strip()
        name, sep, rest = text.partition(":")
        if sep and name == "lognormal":
            median, sigma = _floats(spec, rest, 2)
            if median <= 0:
                raise SimulationError(f"--cold-start {spec!r}: the median must be > 0")
            return cls("lognormal", median, sigma)
        if sep and name == "uniform":
            low, high = _floats(spec, rest, 2)
            if high < low:
                raise SimulationError(f"--cold-start {spec!r}: needs A ≤ B")
            return cls("uniform", low, high)
        value = _seconds("--cold-start", spec, text, "seconds (e.g. 9), 'lognormal:MEDIAN,SIGMA' or 'uniform:A,B'")
        return cls("fixed", value)

    def sampler(self, seed: int) -> _Sampler:
        return _Sampler(self, np.random.default_rng(seed))

    @property
    def nominal(self) -> float:
        """A cold start that is rarely exceeded: the value, B, or the 99th percentile."""
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return self.b
        return self.a * math.exp(2.3263 * self.b)

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"{self.a:g} s"
        if self.kind == "uniform":
            return f"uniform {self.a:g}–{self.b:g} s"
        return f"lognormal, median {self.a:g} s, sigma {self.b:g}"


class _Sampler:
    """Draws in blocks so a replay with thousands of cold starts stays cheap."""

    def __init__(self, model: ColdStart, rng: np.random.Generator) -> None:
        self._model = model
        self._rng = rng
        self._block: list[float] = []

    def __call__(self) -> float:
        model = self._model
        if model.kind == "fixed":
            return model.a
        if not self._block:
            if model.kind == "uniform":
                draws = self._rng.uniform(model.a, model.b, 256)
            else:
                draws = self._rng.lognormal(math.log(model.a), model.b, 256)
            self._block = draws.tolist()[::-1]
        return self._block.pop()
