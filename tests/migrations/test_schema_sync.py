"""The CLI's schema workflow, from outside: `generate` applied with the database's own client, `migrate --check`
both ways, `migrate --dry-run` changing nothing, adopting a database created by Better Auth (with rows), adding
a new additional field, and refusing what cannot be done by adding things."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import (
    CUSTOM_SCHEMA_TOML,
    create_mariadb_database,
    create_pg_database,
    drop_mariadb_database,
    drop_pg_database,
    run_sync,
)
from tests.e2e.conftest import clean_env

# Better Auth 1.7.25's Postgres DDL (shared/docs/better-auth.md), as `npx auth migrate` creates it.
BETTER_AUTH_DDL = """
create table "user" ("id" text not null primary key, "name" text not null, "email" text not null unique,
  "emailVerified" boolean not null, "image" text, "createdAt" timestamptz default CURRENT_TIMESTAMP not null,
  "updatedAt" timestamptz default CURRENT_TIMESTAMP not null);
create table "session" ("id" text not null primary key, "expiresAt" timestamptz not null, "token" text not null unique,
  "createdAt" timestamptz default CURRENT_TIMESTAMP not null, "updatedAt" timestamptz not null, "ipAddress" text,
  "userAgent" text, "userId" text not null references "user" ("id") on delete cascade);
create table "account" ("id" text not null primary key, "accountId" text not null, "providerId" text not null,
  "userId" text not null references "user" ("id") on delete cascade, "accessToken" text, "refreshToken" text,
  "idToken" text, "accessTokenExpiresAt" timestamptz, "refreshTokenExpiresAt" timestamptz, "scope" text,
  "password" text, "createdAt" timestamptz default CURRENT_TIMESTAMP not null, "updatedAt" timestamptz not null);
create table "verification" ("id" text not null primary key, "identifier" text not null, "value" text not null,
  "expiresAt" timestamptz not null, "createdAt" timestamptz default CURRENT_TIMESTAMP not null,
  "updatedAt" timestamptz default CURRENT_TIMESTAMP not null);
create index "session_userId_idx" on "session" ("userId");
create index "account_userId_idx" on "account" ("userId");
create index "verification_identifier_idx" on "verification" ("identifier");
"""
ROWS = """
insert into "user" values ('u1', 'Ada', 'ada@example.com', true, null, now(), now());
insert into "session" values ('s1', now() + interval '7 days', 'tok-1', now(), now(), null, null, 'u1');
insert into "account" values ('a1', 'u1', 'credential', 'u1', null, null, null, null, null, null, 'salt:key',
  now(), now());
"""


CONFIGS = {
    "default": "",
    "custom": CUSTOM_SCHEMA_TOML,
    "serial-ids": '[schema]\ngenerate_id = "serial"\n',
    "database-ids": "[schema]\ngenerate_id = false\n",
}


def configured(env: dict[str, str], folder: Path, config: str) -> dict[str, str]:
    """``env`` plus AUTHSIDECAR_CONFIG for one of CONFIGS (written into ``folder``)."""
    if not CONFIGS[config]:
        return env
    path = folder / "authsidecar.toml"
    path.write_text(CONFIGS[config])
    return {**env, "AUTHSIDECAR_CONFIG": str(path)}


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "authsidecar", *args]
    return subprocess.run(
        cmd, env={**clean_env(), **env}, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


async def _sql(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        if ";" in sql.strip().rstrip(";"):
            await conn.execute(sql)
            return []
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def sql(url: str, statement: str) -> list[asyncpg.Record]:
    return run_sync(_sql(url, statement))


@pytest.fixture
def empty_pg() -> Iterator[str]:
    url = create_pg_database("authsidecar_sync")
    try:
        yield url
    finally:
        drop_pg_database(url)


def test_adopting_a_better_auth_database_keeps_its_rows(empty_pg: str, tmp_path: Path) -> None:
    sql(empty_pg, BETTER_AUTH_DDL)
    sql(empty_pg, ROWS)
    env = {"DATABASE_URL": empty_pg}
    check = cli("migrate", "--check", env=env, cwd=tmp_path)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "missing: table authsidecar_invalidation" in check.stdout
    assert "missing: index user_createdAt_idx" in check.stdout
    assert "Traceback" not in check.stderr

    dry = cli("migrate", "--dry-run", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert 'CREATE INDEX "user_createdAt_idx"' in dry.stdout
    assert "SET DEFAULT false" in dry.stdout  # emailVerified gets the seed's default
    assert cli("migrate", "--check", env=env, cwd=tmp_path).returncode == 1  # the dry run changed nothing

    done = cli("migrate", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    again = cli("migrate", "--check", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stdout
    assert "matches the configured schema" in again.stdout
    assert [tuple(r) for r in sql(empty_pg, 'select id, name, email from "user"')] == [("u1", "Ada", "ada@example.com")]
    assert [tuple(r) for r in sql(empty_pg, 'select id, token from "session"')] == [("s1", "tok-1")]
    assert [r[0] for r in sql(empty_pg, 'select password from "account"')] == ["salt:key"]
    assert cli("migrate", env=env, cwd=tmp_path).returncode == 0  # idempotent


def test_adopting_a_redis_only_better_auth_database_creates_session_and_verification(
    empty_pg: str, tmp_path: Path
) -> None:
    statements = [s for s in BETTER_AUTH_DDL.split(";") if s.strip()]
    ddl = ";".join(s for s in statements if '"session"' not in s and '"verification"' not in s) + ";"
    sql(empty_pg, ddl)
    env = {"DATABASE_URL": empty_pg}
    assert cli("migrate", env=env, cwd=tmp_path).returncode == 0
    tables = {r[0] for r in sql(empty_pg, "select tablename from pg_tables where schemaname = 'public'")}
    assert {"user", "account", "session", "verification"} <= tables
    assert cli("migrate", "--check", env=env, cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("config", list(CONFIGS))
def test_generate_applied_with_psql_is_accepted_by_check(empty_pg: str, tmp_path: Path, config: str) -> None:
    env = configured({"DATABASE_URL": empty_pg}, tmp_path, config)
    out = tmp_path / "schema.sql"
    generated = cli("generate", "--dialect", "postgresql", "--output", str(out), env=env, cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr
    subprocess.run(["psql", empty_pg, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(out)], check=True, capture_output=True)
    check = cli("migrate", "--check", env=env, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("config", list(CONFIGS))
def test_generate_applied_with_sqlite3_is_accepted_by_check(tmp_path: Path, config: str) -> None:
    env = configured({"AUTHSIDECAR_SQLITE_PATH": str(tmp_path / "gen.db")}, tmp_path, config)
    script = cli("generate", "--dialect", "sqlite", env=env, cwd=tmp_path)
    assert script.returncode == 0, script.stderr
    subprocess.run(["sqlite3", str(tmp_path / "gen.db")], input=script.stdout, text=True, check=True)
    check = cli("migrate", "--check", env=env, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_new_additional_field_is_added_by_migrate(empty_pg: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": empty_pg}
    assert cli("migrate", env=env, cwd=tmp_path).returncode == 0
    sql(empty_pg, ROWS)
    config = tmp_path / "authsidecar.toml"
    config.write_text('[schema.user.additional_fields.plan]\ntype = "string"\nrequired = false\nindex = true\n')
    env["AUTHSIDECAR_CONFIG"] = str(config)
    check = cli("migrate", "--check", env=env, cwd=tmp_path)
    assert check.returncode == 1 and "missing: column user.plan" in check.stdout
    serve = cli("serve", env=env, cwd=tmp_path)  # refuses to start on a schema that lacks the field
    assert serve.returncode == 1 and "run `authsidecar migrate`" in serve.stderr and "Traceback" not in serve.stderr
    assert cli("migrate", env=env, cwd=tmp_path).returncode == 0
    assert cli("migrate", "--check", env=env, cwd=tmp_path).returncode == 0
    assert [r[0] for r in sql(empty_pg, 'select plan from "user"')] == [None]


@pytest.mark.parametrize(
    ("change", "config", "expected"),
    [
        ('alter table "user" alter column "emailVerified" type text', "", "user.emailVerified is TEXT"),
        (
            "",
            '[schema.user.additional_fields.plan]\ntype = "string"\n',  # required, no default, table has rows
            "user.plan is required but missing from a table that has rows",
        ),
        (  # a rename is not done for you
            "",
            '[schema.user]\nfields = { email = "mail" }\n',
            'ALTER TABLE "user" RENAME COLUMN email TO mail',
        ),
    ],
)
def test_what_cannot_be_added_is_refused_with_the_sql_to_run(
    empty_pg: str, tmp_path: Path, change: str, config: str, expected: str
) -> None:
    env = {"DATABASE_URL": empty_pg}
    assert cli("migrate", env=env, cwd=tmp_path).returncode == 0
    sql(empty_pg, ROWS)
    if change:
        sql(empty_pg, change + ";")
    if config:
        (tmp_path / "authsidecar.toml").write_text(config)
        env["AUTHSIDECAR_CONFIG"] = str(tmp_path / "authsidecar.toml")
    before = [
        tuple(r) for r in sql(empty_pg, "select table_name, column_name from information_schema.columns order by 1, 2")
    ]
    result = cli("migrate", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert expected in result.stderr and "changed nothing" in result.stderr and "Traceback" not in result.stderr
    after = [
        tuple(r) for r in sql(empty_pg, "select table_name, column_name from information_schema.columns order by 1, 2")
    ]
    assert after == before
    assert cli("migrate", "--check", env=env, cwd=tmp_path).returncode == 1


@pytest.mark.parametrize("config", list(CONFIGS))
def test_generate_applied_with_the_mariadb_client_is_accepted_by_check(tmp_path: Path, config: str) -> None:
    url = create_mariadb_database("authsidecar_gen")
    try:
        env = configured({"DATABASE_URL": url}, tmp_path, config)
        script = cli("generate", "--dialect", "mysql", env=env, cwd=tmp_path)
        assert script.returncode == 0, script.stderr
        parsed = make_url(url)
        subprocess.run(
            [
                "mysql",
                "-h",
                parsed.host or "127.0.0.1",
                "-P",
                str(parsed.port or 3306),
                "-u",
                parsed.username or "root",
                str(parsed.database),
            ],
            input=script.stdout,
            text=True,
            check=True,
            capture_output=True,
        )
        check = cli("migrate", "--check", env=env, cwd=tmp_path)
        assert check.returncode == 0, check.stdout + check.stderr
        assert cli("migrate", env=env, cwd=tmp_path).returncode == 0
    finally:
        drop_mariadb_database(url)


def test_a_required_field_dropped_from_the_configuration_is_reported(empty_pg: str, tmp_path: Path) -> None:
    env = configured({"DATABASE_URL": empty_pg}, tmp_path, "default")
    config = tmp_path / "with-nick.toml"
    config.write_text('[schema.user.additional_fields.nick]\ntype = "string"\n')
    assert cli("migrate", env={**env, "AUTHSIDECAR_CONFIG": str(config)}, cwd=tmp_path).returncode == 0
    check = cli("migrate", "--check", env=env, cwd=tmp_path)  # the field is no longer configured
    assert check.returncode == 1
    assert "user.nick is NOT NULL without a default and the configuration does not know it" in check.stdout


def test_a_renamed_table_is_refused_not_recreated_empty(empty_pg: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": empty_pg}
    assert cli("migrate", env=env, cwd=tmp_path).returncode == 0
    sql(empty_pg, ROWS)
    renamed = configured(env, tmp_path, "default")
    (tmp_path / "renamed.toml").write_text('[schema.user]\nmodel_name = "members"\n')
    result = cli("migrate", env={**renamed, "AUTHSIDECAR_CONFIG": str(tmp_path / "renamed.toml")}, cwd=tmp_path)
    assert result.returncode == 1
    assert 'ALTER TABLE "user" RENAME TO members' in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("database", ["postgres", "mariadb"])
def test_long_names_and_concurrent_migrates(tmp_path: Path, database: str) -> None:
    url = (
        create_pg_database("authsidecar_long")
        if database == "postgres"
        else create_mariadb_database("authsidecar_long")
    )
    try:
        config = tmp_path / "long.toml"
        config.write_text(
            '[schema.user]\nmodel_name = "members_of_a_rather_long_organisation_name"\n'
            '[schema.user.additional_fields.a_pretty_long_field_name_here]\ntype = "string"\nrequired = false\nindex = true\n'
        )
        env = {**clean_env(), "DATABASE_URL": url, "AUTHSIDECAR_CONFIG": str(config)}
        cmd = [sys.executable, "-m", "authsidecar", "migrate"]
        runs = [subprocess.Popen(cmd, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True) for _ in range(3)]
        outcomes = [(run.communicate(timeout=120)[1], run.returncode) for run in runs]
        assert [code for _, code in outcomes] == [0, 0, 0], outcomes
        assert (
            cli(
                "migrate", "--check", env={"DATABASE_URL": url, "AUTHSIDECAR_CONFIG": str(config)}, cwd=tmp_path
            ).returncode
            == 0
        )
    finally:
        (drop_pg_database if database == "postgres" else drop_mariadb_database)(url)


def test_mariadb_type_change_is_found(tmp_path: Path) -> None:
    url = create_mariadb_database("authsidecar_types")
    try:
        config = tmp_path / "types.toml"
        config.write_text('[schema.user.additional_fields.pref]\ntype = "string"\nrequired = false\n')
        env = {"DATABASE_URL": url, "AUTHSIDECAR_CONFIG": str(config)}
        assert cli("migrate", env=env, cwd=tmp_path).returncode == 0
        config.write_text('[schema.user.additional_fields.pref]\ntype = "json"\nrequired = false\n')
        check = cli("migrate", "--check", env=env, cwd=tmp_path)
        assert check.returncode == 1 and "user.pref is TEXT in the database but the schema needs json" in check.stdout
    finally:
        drop_mariadb_database(url)


def test_sqlite_cannot_switch_to_database_ids_after_the_first_migrate(tmp_path: Path) -> None:
    env = {"AUTHSIDECAR_SQLITE_PATH": str(tmp_path / "ids.db")}
    assert cli("migrate", env=env, cwd=tmp_path).returncode == 0
    check = cli("migrate", "--check", env=configured(env, tmp_path, "database-ids"), cwd=tmp_path)
    assert check.returncode == 1 and "user.id has no default but generate_id asks the database" in check.stdout
