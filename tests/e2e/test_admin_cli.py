"""The admin CLI (``authsidecar users ...``, ``authsidecar sessions ...``) run as a subprocess against the database a
real server uses, on Postgres + Redis and on the embedded SQLite file with the in-process cache: users it creates
sign in through gRPC; its revocations (set-password, sessions revoke, delete, disable) hold through the server at
once with Redis and within the invalidation bound without it; verify-email is seen by ValidateSession; the admin
plugin's ban refuses sign-in with BANNED_USER until lifted or expired; hooks see its writes; output never carries a
password, hash or token; bad input gets one line on stderr and the documented exit code."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2

from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import session_service_pb2 as session_pb
from authsidecar_client.v1 import two_factor_service_pb2 as tf_pb
from authsidecar_client.v1 import two_factor_service_pb2_grpc as tf_grpc
from tests.conftest import REDIS_URL, create_pg_database, drop_pg_database, run_sync
from tests.e2e.conftest import FAST_ARGON2_ENV, Server, Stubs, clean_env, error_details, start_server, stubs_for
from tests.e2e.test_two_factor import totp

ROOT = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING
PASSWORD = "correct horse battery"
BOUND = 1.0  # AUTHSIDECAR_INVALIDATION_BOUND of the servers (the default)


def run_cli(folder: Path, env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``python -m authsidecar <args>`` with ``env`` on top of a clean environment; stdin is not a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "authsidecar", *args],
        cwd=folder,
        env={**clean_env(), **FAST_ARGON2_ENV, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The output of a command that must succeed quietly."""
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    assert result.stderr == "", result.stderr
    return result.stdout


def failed(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    """A refusal: exit ``code``, nothing on stdout, one line on stderr naming the problem, no traceback."""
    assert result.returncode == code, (result.args, result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("authsidecar"), result.stderr
    assert fragment in lines[0], lines[0]
    assert result.stdout == ""


def new_email(tag: str) -> str:
    return f"{tag}-{secrets.token_hex(4)}@example.com"


@dataclass
class Backend:
    """A migrated database with the admin plugin, a server on it, and what the CLI needs to use the same ones."""

    name: str
    folder: Path
    env: dict[str, str]
    server: Server

    @property
    def immediate(self) -> bool:
        """Revocations are seen at once (Redis documents dropped by the CLI, NOTIFY), else within the bound."""
        return "REDIS_URL" in self.env

    def cli(self, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(self.folder, {**self.env, **(env or {})}, *args, stdin=stdin)

    def sql_set_ban_expiry(self, email: str, expires: datetime) -> None:
        """Move a ban's end directly in SQL (as another writer would)."""
        update = 'UPDATE "user" SET "banExpires" = {} WHERE email = {}'
        if "DATABASE_URL" in self.env:

            async def write() -> None:
                conn = await asyncpg.connect(self.env["DATABASE_URL"])
                try:
                    await conn.execute(update.format("$1", "$2"), expires, email)
                finally:
                    await conn.close()

            run_sync(write())
            return
        with sqlite3.connect(self.env["AUTHSIDECAR_SQLITE_PATH"]) as db:  # naive UTC text, as SQLAlchemy stores it
            db.execute(update.format("?", "?"), (expires.replace(tzinfo=None).isoformat(sep=" "), email))


@pytest.fixture(scope="module", params=["postgres+redis", "sqlite+memory"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    folder = tmp_path_factory.mktemp("admin-cli")
    config = folder / "admin.toml"
    config.write_text("[plugins.two_factor]\n[plugins.admin]\n")  # two gates, the one that refuses asked last
    pg_url = prefix = None
    if request.param == "postgres+redis":
        pg_url = create_pg_database("authsidecar_admin")
        prefix = f"authsidecar-admin-{secrets.token_hex(6)}:"
        env = {"DATABASE_URL": pg_url, "REDIS_URL": REDIS_URL, "AUTHSIDECAR_REDIS_KEY_PREFIX": prefix}
    else:
        env = {"AUTHSIDECAR_SQLITE_PATH": str(folder / "authsidecar.db")}
    env["AUTHSIDECAR_CONFIG"] = str(config)
    migrated = run_cli(folder, env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    server = start_server(folder, env)
    try:
        server.wait_for(SERVING)
        yield Backend(request.param, folder, env, server)
    finally:
        assert server.stop() == 0, server.log()
        if pg_url is not None:
            drop_pg_database(pg_url)
        if prefix is not None:
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()


@pytest.fixture
async def stubs(backend: Backend) -> AsyncIterator[Stubs]:
    stubs = stubs_for(backend.server.address)
    yield stubs
    await stubs.channel.close()


async def sign_in(stubs: Stubs, email: str, password: str = PASSWORD) -> str:
    return (await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=password))).token


async def validate(stubs: Stubs, token: str) -> session_pb.ValidateSessionResponse:
    return await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=token))


async def refused(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call  # type: ignore[misc]
    details = error_details(exc.value)
    return details.code, details.reason


async def gone(backend: Backend, stubs: Stubs, token: str) -> None:
    """The session no longer validates: at once with Redis (the revocation guarantee for the instance that wrote,
    which the CLI's Redis deletion and Postgres' NOTIFY extend to the server), else within the bound."""
    deadline = time.monotonic() + (0 if backend.immediate else BOUND + 0.5)
    while time.monotonic() < deadline:
        try:
            await validate(stubs, token)
        except grpc.aio.AioRpcError:
            break
        await asyncio.sleep(0.05)
    assert await refused(validate(stubs, token)) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")


def create(backend: Backend, email: str, *extra: str, password: str | None = PASSWORD) -> str:
    """Create a user by CLI (the password on stdin); returns its id."""
    args = ["users", "create", "--email", email, "--name", "Ada", *extra, "--json"]
    if password is not None:
        args.append("--password-stdin")
    out = ok(backend.cli(*args, stdin=f"{password}\n" if password is not None else ""))
    assert PASSWORD not in out
    user = json.loads(out)
    assert not {"password", "token"} & set(user)
    return str(user["id"])


async def test_a_user_created_by_the_cli_signs_in(backend: Backend, stubs: Stubs) -> None:
    email = new_email("created")
    out = ok(
        backend.cli("users", "create", "--email", email.upper(), "--name", "Ada", "--password-stdin", stdin=PASSWORD)
    )
    assert out.startswith("created user ") and f"<{email}>" in out and PASSWORD not in out
    current = await validate(stubs, await sign_in(stubs, email))
    assert current.user.email == email and not current.user.email_verified
    assert out.split()[2] == current.user.id

    verified = new_email("verified")
    user_id = create(backend, verified, "--verified")
    current = await validate(stubs, await sign_in(stubs, verified))
    assert current.user.id == user_id and current.user.email_verified
    assert current.user.additional_fields["banned"] is False  # the admin plugin's field, with its default

    nopass = new_email("nopass")
    create(backend, nopass, password=None)  # no credential account: a password reset sets one
    assert await refused(sign_in(stubs, nopass, "anything at all")) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_EMAIL_OR_PASSWORD",
    )
    assert '"hasPassword": false' in ok(backend.cli("users", "show", "--email", nopass, "--json"))


async def test_set_password_revokes_live_sessions_like_a_reset(backend: Backend, stubs: Stubs) -> None:
    email = new_email("setpw")
    user_id = create(backend, email)
    token = await sign_in(stubs, email)
    await validate(stubs, token)
    await validate(stubs, token)  # served from the cache by now

    out = ok(backend.cli("users", "set-password", "--email", email, "--password-stdin", stdin="a brand new horse\n"))
    assert "1 session(s) revoked" in out and "brand new" not in out
    await gone(backend, stubs, token)
    assert (await refused(sign_in(stubs, email)))[1] == "INVALID_EMAIL_OR_PASSWORD"
    token = await sign_in(stubs, email, "a brand new horse")

    out = ok(backend.cli("users", "set-password", "--id", user_id, "--password", PASSWORD, "--keep-sessions"))
    assert "sessions kept" in out
    await validate(stubs, token)
    await sign_in(stubs, email)


async def test_sessions_are_listed_and_revoked_by_id_or_all(backend: Backend, stubs: Stubs) -> None:
    email = new_email("sessions")
    user_id = create(backend, email)
    first, second = await sign_in(stubs, email), await sign_in(stubs, email)
    first_id = (await validate(stubs, first)).session.id
    second_id = (await validate(stubs, second)).session.id

    listed = ok(backend.cli("sessions", "list", "--email", email, "--json"))
    sessions = json.loads(listed)["sessions"]
    assert {s["id"] for s in sessions} == {first_id, second_id}
    assert all("token" not in s for s in sessions) and first not in listed and second not in listed
    human = ok(backend.cli("sessions", "list", "--user-id", user_id)).splitlines()
    assert len(human) == 2 and {line.split()[0] for line in human} == {first_id, second_id}

    assert "revoked session" in ok(backend.cli("sessions", "revoke", "--user-id", user_id, "--session-id", first_id))
    await gone(backend, stubs, first)
    await validate(stubs, second)
    failed(backend.cli("sessions", "revoke", "--user-id", user_id, "--session-id", first_id), 1, "no session")

    assert "revoked 1 session(s)" in ok(backend.cli("sessions", "revoke", "--email", email, "--all"))
    await gone(backend, stubs, second)
    assert ok(backend.cli("sessions", "list", "--email", email)) == ""


async def test_verify_email_is_seen_by_validate_session(backend: Backend, stubs: Stubs) -> None:
    email = new_email("verify")
    create(backend, email)
    token = await sign_in(stubs, email)
    assert not (await validate(stubs, token)).user.email_verified

    assert "is now verified" in ok(backend.cli("users", "verify-email", "--email", email))
    deadline = time.monotonic() + (0 if backend.immediate else BOUND + 0.5)
    while not (await validate(stubs, token)).user.email_verified:
        assert time.monotonic() < deadline, "ValidateSession still shows the old user"
        await asyncio.sleep(0.05)
    assert "was already verified" in ok(backend.cli("users", "verify-email", "--email", email))


async def test_delete_asks_for_yes_then_removes_user_and_sessions(backend: Backend, stubs: Stubs) -> None:
    email = new_email("delete")
    user_id = create(backend, email)
    token = await sign_in(stubs, email)
    failed(backend.cli("users", "delete", "--email", email), 2, "--yes")
    await validate(stubs, token)

    assert f"deleted user {user_id}" in ok(backend.cli("users", "delete", "--id", user_id, "--yes"))
    await gone(backend, stubs, token)
    assert (await refused(sign_in(stubs, email)))[1] == "INVALID_EMAIL_OR_PASSWORD"
    failed(backend.cli("users", "show", "--email", email), 1, "no user with email")
    failed(backend.cli("users", "delete", "--id", user_id, "--yes"), 1, "no user with id")


async def test_list_pages_filters_and_prints_json_without_secrets(backend: Backend, stubs: Stubs) -> None:
    tag = f"list{secrets.token_hex(3)}"
    emails = [f"{tag}-{i}@example.com" for i in range(3)]
    ids = [create(backend, email, password=PASSWORD if i else None) for i, email in enumerate(emails)]
    await sign_in(stubs, emails[1])

    first = ok(backend.cli("users", "list", "--email-prefix", tag.upper(), "--limit", "2")).splitlines()
    assert [line.split()[:2] for line in first[:2]] == [[ids[0], emails[0]], [ids[1], emails[1]]]
    assert first[2].startswith(f"more: authsidecar users list --limit 2 --email-prefix {tag.upper()} --after ")
    cursor = first[2].rsplit(" ", 1)[1]
    rest = ok(backend.cli("users", "list", "--email-prefix", tag, "--limit", "2", "--after", cursor)).splitlines()
    assert [line.split()[0] for line in rest] == [ids[2]]

    page = json.loads(ok(backend.cli("users", "list", "--email-prefix", tag, "--json")))
    assert [u["email"] for u in page["users"]] == emails and page["next"] is None
    assert all(set(u) >= {"id", "email", "name", "emailVerified", "createdAt", "banned"} for u in page["users"])

    shown = ok(backend.cli("users", "show", "--id", ids[1], "--json"))
    user = json.loads(shown)
    assert (user["email"], user["hasPassword"], user["activeSessions"]) == (emails[1], True, 1)
    assert not {"password", "token"} & set(user) and "$argon2" not in shown and "$scrypt" not in shown
    human = ok(backend.cli("users", "show", "--email", emails[0]))
    assert f"id: {ids[0]}" in human and "password: none" in human and "banned: no" in human


async def test_disable_bans_and_revokes_enable_lifts(backend: Backend, stubs: Stubs) -> None:
    email = new_email("banned")
    create(backend, email)
    token = await sign_in(stubs, email)
    await validate(stubs, token)

    out = ok(backend.cli("users", "disable", "--email", email, "--reason", "spam"))
    assert "is banned" in out and "1 session(s) revoked" in out
    await gone(backend, stubs, token)
    assert await refused(sign_in(stubs, email)) == (grpc.StatusCode.PERMISSION_DENIED, "BANNED_USER")
    assert "banned: yes (until enabled again; reason: spam)" in ok(backend.cli("users", "show", "--email", email))
    listed = json.loads(ok(backend.cli("users", "list", "--email-prefix", email, "--json")))["users"]
    assert (listed[0]["banned"], listed[0]["banReason"]) == (True, "spam")

    assert "may sign in again" in ok(backend.cli("users", "enable", "--email", email))
    current = await validate(stubs, await sign_in(stubs, email))
    assert current.user.additional_fields["banned"] is False

    out = ok(backend.cli("users", "disable", "--email", email, "--until", "2099-01-31"))
    assert "banned until 2099-01-31T00:00:00.000Z" in out
    assert (await refused(sign_in(stubs, email)))[1] == "BANNED_USER"
    backend.sql_set_ban_expiry(email, datetime.now(UTC) - timedelta(seconds=1))  # the ban's end passed
    await sign_in(stubs, email)  # an expired ban no longer counts
    assert "banned: no (the ban expired at" in ok(backend.cli("users", "show", "--email", email))

    failed(
        backend.cli("users", "disable", "--email", email, "--until", "2001-01-01"), 1, "until: must be in the future"
    )
    failed(backend.cli("users", "disable", "--email", email, "--until", "soon"), 2, "--until")


async def test_a_ban_ends_two_factor_challenges_and_comes_before_them(backend: Backend, stubs: Stubs) -> None:
    email = new_email("mfa")
    create(backend, email)
    token = await sign_in(stubs, email)
    two_factor = tf_grpc.TwoFactorServiceStub(stubs.channel)
    enabled = await two_factor.EnableTwoFactor(tf_pb.EnableTwoFactorRequest(token=token, password=PASSWORD))
    secret = parse_qs(urlsplit(enabled.totp_uri).query)["secret"][0]
    await two_factor.ConfirmTwoFactor(tf_pb.ConfirmTwoFactorRequest(token=token, code=totp(secret)))
    codes = list(enabled.backup_codes)

    challenge = (await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))).challenge.token
    assert challenge
    ok(backend.cli("users", "disable", "--email", email))
    late = two_factor.VerifyBackupCode(tf_pb.VerifyBackupCodeRequest(challenge=challenge, code=codes[0]))
    assert await refused(late) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")  # the challenge died with the ban
    assert (await refused(sign_in(stubs, email)))[1] == "BANNED_USER"  # no challenge for a banned user

    ok(backend.cli("users", "enable", "--email", email))
    challenge = (await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))).challenge.token
    done = await two_factor.VerifyBackupCode(tf_pb.VerifyBackupCodeRequest(challenge=challenge, code=codes[0]))
    await validate(stubs, done.token)


async def test_disable_without_the_admin_plugin_says_how_to_enable_it(backend: Backend) -> None:
    plain = backend.folder / "plain.toml"
    plain.write_text("")
    email = new_email("noplugin")
    create(backend, email)
    result = backend.cli("users", "disable", "--email", email, env={"AUTHSIDECAR_CONFIG": str(plain)})
    failed(result, 2, "needs the admin plugin: add [plugins.admin]")
    assert "authsidecar migrate" in result.stderr


# -------------------------------------------------------------------------- no server needed: the embedded database


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A migrated SQLite file of its own (no server), with a Python before hook on user.create."""
    folder = tmp_path_factory.mktemp("admin-cli-embedded")
    (folder / "adminhooks.py").write_text(
        "from authsidecar.hooks import HookAbort\n\n\n"
        "def check(data, context):\n"
        '    if context.rpc != "cli users create":\n'
        '        raise HookAbort(f"unexpected rpc {context.rpc}")\n'
        '    if not data["email"].endswith("@example.com"):\n'
        '        raise HookAbort("only example.com addresses may sign up", "PERMISSION_DENIED")\n'
        '    return {"name": data["name"].title()}\n'
    )
    config = folder / "hooks.toml"
    config.write_text('[[hooks]]\nevents = ["user.create"]\nwhen = "before"\ncall = "adminhooks:check"\n')
    env = {
        "AUTHSIDECAR_SQLITE_PATH": str(folder / "authsidecar.db"),
        "AUTHSIDECAR_CONFIG": str(config),
        "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]),
    }
    assert run_cli(folder, env, "migrate").returncode == 0
    return folder, env


def test_hooks_see_and_may_refuse_the_cli_writes(embedded: tuple[Path, dict[str, str]]) -> None:
    folder, env = embedded
    refused_create = run_cli(folder, env, "users", "create", "--email", "eve@other.example.org", "--name", "Eve")
    failed(refused_create, 1, "only example.com addresses may sign up")
    out = ok(
        run_cli(folder, env, "users", "create", "--email", new_email("hooked"), "--name", "ada lovelace", "--json")
    )
    assert json.loads(out)["name"] == "Ada Lovelace"


@pytest.mark.parametrize(
    ("args", "stdin", "code", "fragment"),
    [
        (["users", "create", "--email", "not-an-email", "--name", "X"], "", 1, "email: is not a valid email address"),
        (["users", "create", "--email", "x@example.com", "--name", "X", "--password", "short"], "", 1, "at least 8"),
        (["users", "create", "--email", "x@example.com", "--name", "A\x1b[2J"], "", 1, "name: must not contain"),
        (["users", "create", "--email", "x@example.com", "--name", "X", "--field", "role=1"], "", 1, "role"),
        (["users", "create", "--email", "x@example.com"], "", 2, "required: --name"),
        (
            ["users", "create", "--email", "x@example.com", "--name", "X", "--password", "a", "--password-stdin"],
            "",
            2,
            "not allowed",
        ),
        (["users", "show", "--id", "nobody"], "", 1, "no user with id 'nobody'"),
        (["users", "show", "--id", "a", "--email", "b@example.com"], "", 2, "not allowed with argument"),
        (["users", "show"], "", 2, "one of the arguments --id --email is required"),
        (["users", "set-password", "--email", "nobody@example.com"], "", 2, "--password-stdin"),
        (["users", "set-password", "--email", "nobody@example.com", "--password-stdin"], "long enough\n", 1, "no user"),
        (["users", "list", "--after", "not-a-cursor"], "", 1, "after: is not a cursor"),
        (["users", "list", "--limit", "0"], "", 1, "limit: must be between 1 and 1000"),
        (["users", "list", "--limit", "many"], "", 2, "invalid int value"),
        (["users", "frobnicate"], "", 2, "invalid choice"),
        (["sessions", "revoke", "--user-id", "u"], "", 2, "--session-id --all"),
        (["sessions", "revoke", "--email", "nobody@example.com", "--all"], "", 1, "no user with email"),
    ],
)
def test_bad_input_gets_one_line_and_the_exit_code(
    embedded: tuple[Path, dict[str, str]], args: list[str], stdin: str, code: int, fragment: str
) -> None:
    folder, env = embedded
    failed(run_cli(folder, env, *args, stdin=stdin), code, fragment)


def test_an_unmigrated_database_or_bad_settings_are_configuration_errors(tmp_path: Path) -> None:
    fresh = {"AUTHSIDECAR_SQLITE_PATH": str(tmp_path / "fresh.db")}
    failed(run_cli(tmp_path, fresh, "users", "list"), 2, "run `authsidecar migrate`")
    failed(run_cli(tmp_path, {**fresh, "AUTHSIDECAR_PASSWORD_MIN_LENGTH": "zero"}, "users", "list"), 2, "PASSWORD_MIN")
    missing = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/authsidecar_admin_does_not_exist"}
    failed(run_cli(tmp_path, missing, "users", "list"), 2, "does not exist")


def test_the_readme_examples_run(tmp_path: Path) -> None:
    """The ```sh block of the README's "Admin CLI" section, pasted into a shell in order."""
    section = (ROOT / "README.md").read_text().split("## Admin CLI\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert found, "README: no ```sh example under 'Admin CLI'"
    script = found.group(1).replace("A=.venv/bin/authsidecar", f"A='{sys.executable} -m authsidecar'")
    (tmp_path / "admin.toml").write_text("[plugins.admin]\n")
    env = {"AUTHSIDECAR_SQLITE_PATH": str(tmp_path / "a.db"), "AUTHSIDECAR_CONFIG": str(tmp_path / "admin.toml")}
    assert run_cli(tmp_path, env, "migrate").returncode == 0
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env={**clean_env(), **FAST_ARGON2_ENV, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ran.returncode == 0, (ran.stdout, ran.stderr)
    assert ran.stderr == "" and "correct horse" not in ran.stdout and "deleted user" in ran.stdout
