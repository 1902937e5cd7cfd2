"""One Postgres connection kept out of the pool for the hot statements (the cache miss's session JOIN user by
token, sign-in's credential read and session insert).

Checking a connection out of SQLAlchemy's pool and back costs more CPU than the query itself (measured: ~70 us of
~100 us per miss). This connection is taken from the same engine (same connect arguments and type codecs), then
detached from the pool, and used whenever it is free; when it is busy, not open yet, or has just failed, the caller
goes through the pool as before, so the connection never queues calls and a failed read never becomes an error of
its own (a failed write is the caller's error: it may have been applied, so it is not run a second time). The engine's pool is made one smaller in exchange (storage/database.py), so the connection bound is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from authsidecar.storage.errors import connection_lost

__all__ = ["HotConnection"]

log = logging.getLogger(__name__)

_RETRY_AFTER = 1.0  # seconds between attempts to open it after a failure


class HotConnection:
    """A detached asyncpg connection for one statement at a time; ``fetch`` returns None when it cannot be used now."""

    def __init__(self, engine: AsyncEngine, timeout: float) -> None:
        self._engine = engine
        self._timeout = timeout
        self._conn: Any = None
        self._busy = False
        self._opening: asyncio.Task[None] | None = None
        self._failed_at = -_RETRY_AFTER
        self._closed = False

    async def fetch(self, sql: str, *args: Any, write: bool = False) -> list[Any] | None:
        """The rows, or None: busy, not open (it is opened in the background), or failed (then dropped). A failed
        ``write`` raises instead (after dropping the connection unless the server refused the statement itself)."""
        conn = self._conn
        if conn is None or conn.is_closed():
            self._conn = None
            self._open_soon()
            return None
        if self._busy:
            return None
        self._busy = True
        try:
            return list(await conn.fetch(sql, *args, timeout=self._timeout))
        except (asyncio.CancelledError, TimeoutError):
            self._drop(conn)  # cancelled or timed out mid-query: the connection's state is in doubt; a stalled
            raise  # server would stall the pool too, so the timeout is the caller's answer (not a second try)
        except Exception as exc:
            if write and isinstance(exc, asyncpg.PostgresError) and not connection_lost(exc):
                raise  # the statement's own error (a constraint, say): the connection is fine
            log.info("hot-path connection failed (%s); going through the pool", type(exc).__name__)
            self._drop(conn)
            if write:
                raise
            return None
        finally:
            self._busy = False

    def _open_soon(self) -> None:
        if self._closed or self._opening is not None or time.monotonic() - self._failed_at < _RETRY_AFTER:
            return
        self._opening = asyncio.get_running_loop().create_task(self._open(), name="hot-connection")

    async def _open(self) -> None:
        try:
            proxied = await self._engine.raw_connection()
            conn: Any = proxied.driver_connection  # (before detach, which lets go of it)
            proxied.detach()  # no longer the pool's: never checked in, reset or recycled by it
            if conn is None:
                raise RuntimeError("no driver connection")
            if self._closed:
                await conn.close(timeout=2)
            else:
                self._conn = conn
        except Exception as exc:
            self._failed_at = time.monotonic()
            log.info("hot-path connection not opened (%s); reading through the pool", type(exc).__name__)
        finally:
            self._opening = None

    def _drop(self, conn: Any) -> None:
        """Terminate a connection that failed (and forget it, unless another has replaced it meanwhile)."""
        if self._conn is conn:
            self._conn = None
        self._failed_at = time.monotonic()
        conn.terminate()

    async def close(self) -> None:
        """Close it (and stop opening it)."""
        self._closed = True
        if self._opening is not None:
            with contextlib.suppress(Exception):
                await self._opening
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=2)
            except Exception:
                conn.terminate()
