"""Delivers outbox entries to their targets: at least once, in commit order per (target, user), retried with
exponential back-off, surviving restarts (entries are rows; a crash before an entry is deleted delivers it again).

One instance at a time delivers: it holds the outbox lease, renewed before every delivery and longer than any
delivery may take; another instance takes over once it lapses. Each round reads the oldest deliverable entries:
due, with no earlier live entry of their (target, key) group waiting for a retry. Each group is delivered from its
head until an entry fails (later entries of the group wait for it); groups run concurrently. A delivered entry is
deleted at once. After ``max_attempts`` failures an entry is marked dead (kept for inspection, logged, removed by
``cleanup`` after a week) and its group goes on; so is an entry whose target is no longer configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from authsidecar.domain.models import OutboxRow
from authsidecar.domain.ports import Outbox

__all__ = ["Deliver", "OutboxDispatcher", "backoff"]

log = logging.getLogger("authsidecar.outbox")

Deliver = Callable[[dict[str, Any]], Awaitable[None]]  # raises on failure
MAX_BACKOFF = 300.0


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failures: 1, 2, 4, ... up to 5 minutes, +-20 %."""
    return min(MAX_BACKOFF, 2.0 ** max(0, attempts - 1)) * random.uniform(0.8, 1.2)  # noqa: S311 - jitter


def _utc_now() -> datetime:
    return datetime.now(UTC)


class OutboxDispatcher:
    """The delivery loop of this instance."""

    def __init__(
        self,
        outbox: Outbox,
        targets: dict[str, Deliver],
        max_attempts: int = 50,
        poll_interval: float = 1.0,
        batch: int = 200,
        concurrency: int = 16,
        delivery_timeout: float = 10.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._outbox = outbox
        self._targets = targets
        self._max_attempts = max_attempts
        self._poll = poll_interval
        self._batch = batch
        self._slots = asyncio.Semaphore(concurrency)
        self._timeout = delivery_timeout  # no delivery takes longer; the lease, renewed before each, outlasts one
        self._lease = timedelta(seconds=delivery_timeout + 5)
        self._clock = clock
        self._holder = uuid.uuid4().hex
        self._wake = asyncio.Event()
        self._stopping = False
        self.delivered = 0  # counters, for logs and tests
        self.failures = 0

    def wake(self) -> None:
        """New entries were committed by this instance."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until stopped; a failing database or target never ends the loop. Gives the lease up at the end."""
        while not self._stopping:
            busy = False
            try:
                busy = await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database unreachable, ...: next round
                log.warning("outbox round failed: %s", type(exc).__name__)
            if self._stopping:
                break
            if not busy:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)
        await self.release()

    async def release(self) -> None:
        """Give the lease up, if held (another instance may deliver at once)."""
        try:
            await self._outbox.release_lease(self._holder)
        except Exception:  # it lapses by itself
            log.info("outbox lease not released (it lapses by itself)")

    def stop(self) -> None:
        """Ask the loop to end after the current round."""
        self._stopping = True
        self._wake.set()

    async def _holding(self) -> bool:
        """Take or renew the lease for another ``lease_seconds`` (renewed before every delivery, so a holder that
        stalls or dies loses it; the lease is longer than any delivery may take)."""
        now = self._clock()
        return await self._outbox.acquire_lease(self._holder, now, now + self._lease)

    async def round(self) -> bool:
        """One pass over the deliverable entries; True when a full batch was read and some were delivered (more
        may be waiting now)."""
        if not await self._holding():
            return False
        rows = await self._outbox.pending(self._batch, self._clock())
        groups: dict[tuple[str, str], list[OutboxRow]] = {}
        for row in rows:
            groups.setdefault((row.target, row.key), []).append(row)
        before = self.delivered
        await asyncio.gather(*(self._group(group) for group in groups.values()))
        return len(rows) == self._batch and self.delivered > before

    async def _group(self, rows: list[OutboxRow]) -> None:
        """A (target, key) group from its head, in order, until an entry fails or the lease is lost."""
        async with self._slots:
            for row in rows:
                if self._stopping or not await self._holding():
                    return
                outcome = await self._one(row)
                if outcome == "wait":
                    return

    async def _one(self, row: OutboxRow) -> str:
        """Deliver one entry: "delivered" (and deleted), "wait" (it failed; the group waits for its retry) or
        "dead"."""
        deliver = self._targets.get(row.target)
        if deliver is None:  # its target was removed from the configuration: nothing will ever take it
            log.error("outbox entry %d: no target %r is configured any more; marked dead", row.seq, row.target)
            await self._outbox.failed(row.seq, row.attempts, self._clock(), "no such target configured", True)
            return "dead"
        try:
            async with asyncio.timeout(self._timeout):
                await deliver(json.loads(row.payload))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failures += 1
            attempts = row.attempts + 1
            dead = attempts >= self._max_attempts
            error = f"{type(exc).__name__}: {exc}"[:500]
            next_at = self._clock() + timedelta(seconds=backoff(attempts))
            await self._outbox.failed(row.seq, attempts, next_at, error, dead)
            if dead:
                log.error("outbox entry %d to %s given up after %d attempts: %s", row.seq, row.target, attempts, error)
                return "dead"  # the group goes on without it
            log.warning("outbox entry %d to %s failed (attempt %d): %s", row.seq, row.target, attempts, error)
            return "wait"
        await self._outbox.delivered([row.seq])  # at once: a holder that dies now repeats this one entry only
        self.delivered += 1
        return "delivered"
