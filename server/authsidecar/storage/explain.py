"""One-line explanations of why the database could not be used, for people starting the server or a command:
what is wrong, where (host, port, database; never the password) and what to do. None for anything else."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass

from authsidecar.storage.urls import DatabaseTarget

__all__ = ["Explanation", "explain_database_error", "where"]

_MYSQL_UNKNOWN_DATABASE = 1049
_MYSQL_ACCESS_DENIED = 1045
_MYSQL_CANNOT_CONNECT = (2002, 2003, 2005, 2013)


def where(target: DatabaseTarget) -> str:
    """The database as people name it: ``postgresql 127.0.0.1:5432/app`` or ``sqlite /path/file.db``."""
    url = target.url
    if target.is_sqlite:
        return f"sqlite {url.database or ':memory:'}"
    kind = "mysql" if target.is_mysql else "postgresql"
    port = url.port or (3306 if target.is_mysql else 5432)
    return f"{kind} {url.host or 'localhost'}:{port}/{url.database or ''}"


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error, what it wraps (SQLAlchemy's ``orig``) and its causes."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [getattr(current, "orig", None), current.__cause__, current.__context__]


def _mysql_code(error: BaseException) -> int | None:
    args = getattr(error, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


@dataclass(frozen=True, slots=True)
class Explanation:
    """What is wrong with the database, for people; ``transient``: it may pass by itself (a server not up yet)."""

    message: str
    transient: bool = False

    def __str__(self) -> str:
        return self.message


def explain_database_error(error: BaseException, target: DatabaseTarget) -> Explanation | None:
    """Why ``target`` could not be used, in one line with what to do; None when ``error`` is not about that."""
    place = where(target)
    url = target.url
    for cause in _chain(error):
        name = type(cause).__name__
        code = _mysql_code(cause)
        if name == "InvalidCatalogNameError" or code == _MYSQL_UNKNOWN_DATABASE:
            create = f"CREATE DATABASE {url.database}" if target.is_mysql else f"createdb {url.database}"
            return Explanation(
                f"the database {url.database!r} does not exist on {place.rsplit('/', 1)[0]}: create it (for example"
                f" `{create}`) and run `authsidecar migrate`, or fix DATABASE_URL"
            )
        if name in ("InvalidPasswordError", "InvalidAuthorizationSpecificationError") or code == _MYSQL_ACCESS_DENIED:
            return Explanation(
                f"{place} refused the credentials of user {url.username!r}: fix the user or password in DATABASE_URL"
            )
        if target.is_sqlite and "unable to open database file" in str(cause):
            return Explanation(
                f"cannot open {place}: does its folder exist and is it writable? (AUTHSIDECAR_SQLITE_PATH)"
            )
        if isinstance(cause, socket.gaierror):
            return Explanation(f"cannot resolve the database host {url.host!r} ({place}): fix DATABASE_URL", True)
        if isinstance(cause, ConnectionRefusedError) or code in _MYSQL_CANNOT_CONNECT:
            return Explanation(
                f"nothing accepts connections at {place}: is the database running? check DATABASE_URL", True
            )
        if isinstance(cause, TimeoutError):
            return Explanation(f"{place} did not answer in time: is the host reachable? check DATABASE_URL", True)
    return None
