"""Trace loaders and synthetic generators: good input, and bad input named by line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from swell.sim import SimulationError, TraceError, load_trace, read_csv_trace, synthetic_trace

AZURE = (
    "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    "2023-11-16 18:17:03.9799600,4808,10\n"
    "2023-11-16 18:17:04.0319600,3180,8\n"
    "2023-11-16 18:17:05.5000000,100,200"  # no trailing newline, as in the real files
)


def _write(tmp_path: Path, text: str, name: str = "trace.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_azure_trace_is_detected_and_read(tmp_path: Path) -> None:
    trace = read_csv_trace(_write(tmp_path, AZURE))
    assert trace.kind == "azure-llm"
    np.testing.assert_allclose(trace.arrivals, [0.0, 0.052, 1.52004], atol=1e-9)
    assert trace.input_tokens is not None and trace.output_tokens is not None
    assert trace.input_tokens.tolist() == [4808, 3180, 100]
    assert trace.output_tokens.tolist() == [10, 8, 200]
    assert trace.durations is None


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ("2023-11-16 25:99:00.0000000,1,1", "TIMESTAMP"),
        ("yesterday,1,1", "TIMESTAMP"),
        ("2023-11-16 18:17:05.0000000,-3,1", "ContextTokens"),
        ("2023-11-16 18:17:05.0000000,1,x", "GeneratedTokens"),
        ("2023-11-16 18:17:05.0000000,1", "expected 3 fields"),
    ],
)
def test_azure_bad_rows_name_their_line(tmp_path: Path, row: str, words: str) -> None:
    text = AZURE + "\n" + row + "\n2023-11-16 18:17:06.0000000,1,1"
    with pytest.raises(TraceError) as caught:
        read_csv_trace(_write(tmp_path, text))
    assert caught.value.line == 5
    assert "line 5" in str(caught.value) and words in str(caught.value)


def test_generic_seconds_duration_and_sorting(tmp_path: Path) -> None:
    path = _write(tmp_path, "timestamp,duration\n105.5,2\n100,1.5\n101,0\n")
    trace = read_csv_trace(path)
    assert trace.kind == "csv"
    assert trace.arrivals.tolist() == [0.0, 1.0, 5.5]
    assert trace.durations is not None and trace.durations.tolist() == [1.5, 0.0, 2.0]


def test_generic_iso_timestamps(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "timestamp\n2024-01-01T00:00:00Z\n2024-01-01T00:00:01.1234567+00:00\n2024-01-01 00:01:00\n",
    )
    trace = read_csv_trace(path)
    np.testing.assert_allclose(trace.arrivals, [0.0, 1.123456, 60.0], atol=1e-6)


def test_generic_model_filter(tmp_path: Path) -> None:
    path = _write(tmp_path, "model,timestamp,duration\na,0,1\nb,1,2\na,3,4\n")
    trace = load_trace(path, model="a")
    assert trace.arrivals.tolist() == [0.0, 3.0]
    assert trace.durations is not None and trace.durations.tolist() == [1.0, 4.0]
    with pytest.raises(TraceError, match="no rows for model 'zzz'"):
        load_trace(path, model="zzz")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("", 1, "empty"),
        ("\n\n", 1, "empty"),
        ("timestamp,duration\n", 2, "no requests"),
        ("when,duration\n1,2\n", 1, "no 'timestamp' column"),
        ("timestamp,duration\n0,1\n1,-2\n", 3, "duration '-2'"),
        ("timestamp,duration\n0,1\n1,abc\n", 3, "duration 'abc'"),
        ("timestamp\n0\n1\nnoon\n", 4, "timestamp 'noon'"),
        ("timestamp\n2024-01-01T00:00:00\n2024-13-01T00:00:00\n", 3, "ISO 8601"),
        ("timestamp,duration\n0,1\n1\n", 3, "expected 2 fields"),
        ("timestamp\nnan\n", 2, "finite"),
    ],
)
def test_generic_bad_input_names_the_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    with pytest.raises(TraceError) as caught:
        read_csv_trace(_write(tmp_path, text))
    assert caught.value.line == line, str(caught.value)
    assert f"line {line}" in str(caught.value) and words in str(caught.value)


def test_missing_file_and_model_without_column(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such file"):
        load_trace(tmp_path / "absent.csv")
    with pytest.raises(TraceError, match="no 'model' column"):
        load_trace(_write(tmp_path, "timestamp\n0\n"), model="m")


def test_poisson_rate_and_seed() -> None:
    trace = synthetic_trace("poisson:rate=50,duration=1h", seed=3)
    assert trace.kind == "synthetic"
    assert abs(len(trace) - 180_000) < 5 * 180_000**0.5
    assert np.all(np.diff(trace.arrivals) >= 0) and trace.arrivals[-1] < 3600
    again = synthetic_trace("poisson:rate=50,duration=1h", seed=3)
    np.testing.assert_array_equal(trace.arrivals, again.arrivals)
    other = synthetic_trace("poisson:rate=50,duration=1h,seed=4", seed=3)
    assert not np.array_equal(trace.arrivals, other.arrivals)


def test_steps_spike_and_diurnal_shapes() -> None:
    steps = synthetic_trace("steps:rates=1/0/20,step=100s")
    counts = np.histogram(steps.arrivals, bins=[0, 100, 200, 300])[0]
    assert counts[1] == 0 and counts[2] > 5 * counts[0]
    spike = synthetic_trace("spike:base=1,peak=100,at=10m,width=30,duration=20m")
    inside = np.count_nonzero((spike.arrivals >= 600) & (spike.arrivals < 630))
    assert inside > 2000 and len(spike) - inside < 1500
    day = synthetic_trace("diurnal:mean=2,amplitude=1,period=1d")
    night = np.count_nonzero(day.arrivals < 3 * 3600)
    noon = np.count_nonzero((day.arrivals > 10.5 * 3600) & (day.arrivals < 13.5 * 3600))
    assert noon > 5 * night and abs(len(day) - 2 * 86400) < 5 * (2 * 86400) ** 0.5


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("poisson:duration=10", "needs rate"),
        ("poisson:rate=5,speed=3", "unknown key 'speed'"),
        ("poisson:rate=fast", "expected a number"),
        ("poisson:rate=5,duration=3 weeks", "with a unit"),
        ("diurnal:mean=1,amplitude=2", "between 0 and 1"),
        ("poisson:rate=0,duration=10", "no requests"),
        ("poisson:rate", "key=value"),
    ],
)
def test_bad_synthetic_specs(spec: str, words: str) -> None:
    with pytest.raises(SimulationError, match=words):
        load_trace(spec)


def test_bursts_come_in_their_width_with_lulls_in_between() -> None:
    trace = synthetic_trace("bursts:rate=2,width=20s,lull=2m/8m,duration=2h", seed=4)
    gaps = np.diff(trace.arrivals)
    lulls = gaps[gaps > 60]
    assert lulls.size > 10 and lulls.min() >= 120 - 20 and lulls.max() <= 480 + 20
    assert trace.arrivals[-1] < 7200
