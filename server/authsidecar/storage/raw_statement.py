"""SQLAlchemy statements compiled once and run on the asyncpg connection directly (Postgres' hot statements).

SQLAlchemy Core costs more CPU per call than the round trip it makes (connection checkout, execution context, result
objects: ~0.7 ms of event-loop time around a ~0.15 ms query, measured on a sign-in). The statements a hot path runs
are built with SQLAlchemy like every other (configured table and column names, extra fields, the dialect's casts),
compiled once here, and then executed by asyncpg itself, with SQLAlchemy's own bind and result processors applied
to the values, so a row reads back exactly as it would through SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = ["RawStatement"]

_Convert = Callable[[Any], Any] | None


class RawStatement:
    """``stmt`` compiled for ``dialect`` (asyncpg's positional ``$n`` parameters)."""

    def __init__(self, stmt: sa.Select[Any] | sa.Insert | sa.Update | sa.Delete, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql = str(compiled)
        self._params: list[tuple[str, bool, Any, _Convert]] = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            # A value the statement carries itself (a literal such as LIMIT 1) is used unless one is given.
            self._params.append((name, bind.required, bind.effective_value, convert))
        columns = list(stmt.exported_columns)
        self.keys: tuple[str, ...] = tuple(str(c.key) for c in columns)
        self._unique_keys = len(set(self.keys)) == len(self.keys)
        self._results: list[_Convert] = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        """asyncpg's positional arguments for these named parameters."""
        out = []
        for name, required, literal, convert in self._params:
            value = params[name] if required else params.get(name, literal)
            out.append(value if convert is None else convert(value))
        return out

    def values(self, row: Sequence[Any]) -> list[Any]:
        """One result row's values as SQLAlchemy would return them."""
        return [value if convert is None else convert(value) for convert, value in zip(self._results, row, strict=True)]

    def mapping(self, row: Sequence[Any]) -> dict[str, Any]:
        """One result row by column key (label); only for a statement whose keys are unique (as SQLAlchemy refuses
        an ambiguous name)."""
        if not self._unique_keys:
            raise ValueError(f"ambiguous column keys in {self.keys}")
        return dict(zip(self.keys, self.values(row), strict=True))
