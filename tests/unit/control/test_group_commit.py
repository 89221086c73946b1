"""The async queue's group commit: concurrent writes share a transaction; one bad write fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from swell.control._async import _GroupCommit


class FakeStore:
    """Counts transactions; a transaction fails at commit if a write in it failed."""

    def __init__(self) -> None:
        self.transactions: list[list[Any]] = []

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[list[Any]]:
        writes: list[Any] = []
        yield writes
        await asyncio.sleep(0)  # a commit takes a while: writes arriving now wait for the next one
        self.transactions.append(writes)


async def test_concurrent_writes_share_one_transaction() -> None:
    store = FakeStore()
    commits = _GroupCommit(store)  # type: ignore[arg-type]

    async def write(i: int) -> int:
        async def op(tx: list[Any]) -> int:
            tx.append(i)
            return i * 10

        return int(await commits.write(op))

    assert await asyncio.gather(*(write(i) for i in range(10))) == [i * 10 for i in range(10)]
    assert store.transactions == [list(range(10))]


async def test_writes_arriving_during_a_commit_go_in_the_next() -> None:
    store = FakeStore()
    commits = _GroupCommit(store)  # type: ignore[arg-type]

    async def op(tx: list[Any], i: int) -> None:
        tx.append(i)

    first = asyncio.ensure_future(commits.write(lambda tx: op(tx, 0)))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first transaction is committing now
    later = [asyncio.ensure_future(commits.write(lambda tx, i=i: op(tx, i))) for i in (1, 2, 3)]
    await asyncio.gather(first, *later)
    assert store.transactions == [[0], [1, 2, 3]]


async def test_a_failing_write_fails_its_caller_only() -> None:
    store = FakeStore()
    commits = _GroupCommit(store)  # type: ignore[arg-type]

    async def good(tx: list[Any]) -> str:
        tx.append("good")
        return "ok"

    async def bad(tx: list[Any]) -> str:
        raise ValueError("constraint violated")

    results = await asyncio.gather(
        commits.write(good), commits.write(bad), commits.write(good), return_exceptions=True
    )
    assert results[0] == "ok" and results[2] == "ok"
    assert isinstance(results[1], ValueError)
    # The batch failed as a whole, then each write went alone: the good ones are kept once each.
    assert store.transactions == [["good"], ["good"]]


async def test_a_cancelled_caller_does_not_stop_the_write() -> None:
    store = FakeStore()
    commits = _GroupCommit(store)  # type: ignore[arg-type]

    async def op(tx: list[Any]) -> None:
        tx.append("kept")

    caller = asyncio.ensure_future(commits.write(op))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await commits.close()
    assert store.transactions == [["kept"]]
