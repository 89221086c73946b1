"""Advice on a deployment's own history, computed by housekeeping in the background: the real
``swell advise`` (the dashboard's runner, a child process) over a recorded bursty history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import httpx
import pytest

from swell.autoscaling import VirtualClock
from swell.config import ServerSettings
from swell.control import ControlPlane, SwellApp
from swell.dashboard import run_advise
from swell.serving._testing import FakeBackend

MakeArchive = Callable[..., Path]
KEY = {"Authorization": "Api-Key k1"}
START = 1_800_000_000


@pytest.fixture
async def advising(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[ControlPlane, VirtualClock]]:
    """A plane whose housekeeping advises through the real runner, as the server runs it."""
    clock = VirtualClock()
    settings = ServerSettings(data_dir=tmp_path / "data", database_url=database_url, advice_seconds=3600)
    plane = ControlPlane(settings, FakeBackend(), clock=clock, wall_clock=lambda: START + clock.now(),
                         api_key="k1", advise=partial(run_advise, quick=True))  # as swell serve passes it
    await plane.start(background=False)
    yield plane, clock
    await plane.close()


async def _settled(plane: ControlPlane) -> None:
    for _ in range(2400):  # bounded: at most four minutes of polling for the child process (a busy machine)
        if not plane.advice.running:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the background advice did not finish")


async def test_bursty_history_earns_a_marker_in_the_deployment_view(
    advising: tuple[ControlPlane, VirtualClock], make_archive: MakeArchive
) -> None:
    plane, clock = advising
    pushed = await plane.push(make_archive({"model_name": "bursty"}), model_name="bursty", publish=True, promote=False)
    url = f"/v1/models/{pushed.model_id}/deployments/{pushed.deployment_id}"
    transport = httpx.ASGITransport(app=SwellApp(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://swell") as client:
        patched = await client.patch(url + "/autoscaling_settings", json={"scale_down_delay": 30}, headers=KEY)
        assert patched.json()["status"] == "ACCEPTED"
        scaled = plane.controller.get(pushed.deployment_id)
        assert scaled is not None
        # An hour recorded: a 20 s burst of one request a second every 4 minutes.
        for second in range(3600):
            burst = second % 240 < 20
            scaled.history.record(START + second, 1 if burst else 0, 1.0 if burst else 0.0)
        scaled.router.arrivals += 15 * 20
        await plane.housekeeping.run()
        await _settled(plane)
        view = (await client.get(url, headers=KEY)).json()
        advice = view["advice"]
        assert advice is not None, view
        assert advice["cold_start_waits_removed_percent"] > 50
        assert advice["command"] == f"swell advise --deployment {pushed.model_id}/{pushed.deployment_id}"
        listing = (await client.get(f"/v1/models/{pushed.model_id}", headers=KEY)).json()
        assert listing["deployments"][0]["advice"] == advice  # what `swell status` marks
        # Within the hour nothing runs again, however much traffic comes.
        scaled.router.arrivals += 100
        clock.advance(1800)
        await plane.housekeeping.run()
        assert not plane.advice.running
