"""A Database that hands everything to another one: the base of the wrappers that change only some of it
(hooks/database.py: units of work run hooks; observability/traced.py: units of work and lookups in spans)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from authsidecar.domain.models import Invalidations, SessionWithUser
from authsidecar.domain.ports import Database, UnitOfWork

__all__ = ["DatabasePassThrough"]


class DatabasePassThrough:
    """Every Database method of ``inner``, unchanged; subclasses override what they wrap."""

    def __init__(self, inner: Database) -> None:
        self._inner = inner

    @asynccontextmanager
    async def transaction(self, autocommit: bool = False) -> AsyncIterator[UnitOfWork]:
        """The inner unit of work."""
        async with self._inner.transaction(autocommit) as uow:
            yield uow

    async def find_session(self, stored_token: str) -> SessionWithUser | None:
        """The inner lookup."""
        return await self._inner.find_session(stored_token)

    def add_commit_listener(self, listener: Callable[[Invalidations], Awaitable[None]]) -> None:
        """The inner database's."""
        self._inner.add_commit_listener(listener)

    def add_outbox_listener(self, listener: Callable[[], None]) -> None:
        """The inner database's."""
        self._inner.add_outbox_listener(listener)

    async def ping(self, within: float = 2.0) -> None:
        """The inner database's."""
        await self._inner.ping(within)

    async def close(self) -> None:
        """The inner database's."""
        await self._inner.close()

    async def invalidation_cursor(self) -> int:
        """The inner log's."""
        return await self._inner.invalidation_cursor()

    async def invalidations_after(self, seq: int, limit: int) -> list[tuple[int, Invalidations]]:
        """The inner log's."""
        return await self._inner.invalidations_after(seq, limit)

    async def invalidations_since(self, since: datetime, upto: int) -> list[tuple[int, Invalidations]]:
        """The inner log's."""
        return await self._inner.invalidations_since(since, upto)

    async def listen_for_invalidations(self, wake: Callable[[], None]) -> None:
        """The inner log's."""
        await self._inner.listen_for_invalidations(wake)

    async def database_time(self) -> float:
        """The inner store's clock."""
        return await self._inner.database_time()


def _check(db: DatabasePassThrough) -> Database:
    return db
