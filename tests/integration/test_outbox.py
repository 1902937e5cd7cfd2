"""The transactional outbox on each database: entries written in the change's transaction, delivered in commit
order per (target, key) while a failing group waits without starving the others, given up after the attempts,
and delivered by one lease holder at a time."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from authsidecar.domain.models import OutboxEntry
from authsidecar.hooks.dispatcher import OutboxDispatcher
from authsidecar.storage.database import SqlDatabase, create_database
from authsidecar.storage.outbox import SqlOutbox
from authsidecar.storage.schema import Schema
from authsidecar.storage.urls import resolve_database_url
from tests.integration.conftest import Databases

KINDS = ["sqlite", "postgres", "mariadb"]


class Clock:
    """A clock the test moves (the dispatcher's back-off and lease use it)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest_asyncio.fixture(params=KINDS)
async def db(request: pytest.FixtureRequest, databases: Databases) -> AsyncIterator[SqlDatabase]:
    database = create_database(resolve_database_url(databases.url(request.param, ""), ""), Schema())
    await database.ensure_invalidation_counter()
    yield database
    await database.close()


async def _write(db: SqlDatabase, target: str, key: str, count: int, start: int = 0) -> None:
    """``count`` events, one transaction each (as changes commit one by one)."""
    for n in range(start, start + count):
        async with db.transaction() as tx:
            tx.record_event(OutboxEntry(target, key, json.dumps({"id": uuid.uuid4().hex, "n": n})))


def _recorder(into: list[int], fail_first: int = 0) -> Any:
    failures = {"left": fail_first}

    async def deliver(event: dict[str, Any]) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise ConnectionError("receiver down")
        into.append(int(event["n"]))

    return deliver


async def _drain(dispatcher: OutboxDispatcher, clock: Clock, rounds: int = 20, step: float = 400) -> None:
    for _ in range(rounds):
        await dispatcher.round()
        clock.advance(step)


async def test_a_failing_group_waits_in_order_without_starving_the_others(db: SqlDatabase) -> None:
    slow, fast = f"slow-{uuid.uuid4().hex[:8]}", f"fast-{uuid.uuid4().hex[:8]}"
    await _write(db, slow, "user-1", 12)
    await _write(db, fast, "user-2", 3)
    got_slow: list[int] = []
    got_fast: list[int] = []
    clock = Clock()
    targets = {slow: _recorder(got_slow, fail_first=2), fast: _recorder(got_fast)}
    dispatcher = OutboxDispatcher(SqlOutbox(db), targets, batch=5, clock=clock)
    await dispatcher.round()  # the batch holds slow's first entries; its head fails: the group waits
    await dispatcher.round()  # the next read skips the waiting group: fast is not stuck behind it
    assert got_slow == [] and got_fast == [0, 1, 2]
    await _drain(dispatcher, clock)
    await dispatcher.release()
    assert got_slow == list(range(12))  # in commit order, each once


async def test_entries_are_given_up_after_the_attempts_and_unknown_targets_at_once(db: SqlDatabase) -> None:
    broken, gone = f"broken-{uuid.uuid4().hex[:8]}", f"gone-{uuid.uuid4().hex[:8]}"
    got: list[int] = []
    outbox = SqlOutbox(db)
    live_before, dead_before = await outbox.backlog()
    await _write(db, broken, "user-3", 1)
    clock = Clock()

    async def always_down(event: dict[str, Any]) -> None:
        raise ConnectionError("down")

    dispatcher = OutboxDispatcher(outbox, {broken: always_down}, max_attempts=3, clock=clock)
    await _drain(dispatcher, clock, rounds=5)
    await dispatcher.release()
    await _write(db, broken, "user-3", 1, start=1)  # the group goes on past a dead entry
    dispatcher = OutboxDispatcher(outbox, {broken: _recorder(got)}, clock=clock)
    await _drain(dispatcher, clock, rounds=2)
    assert got == [1]
    await _write(db, gone, "user-4", 1)
    await dispatcher.round()  # no such target configured: dead at once, no retries
    await dispatcher.release()
    live, dead = await outbox.backlog()
    assert (live - live_before, dead - dead_before) == (0, 2)
    removed = await outbox.delete_dead(clock() + timedelta(days=8), 100)
    assert removed >= 2


async def test_one_lease_holder_delivers_at_a_time(db: SqlDatabase) -> None:
    target = f"leased-{uuid.uuid4().hex[:8]}"
    first_got: list[int] = []
    second_got: list[int] = []
    outbox = SqlOutbox(db)
    await _write(db, target, "user-5", 2)
    clock = Clock()
    first = OutboxDispatcher(outbox, {target: _recorder(first_got)}, clock=clock, delivery_timeout=5)
    second = OutboxDispatcher(outbox, {target: _recorder(second_got)}, clock=clock, delivery_timeout=5)
    await first.round()
    await _write(db, target, "user-5", 2, start=2)
    await second.round()  # the first holds the lease (15 s)
    assert (first_got, second_got) == ([0, 1], [])
    clock.advance(16)  # the first stalled: its lease lapsed
    await second.round()
    assert second_got == [2, 3]
    await first.round()  # now the second holds it
    assert first_got == [0, 1]
    await second.release()
