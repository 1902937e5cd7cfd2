"""The one place driver errors become domain errors (asyncpg, sqlite3 and aiomysql, as wrapped by SQLAlchemy)."""

from __future__ import annotations

import asyncio
import re
from typing import NoReturn

import asyncpg
from sqlalchemy import exc as sa_exc

from authsidecar.errors import AuthSidecarError, BackendUnavailable, Conflict, FieldViolation, InvalidArgument

__all__ = ["connection_lost", "raise_translated", "translate_error"]

_UNIQUE_VIOLATION = "23505"
_TRY_AGAIN = {"55P03", "40P01", "40001"}  # lock not available (lock_timeout), deadlock, serialization failure
_MYSQL_DUPLICATE_ENTRY = 1062
_MYSQL_BAD_VALUE = {1264, 1366, 1406}  # out of range, incorrect value, data too long


def _mysql_code(error: sa_exc.DBAPIError) -> int | None:
    args = getattr(error.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _sqlstate(error: sa_exc.DBAPIError) -> str | None:
    orig = error.orig
    for candidate in (orig, getattr(orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def _constraint(error: sa_exc.DBAPIError) -> str | None:
    orig = error.orig
    for candidate in (orig, getattr(orig, "__cause__", None)):
        name = getattr(candidate, "constraint_name", None)
        if isinstance(name, str):
            return name
    text = str(orig)
    marker = "UNIQUE constraint failed: "  # sqlite names the columns, e.g. "user.email"
    return text.split(marker, 1)[1].strip() if marker in text else None


def translate_error(error: BaseException) -> AuthSidecarError | None:
    """The domain error for a storage failure, or None when it is not a known storage condition."""
    if isinstance(error, sa_exc.IntegrityError):
        if _sqlstate(error) == _UNIQUE_VIOLATION or "UNIQUE constraint failed" in str(error.orig):
            return Conflict(_constraint(error))
        if _mysql_code(error) == _MYSQL_DUPLICATE_ENTRY:
            key = re.search(r"for key '([^']+)'", str(error.orig))
            return Conflict(key.group(1).rsplit(".", 1)[-1] if key else None)
        return None
    if isinstance(error, sa_exc.DataError) or (
        isinstance(error, sa_exc.DBAPIError)
        and (
            _mysql_code(error) in _MYSQL_BAD_VALUE
            or type(getattr(error.orig, "__cause__", None)).__name__ == "DataError"
        )
    ):
        return _does_not_fit()
    if isinstance(error, sa_exc.DBAPIError) and _sqlstate(error) in _TRY_AGAIN:
        return _busy()
    if isinstance(error, sa_exc.DBAPIError) and (
        error.connection_invalidated or isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError)
    ):
        if "database is locked" in str(error.orig):
            return BackendUnavailable("the embedded database is busy, retry later", retry_after=0.1)
        return BackendUnavailable()
    if isinstance(error, asyncpg.PostgresError) and not connection_lost(error):
        return _postgres_error(error)
    if isinstance(error, OSError | asyncio.TimeoutError | sa_exc.TimeoutError) or connection_lost(error):
        return BackendUnavailable()
    return None


def _does_not_fit() -> InvalidArgument:
    """A value the column cannot hold (out of range, too long, malformed): the request's fault, not ours."""
    return InvalidArgument([FieldViolation("request", "a value does not fit its column")])


def _busy() -> BackendUnavailable:
    return BackendUnavailable("the database was busy (lock timeout, deadlock), retry", retry_after=0.2)


def _postgres_error(error: asyncpg.PostgresError) -> AuthSidecarError | None:
    """The same translation for an error of a statement run on asyncpg directly (storage/raw_statement.py)."""
    state = error.sqlstate
    if state == _UNIQUE_VIOLATION:
        return Conflict(getattr(error, "constraint_name", None))
    if isinstance(error, asyncpg.DataError):
        return _does_not_fit()
    if state in _TRY_AGAIN:
        return _busy()
    return None


def connection_lost(error: BaseException) -> bool:
    """A raw asyncpg error (the hot path's read bypasses SQLAlchemy) that says the connection or the server is
    gone or refusing (closed connection, admin shutdown, too many connections), rather than that the query was
    wrong: the connection must not be reused, and the caller is told to retry."""
    return isinstance(
        error,
        asyncpg.InterfaceError
        | asyncpg.InternalClientError  # the protocol in an unexpected state (seen when the server cut it off)
        | asyncpg.PostgresConnectionError
        | asyncpg.OperatorInterventionError
        | asyncpg.InsufficientResourcesError,
    )


def raise_translated(exc: Exception) -> NoReturn:
    """Re-raise a driver error as its domain error (the one translation point), or as it is when unknown."""
    translated = translate_error(exc)
    if translated is None:
        raise exc
    raise translated from exc
