"""What the dashboard hands `swell advise`: the recorded traffic as a trace, the deployment as flags."""

from __future__ import annotations

import pytest

from swell.dashboard._advise import AdviseError, advise_args, trace_csv

TRAFFIC = {"start": 1000.0, "interval": 1.0, "arrivals": [0, 2, 1], "concurrency": [0.0, 0.5, 0.25]}


def test_each_request_is_a_timestamp_spread_across_its_second() -> None:
    assert trace_csv(TRAFFIC).splitlines() == ["timestamp", "1001.250000", "1001.750000", "1002.500000"]


@pytest.mark.parametrize("traffic", [{}, {"start": None, "arrivals": []}, {"start": 5.0, "arrivals": [0, 0]}])
def test_no_traffic_is_a_sentence(traffic: dict[str, object]) -> None:
    with pytest.raises(AdviseError, match="no traffic recorded"):
        trace_csv(traffic)


def test_the_deployment_goes_in_as_flags() -> None:
    view = {
        "autoscaling_settings": {"min_replica": 0, "max_replica": 3, "scale_down_delay": 60, "schedules": []},
        "predict_concurrency": 2,
        "replicas": [{"cold_start": {"total_seconds": 1.5}}, {"cold_start": None}],
    }
    args = advise_args(view, TRAFFIC, max_replica_cap=10)
    pairs = dict(zip(args[1::2], args[2::2], strict=False)) if args[0] == "--json" else {}
    assert args[0] == "--json"
    assert pairs["--max-replica-cap"] == "10" and pairs["--predict-concurrency"] == "2"
    assert pairs["--min-replica"] == "0" and pairs["--max-replica"] == "3" and pairs["--scale-down-delay"] == "60"
    assert pairs["--cold-start"] == "1.500"
    assert float(pairs["--service-time"]) == pytest.approx(0.75 / 3)  # Little's law
    assert "--schedules" not in args
