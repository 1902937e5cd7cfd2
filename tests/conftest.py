"""Shared fixtures: a fresh Postgres database and Redis key prefix per test run (dropped/deleted afterwards),
a migrated SQLite file, and cheap argon2 parameters for tests that are not about hashing cost."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import tomllib
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiomysql
import asyncpg
import pytest
import redis
from sqlalchemy.engine import make_url

from authsidecar.domain.fields import Registry
from authsidecar.schema_config import SchemaSettings
from authsidecar.security.passwords import Argon2Parameters
from authsidecar.storage.migrate import upgrade
from authsidecar.storage.schema import Schema
from authsidecar.storage.urls import resolve_database_url

# Envoy's generated stubs (xds-protos), for the gateway tests, live beside the virtualenv rather than in it
# (requirements/xds.lock says why); appended last, so they shadow nothing of the virtualenv's.
XDS_PROTOS = Path(__file__).resolve().parents[1] / ".tools" / "xds-protos"
if XDS_PROTOS.is_dir() and str(XDS_PROTOS) not in sys.path:
    sys.path.append(str(XDS_PROTOS))

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MARIADB_ADMIN_URL = os.environ.get("TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/mysql")
FAST_ARGON2 = Argon2Parameters(time_cost=1, memory_kib=8192, parallelism=1)
TEST_SECRET = "test-secret-" + "0123456789abcdef" * 3  # AUTHSIDECAR_SECRET of every test server

# A customised schema: renamed and plural tables, renamed columns, additional fields of every type, uuid ids.
CUSTOM_SCHEMA_TOML = """
[schema]
use_plural = true
generate_id = "uuid"
[schema.user]
model_name = "members"
fields = { email = "email_address", name = "full_name", email_verified = "is_verified" }
[schema.user.additional_fields.role]
type = "string"
required = false
default_value = "member"
input = false
[schema.user.additional_fields.lang]
type = "string"
default_value = "en"
[schema.user.additional_fields.age]
type = "number"
required = false
[schema.user.additional_fields.vip]
type = "boolean"
required = false
default_value = false
[schema.user.additional_fields.birthday]
type = "date"
required = false
[schema.user.additional_fields.tags]
type = "string[]"
required = false
index = true
[schema.user.additional_fields.prefs]
type = "json"
required = false
[schema.user.additional_fields.handle]
type = "string"
required = false
unique = true
[schema.user.additional_fields.secretNote]
type = "string"
required = false
returned = false
field_name = "secret_note"
[schema.session]
model_name = "user_sessions"
fields = { user_id = "user_id", ip_address = "ip" }
[schema.session.additional_fields.device]
type = "string"
default_value = "unknown"
"""
CUSTOM_SCHEMA = SchemaSettings.model_validate(tomllib.loads(CUSTOM_SCHEMA_TOML)["schema"])

T = TypeVar("T")

# The interop tier (`make test-interop`): files that run other programs against ours - Better Auth under node, the
# Go and TypeScript clients, buf, nginx, drizzle-kit, Redis Cluster / Sentinel / TLS topologies. Single tests of
# other files that need node carry @pytest.mark.interop themselves (tests/unit/test_two_factor_formats.py).
INTEROP_FILES = frozenset(
    {
        "test_better_auth.py",
        "test_two_factor_better_auth.py",
        "test_go_client.py",
        "test_typescript_client.py",
        "test_buf_template.py",
        "test_gateway_nginx.py",
        "test_redis_cluster.py",
        "test_redis_sentinel.py",
        "test_redis_tls.py",
        "test_drizzle.py",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the interop tier's files (INTEROP_FILES)."""
    for item in items:
        if item.path.name in INTEROP_FILES:
            item.add_marker(pytest.mark.interop)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a private loop in another thread (leaves pytest-asyncio's loop alone)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_pg_database(prefix: str = "authsidecar_test") -> str:
    """A new, empty database; returns its URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    run_sync(_pg_admin(f'CREATE DATABASE "{name}"'))
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def drop_pg_database(url: str) -> None:
    """Drop a database made by create_pg_database, even with connections still open."""
    name = url.rsplit("/", 1)[1]
    run_sync(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def migrate(url: str, registry: Registry | None = None) -> None:
    """Apply the migrations to a database URL (postgresql:// or sqlite:///), for a schema configuration."""
    run_sync(upgrade(resolve_database_url(url, ""), Schema(registry)))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A migrated Postgres database for this test run."""
    with migrated(create_pg_database, drop_pg_database, "authsidecar_test", custom=False) as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file for this test run."""
    path: Path = tmp_path_factory.mktemp("sqlite") / "authsidecar.db"
    url = f"sqlite:///{path}"
    migrate(url)
    return url


async def _mariadb_admin(sql: str) -> None:
    url = make_url(MARIADB_ADMIN_URL)
    conn = await aiomysql.connect(
        host=url.host or "127.0.0.1", port=url.port or 3306, user=url.username or "root", password=url.password or ""
    )
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(sql)
    finally:
        conn.close()


def create_mariadb_database(prefix: str = "authsidecar_test") -> str:
    """A new, empty MariaDB/MySQL database; returns its URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    run_sync(_mariadb_admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
    return f"{MARIADB_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def drop_mariadb_database(url: str) -> None:
    """Drop a database made by create_mariadb_database."""
    run_sync(_mariadb_admin(f"DROP DATABASE IF EXISTS `{url.rsplit('/', 1)[1]}`"))


@contextmanager
def migrated(create: Callable[[str], str], drop: Callable[[str], None], prefix: str, custom: bool) -> Iterator[str]:
    """A new database, migrated with the default or the customised schema, dropped afterwards."""
    url = create(prefix)
    try:
        migrate(url, CUSTOM_SCHEMA.registry() if custom else None)
        yield url
    finally:
        drop(url)


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """A migrated MariaDB database for this test run."""
    with migrated(create_mariadb_database, drop_mariadb_database, "authsidecar_test", custom=False) as url:
        yield url


@pytest.fixture(scope="session")
def mariadb_custom_url() -> Iterator[str]:
    """A MariaDB database migrated with CUSTOM_SCHEMA."""
    with migrated(create_mariadb_database, drop_mariadb_database, "authsidecar_custom", custom=True) as url:
        yield url


@pytest.fixture(scope="session")
def pg_custom_url() -> Iterator[str]:
    """A Postgres database migrated with CUSTOM_SCHEMA."""
    with migrated(create_pg_database, drop_pg_database, "authsidecar_custom", custom=True) as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_custom_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file migrated with CUSTOM_SCHEMA."""
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite-custom') / 'custom.db'}"
    migrate(url, CUSTOM_SCHEMA.registry())
    return url


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test run; every key under it is deleted afterwards."""
    prefix = f"authsidecar-test-{secrets.token_hex(6)}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
