"""Postgres autocommit blocks: the hot statements run through asyncpg directly (``DirectStatements``), and a pooled
connection is checked out only when a statement needs one (``OnDemandConnection``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from authsidecar.storage.errors import connection_lost, raise_translated
from authsidecar.storage.hot_connection import HotConnection
from authsidecar.storage.raw_statement import RawStatement
from authsidecar.storage.statements import Statements

__all__ = ["DirectStatements", "OnDemandConnection"]


class DirectStatements:
    """Postgres: the hot statements compiled once for asyncpg (storage/raw_statement.py) and run outside any
    transaction (each commits on its own), on the hot connection when it is free, else on a pooled connection's
    driver connection."""

    def __init__(
        self, statements: Statements, find_session: sa.Select[Any], engine: AsyncEngine, hot: HotConnection | None
    ) -> None:
        self._statements = statements
        self._dialect = engine.dialect
        self._engine = engine  # AUTOCOMMIT
        self._hot = hot
        self.find_session = RawStatement(find_session, self._dialect)
        self.user_with_credential = RawStatement(statements.user_with_credential, self._dialect)
        self._session_if_credential: dict[tuple[str, ...], RawStatement] = {}

    def session_if_credential(self, keys: tuple[str, ...]) -> RawStatement:
        """The credential-checked session insert for this column set, RETURNING the session's id."""
        stmt = self._session_if_credential.get(keys)
        if stmt is None:
            stmt = RawStatement(self._statements.session_if_credential(keys, True), self._dialect)
            self._session_if_credential[keys] = stmt
        return stmt

    async def run(self, stmt: RawStatement, params: Mapping[str, Any], write: bool = False) -> list[Any]:
        """The statement's raw rows; driver errors leave as domain errors. A ``write`` that failed is not tried
        again elsewhere (it may have been applied)."""
        args = stmt.args(params)
        if self._hot is not None:
            try:
                rows = await self._hot.fetch(stmt.sql, *args, write=write)
            except Exception as exc:
                raise_translated(exc)
            if rows is not None:
                return rows
        return await self._pooled(stmt.sql, args)

    async def _pooled(self, sql: str, args: list[Any]) -> list[Any]:
        try:
            async with self._engine.connect() as conn:
                raw: Any = (await conn.get_raw_connection()).driver_connection
                try:
                    return list(await raw.fetch(sql, *args))
                except BaseException as exc:
                    # SQLAlchemy did not run this statement, so it cannot tell a dead connection: unless the server
                    # answered an error about the query itself, it must not go back to the pool.
                    if connection_lost(exc) or not isinstance(exc, asyncpg.PostgresError):
                        await conn.invalidate()
                    raise
        except Exception as exc:
            raise_translated(exc)


class OnDemandConnection:
    """An autocommit connection taken from the pool at its first statement: a block whose statements all run
    directly (DirectStatements) never checks one out."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.dialect = engine.dialect
        self._engine = engine  # AUTOCOMMIT
        self._conn: AsyncConnection | None = None

    async def execute(self, statement: sa.Executable, parameters: Any = None) -> sa.CursorResult[Any]:
        """As AsyncConnection.execute."""
        if self._conn is None:
            self._conn = await self._engine.connect()
        return await self._conn.execute(statement, parameters)

    async def close(self) -> None:
        """Give the connection back, if one was taken."""
        if self._conn is not None:
            await self._conn.close()
