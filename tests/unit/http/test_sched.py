"""SCHED_BATCH for the serving processes: set per thread, inherited, opt-out."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from swell.http._sched import use_batch_scheduling

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policies")


def _in_thread(fn: Any) -> Any:
    """Run ``fn`` in a fresh thread (a policy is per thread: the test's own stays as it is)."""
    box: dict[str, Any] = {}

    def run() -> None:
        box["value"] = fn()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    return box["value"]


def test_the_thread_and_the_threads_it_starts_run_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWELL_SCHED_BATCH", raising=False)

    def body() -> tuple[bool, int, int]:
        done = use_batch_scheduling()
        return done, os.sched_getscheduler(0), _in_thread(lambda: os.sched_getscheduler(0))

    done, mine, child = _in_thread(body)
    assert done
    assert mine == os.SCHED_BATCH and child == os.SCHED_BATCH


@pytest.mark.parametrize("value", ["0", "off", "false"])
def test_opting_out_leaves_the_policy_alone(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SWELL_SCHED_BATCH", value)

    def body() -> tuple[bool, int, int]:
        before = os.sched_getscheduler(0)
        return use_batch_scheduling(), before, os.sched_getscheduler(0)

    done, before, after = _in_thread(body)
    assert not done and before == after
