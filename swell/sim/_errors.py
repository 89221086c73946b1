"""The simulator's one error type: what the CLI prints as a message, never a traceback."""

from __future__ import annotations

import math


class SimulationError(ValueError):
    """Bad input to the simulator: a trace, a synthetic spec, a model spec."""


class TraceError(SimulationError):
    """A trace file could not be read; names the file and the line."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source = source
        self.line = line
        self.message = message
        where = f"{source}: line {line}" if line is not None else source
        super().__init__(f"{where}: {message}")


def nonnegative_number(label: str, text: str) -> float:
    """``text`` as a finite float ≥ 0, or a :class:`SimulationError` naming ``label``."""
    try:
        value = float(text)
    except ValueError:
        raise SimulationError(f"{label}: {text!r} is not a number; expected a number ≥ 0") from None
    if not math.isfinite(value) or value < 0:
        raise SimulationError(f"{label}: {text!r} must be a finite number ≥ 0")
    return value
