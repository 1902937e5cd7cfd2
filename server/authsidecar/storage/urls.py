"""Turn user-facing database URLs into SQLAlchemy async URLs plus driver connect arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import URL, make_url

__all__ = ["DatabaseTarget", "resolve_database_url"]

_PG_SCHEMES = {"postgres", "postgresql", "postgresql+asyncpg"}
_SQLITE_SCHEMES = {"sqlite", "sqlite+aiosqlite"}
_MYSQL_SCHEMES = {"mysql", "mariadb", "mysql+aiomysql", "mariadb+aiomysql"}
# libpq options asyncpg has no equivalent for; harmless to drop (asyncpg negotiates SCRAM itself).
_DROPPED_PG_OPTIONS = {"channel_binding", "connect_timeout", "application_name"}
_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


@dataclass(frozen=True)
class DatabaseTarget:
    """What create_async_engine needs."""

    url: URL
    connect_args: dict[str, Any] = field(default_factory=dict)

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite backend."""
        return self.url.get_backend_name() == "sqlite"

    @property
    def is_mysql(self) -> bool:
        """True for MySQL and MariaDB."""
        return self.url.get_backend_name() == "mysql"  # MariaDB URLs are rewritten to mysql+aiomysql


def resolve_database_url(raw: str | None, sqlite_path: str) -> DatabaseTarget:
    """Accept ``postgresql://`` / ``postgres://`` (with ``sslmode``), ``mysql://`` / ``mariadb://`` (aiomysql),
    ``sqlite:///path`` or nothing (embedded).

    Raises ValueError with a message fit for a one-line configuration error.
    """
    if not raw:
        return DatabaseTarget(URL.create("sqlite+aiosqlite", database=sqlite_path))
    try:
        url = make_url(raw)
    except Exception as exc:  # the parser raises ArgumentError; never echo the URL (it may hold a password)
        raise ValueError("DATABASE_URL is not a valid URL") from exc
    if url.drivername in _SQLITE_SCHEMES:
        return DatabaseTarget(url.set(drivername="sqlite+aiosqlite"))
    if url.drivername in _MYSQL_SCHEMES:
        if url.query:
            raise ValueError(f"DATABASE_URL option {sorted(url.query)[0]!r} is not supported for MySQL")
        return DatabaseTarget(url.set(drivername="mysql+aiomysql", query={"charset": "utf8mb4"}))
    if url.drivername not in _PG_SCHEMES:
        raise ValueError(
            f"DATABASE_URL scheme {url.drivername!r} is not supported (use postgresql://, mysql:// or sqlite://)"
        )
    query = dict(url.query)
    connect_args: dict[str, Any] = {}
    ssl_alias = query.pop("ssl", None)
    sslmode = query.pop("sslmode", None) or ssl_alias
    if sslmode is not None:
        if isinstance(sslmode, tuple) or sslmode not in _SSLMODES:
            raise ValueError(f"DATABASE_URL sslmode must be one of {sorted(_SSLMODES)}")
        connect_args["ssl"] = sslmode
    for option in _DROPPED_PG_OPTIONS:
        query.pop(option, None)
    if query:
        raise ValueError(f"DATABASE_URL option {sorted(query)[0]!r} is not supported")
    return DatabaseTarget(url.set(drivername="postgresql+asyncpg", query={}), connect_args)
