"""The connection cap's choice of whom to close (pure)."""

from __future__ import annotations

from swell.http import ConnectionGuard, pick_victim
from swell.http._guard import BUSY, IDLE, READING


def test_the_oldest_connection_still_sending_a_request_goes_first() -> None:
    assert pick_victim([("a", BUSY), ("b", IDLE), ("c", READING), ("d", READING)]) == "c"


def test_then_the_oldest_idle_one() -> None:
    assert pick_victim([("a", BUSY), ("b", IDLE), ("c", IDLE)]) == "b"


def test_never_one_with_a_request_in_flight() -> None:
    assert pick_victim([("a", BUSY), ("b", BUSY)]) is None
    assert pick_victim([]) is None


class _Conn:
    def __init__(self, state: str) -> None:
        self.state = state
        self.closed = False

    def guard_state(self) -> str:
        return self.state

    def guard_close(self) -> None:
        self.closed = True


def test_over_the_cap_slow_ones_are_closed_and_counted_busy_ones_kept() -> None:
    guard = ConnectionGuard(10.0, 30.0, max_connections=2)
    busy, slow, idle = _Conn(BUSY), _Conn(READING), _Conn(IDLE)
    for conn in (busy, slow, idle):
        guard.opened(conn)
    assert slow.closed and not busy.closed and not idle.closed
    assert guard.open == 2 and guard.closed["cap"] == 1
    newcomer = _Conn(READING)
    guard.opened(newcomer)  # the newcomer has had no time to send: the idle one goes
    assert idle.closed and not newcomer.closed and not busy.closed
    assert guard.open == 2 and guard.closed["cap"] == 2


def test_a_newcomer_is_closed_when_every_other_connection_is_busy() -> None:
    guard = ConnectionGuard(None, None, max_connections=1)
    busy, newcomer = _Conn(BUSY), _Conn(READING)
    guard.opened(busy)
    guard.opened(newcomer)
    assert newcomer.closed and not busy.closed and guard.open == 1




def test_a_timeout_is_counted_under_its_reason() -> None:
    guard = ConnectionGuard(1.0, 1.0, None)
    conn = _Conn(READING)
    guard.opened(conn)
    guard.close(conn, "header_timeout")
    assert conn.closed and guard.closed["header_timeout"] == 1 and guard.open == 0
