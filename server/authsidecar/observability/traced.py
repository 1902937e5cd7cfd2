"""Spans around the store of record and the remote session cache, as wrappers of their ports.

app.py puts them in place only when tracing is on; with tracing off these classes are not even imported. They
add one span per unit of work (``db.transaction``), per cache-miss lookup (``db.find_session``) and per Redis
call of the session cache (``cache.get`` with ``cache.hit``, ``cache.put``, ``cache.invalidate``,
``cache.evict_user``). Keys and tokens are never attributes (a cache key is derived from a session token).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from opentelemetry.trace import SpanKind, Tracer

from authsidecar.domain.models import SessionWithUser
from authsidecar.domain.passthrough import DatabasePassThrough
from authsidecar.domain.ports import Database, SessionCache, UnitOfWork
from authsidecar.observability.otel import span

__all__ = ["TracedDatabase", "TracedSessionCache"]

# OpenTelemetry's db.system.name values, by SQLAlchemy dialect name.
_SYSTEMS = {"postgresql": "postgresql", "sqlite": "sqlite", "mysql": "mysql", "mariadb": "mariadb"}


class TracedDatabase(DatabasePassThrough):
    """The inner Database, with a span per unit of work and per session lookup; everything else passes through
    (health pings untraced)."""

    def __init__(self, inner: Database, tracer: Tracer, dialect: str) -> None:
        super().__init__(inner)
        self._tracer = tracer
        self._system = _SYSTEMS.get(dialect, "other_sql")

    @asynccontextmanager
    async def transaction(self, autocommit: bool = False) -> AsyncIterator[UnitOfWork]:
        """The inner unit of work inside a ``db.transaction`` span (its commit included)."""
        attributes: dict[str, str | bool] = {"db.system.name": self._system, "authsidecar.db.autocommit": autocommit}
        with span(self._tracer, "db.transaction", SpanKind.CLIENT, attributes):
            async with self._inner.transaction(autocommit) as uow:
                yield uow

    async def find_session(self, stored_token: str) -> SessionWithUser | None:
        """The inner lookup inside a ``db.find_session`` span."""
        with span(self._tracer, "db.find_session", SpanKind.CLIENT, {"db.system.name": self._system}) as current:
            found = await self._inner.find_session(stored_token)
            current.set_attribute("authsidecar.found", found is not None)
            return found


class TracedSessionCache:
    """The inner (remote) SessionCache with a span per call; errors still propagate to the fail-open wrapper."""

    def __init__(self, inner: SessionCache, tracer: Tracer, system: str = "redis") -> None:
        self._inner = inner
        self._tracer = tracer
        self._attributes = {"db.system.name": system}
        self.shared = inner.shared

    async def get(self, key: str) -> SessionWithUser | None:
        """The inner get inside a ``cache.get`` span with ``cache.hit``."""
        with span(self._tracer, "cache.get", SpanKind.CLIENT, self._attributes) as current:
            entry = await self._inner.get(key)
            current.set_attribute("cache.hit", entry is not None)
            return entry

    async def put(self, key: str, entry: SessionWithUser, ttl: int) -> None:
        """The inner put inside a ``cache.put`` span."""
        with span(self._tracer, "cache.put", SpanKind.CLIENT, self._attributes):
            await self._inner.put(key, entry, ttl)

    async def invalidate(self, user_id: str, keys: Sequence[str], ttl: int) -> None:
        """The inner invalidate inside a ``cache.invalidate`` span."""
        with span(self._tracer, "cache.invalidate", SpanKind.CLIENT, self._attributes) as current:
            current.set_attribute("enduser.id", user_id)
            await self._inner.invalidate(user_id, keys, ttl)

    async def evict_user(self, user_id: str) -> None:
        """The inner evict_user inside a ``cache.evict_user`` span."""
        with span(self._tracer, "cache.evict_user", SpanKind.CLIENT, self._attributes) as current:
            current.set_attribute("enduser.id", user_id)
            await self._inner.evict_user(user_id)

    async def close(self) -> None:
        """The inner cache's."""
        await self._inner.close()


def _check(db: TracedDatabase, cache: TracedSessionCache) -> tuple[Database, SessionCache]:
    return db, cache
