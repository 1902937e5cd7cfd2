"""resolve_database_url: user-facing DATABASE_URL -> SQLAlchemy async URL + asyncpg connect arguments."""

from __future__ import annotations

import pytest

from authsidecar.storage.urls import resolve_database_url

PASSWORD = "hunter2-pa55"


@pytest.mark.parametrize("raw", [None, ""])
def test_nothing_means_embedded_sqlite(raw: str | None) -> None:
    target = resolve_database_url(raw, "/data/auth.db")
    assert target.url.drivername == "sqlite+aiosqlite"
    assert target.url.database == "/data/auth.db"
    assert target.is_sqlite
    assert target.connect_args == {}


@pytest.mark.parametrize("raw", ["sqlite:///rel/auth.db", "sqlite+aiosqlite:///rel/auth.db"])
def test_sqlite_url(raw: str) -> None:
    target = resolve_database_url(raw, "ignored.db")
    assert target.url.drivername == "sqlite+aiosqlite"
    assert target.url.database == "rel/auth.db"
    assert target.is_sqlite


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+asyncpg"])
def test_postgres_schemes_become_asyncpg(scheme: str) -> None:
    target = resolve_database_url(f"{scheme}://app:{PASSWORD}@db.internal:6543/auth", "x.db")
    url = target.url
    assert url.drivername == "postgresql+asyncpg"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "app",
        PASSWORD,
        "db.internal",
        6543,
        "auth",
    )
    assert not target.is_sqlite
    assert target.connect_args == {}


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"])
def test_sslmode_moves_to_connect_args(mode: str) -> None:
    target = resolve_database_url(f"postgresql://app:{PASSWORD}@db/auth?sslmode={mode}", "x.db")
    assert target.connect_args == {"ssl": mode}
    assert dict(target.url.query) == {}
    assert "sslmode" not in target.url.render_as_string(hide_password=False)


def test_ssl_alias() -> None:
    target = resolve_database_url("postgresql://db/auth?ssl=require", "x.db")
    assert target.connect_args == {"ssl": "require"}
    assert dict(target.url.query) == {}


def test_libpq_only_options_are_dropped() -> None:
    # What e.g. Neon's connection strings carry.
    target = resolve_database_url(
        f"postgres://app:{PASSWORD}@ep-x.neon.tech/auth?sslmode=require&channel_binding=require"
        "&connect_timeout=10&application_name=web",
        "x.db",
    )
    assert target.connect_args == {"ssl": "require"}
    assert dict(target.url.query) == {}
    assert target.url.drivername == "postgresql+asyncpg"


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        (f"postgresql://app:{PASSWORD}@db/auth?foo=1", "option 'foo' is not supported"),
        (f"postgresql://app:{PASSWORD}@db/auth?sslmode=bogus", "sslmode must be one of"),
        (f"postgresql://app:{PASSWORD}@db/auth?sslmode=require&sslmode=disable", "sslmode must be one of"),
        (f"oracle://app:{PASSWORD}@db/auth", "scheme 'oracle' is not supported"),
        (f"mysql://app:{PASSWORD}@db/auth?ssl_mode=x", "option 'ssl_mode' is not supported for MySQL"),
        (f"postgresql+psycopg://app:{PASSWORD}@db/auth", "scheme 'postgresql\\+psycopg' is not supported"),
        ("not a url at all", "not a valid URL"),
        (f"postgresql://app:{PASSWORD}@db:54x2/auth", "not a valid URL"),
        (f"postgresql://app:{PASSWORD}@db/auth?password={PASSWORD}", "option 'password' is not supported"),
    ],
)
def test_rejected_urls_never_echo_the_password(raw: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern) as info:
        resolve_database_url(raw, "x.db")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("DATABASE_URL")
    assert PASSWORD not in message


def test_target_repr_hides_the_password() -> None:
    target = resolve_database_url(f"postgresql://app:{PASSWORD}@db/auth?sslmode=require", "x.db")
    assert PASSWORD not in repr(target)
    assert PASSWORD not in str(target.url)


@pytest.mark.parametrize("scheme", ["mysql", "mariadb", "mysql+aiomysql"])
def test_mysql_schemes_become_aiomysql(scheme: str) -> None:
    target = resolve_database_url(f"{scheme}://app:{PASSWORD}@db.internal:3307/auth", "x.db")
    assert target.url.drivername == "mysql+aiomysql"
    assert (target.url.host, target.url.port, target.url.database) == ("db.internal", 3307, "auth")
    assert dict(target.url.query) == {"charset": "utf8mb4"}
    assert target.is_mysql and not target.is_sqlite
