"""Service-time and cold-start specs."""

from __future__ import annotations

import numpy as np
import pytest

from swell.sim import DEFAULT_TOKEN_MODEL, ColdStart, ServiceTime, SimulationError, Trace


def _trace(**columns: np.ndarray) -> Trace:
    return Trace(arrivals=np.array([0.0, 1.0]), source="t", kind="csv", **columns)


def test_service_time_specs() -> None:
    tokens = _trace(input_tokens=np.array([1000.0, 0.0]), output_tokens=np.array([10.0, 100.0]))
    np.testing.assert_allclose(ServiceTime.parse("tokens:0.001,0.01,0.5").durations(tokens), [1.6, 1.5])
    a, b, c = DEFAULT_TOKEN_MODEL
    np.testing.assert_allclose(ServiceTime.parse(None).durations(tokens), [1000 * a + 10 * b + c, 100 * b + c])
    timed = _trace(durations=np.array([3.0, 4.0]))
    assert ServiceTime.parse("auto").durations(timed).tolist() == [3.0, 4.0]
    assert ServiceTime.parse("column").durations(timed).tolist() == [3.0, 4.0]
    assert ServiceTime.parse("2.5").durations(timed).tolist() == [2.5, 2.5]
    assert ServiceTime.parse("auto").durations(_trace()).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("spec", ["-1", "fast", "tokens:1,2", "tokens:1,2,x", "inf"])
def test_bad_service_time(spec: str) -> None:
    with pytest.raises(SimulationError):
        ServiceTime.parse(spec)


def test_column_and_tokens_need_their_columns() -> None:
    with pytest.raises(SimulationError, match="no 'duration' column"):
        ServiceTime.parse("column").durations(_trace())
    with pytest.raises(SimulationError, match="no token counts"):
        ServiceTime.parse("tokens").durations(_trace())


def test_cold_start_specs_are_seeded() -> None:
    assert ColdStart.parse("9").sampler(0)() == 9.0
    draws = [ColdStart.parse("lognormal:9,0.3").sampler(7)() for _ in range(3)]
    assert len(set(draws)) == 1  # a fresh sampler with the same seed repeats
    sampler = ColdStart.parse("lognormal:9,0.3").sampler(7)
    many = np.array([sampler() for _ in range(4000)])
    assert abs(np.median(many) - 9) < 0.3
    uniform = ColdStart.parse("uniform:5,7").sampler(1)
    values = [uniform() for _ in range(300)]
    assert 5 <= min(values) and max(values) <= 7
    assert ColdStart.parse("uniform:5,7").nominal == 7
    assert ColdStart.parse("lognormal:9,0").nominal == pytest.approx(9)


@pytest.mark.parametrize("spec", ["-3", "soon", "lognormal:0,1", "uniform:7,5", "lognormal:9"])
def test_bad_cold_start(spec: str) -> None:
    with pytest.raises(SimulationError):
        ColdStart.parse(spec)
