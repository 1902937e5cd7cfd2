"""The two_factor plugin side by side with a real Better Auth app (better-auth 1.7.25 with its ``twoFactor`` plugin,
tests/better_auth/app.mjs with BA_TWO_FACTOR=1) on one Postgres database and Redis, the same Better Auth secret:
``authsidecar migrate`` makes the schema both need, and a user enrolled on either side completes a two-factor
sign-in on the other, with a TOTP code (computed here from the otpauth URI) or a backup code, each side spending
the backup codes the other wrote. In the three storage modes of test_better_auth; and across a rotation of the
secret (BETTER_AUTH_SECRETS), for values written before and after it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2

from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import session_service_pb2 as session_pb
from authsidecar_client.v1 import two_factor_service_pb2 as tf_pb
from authsidecar_client.v1 import two_factor_service_pb2_grpc as tf_grpc
from tests.better_auth.harness import SECRET, BetterAuthApp, Reply
from tests.conftest import REDIS_URL, create_pg_database, drop_pg_database, run_sync
from tests.e2e.conftest import Server, Stubs, clean_env, error_details, free_port, start_server, stubs_for

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
]

SERVING = health_pb2.HealthCheckResponse.SERVING
PASSWORD = "correct horse battery"
ISSUER = "Acme Co"  # app.mjs gives Better Auth's twoFactor plugin the same issuer
PLUGIN_TOML = f'[plugins.two_factor]\nissuer = "{ISSUER}"\n'
MODES = {"sql+redis": (True, True), "redis-only": (True, False), "sql-only": (False, True)}
SESSION_COOKIE = "better-auth.session_token"
TWO_FACTOR_COOKIE = "better-auth.two_factor"
# A rotation: Better Auth's key set, current first, with BETTER_AUTH_SECRET (the harness's SECRET) kept as the
# legacy secret that still reads the bare-hex values written before.
CURRENT_SECRET = "better-auth-rotated-secret-" + "0123456789abcdef" * 2
RETIRED_SECRET = "better-auth-retired-secret-" + "76543210fedcba98" * 2
ROTATED = {"BETTER_AUTH_SECRETS": f"2:{CURRENT_SECRET},1:{RETIRED_SECRET}", "BETTER_AUTH_SECRET": SECRET}


def totp(secret_b32: str, step: int = 0) -> str:
    """RFC 6238 TOTP (HMAC-SHA1 over the base32-decoded secret, 6 digits, 30 s) of the current step + ``step``."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    counter = int(time.time() // 30) + step
    mac = hmac.new(key, counter.to_bytes(8, "big"), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    return f"{(int.from_bytes(mac[offset : offset + 4], 'big') & 0x7FFFFFFF) % 1_000_000:06d}"


def steady(margin: float = 5.0) -> None:
    """Wait, if need be, until ``margin`` seconds are left in the current 30-second step: codes computed now are
    checked within the same step (the step offsets -1/0/+1 then mean what they say on both sides)."""
    left = 30 - time.time() % 30
    if left < margin:
        time.sleep(left + 0.2)


def secret_of(uri: str) -> str:
    """The base32 secret of an otpauth URI."""
    return parse_qs(urlsplit(uri).query)["secret"][0]


def _migrate(folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authsidecar", "migrate"],
        cwd=folder,
        env={**clean_env(), **env},
        capture_output=True,
        text=True,
        check=False,
    )


def _plan(app: BetterAuthApp) -> dict[str, Any]:
    """What Better Auth's getMigrations would still change in the database (app.mjs GET /test/migrations)."""
    with urllib.request.urlopen(f"{app.base}/test/migrations", timeout=30) as response:  # noqa: S310 - local
        plan: dict[str, Any] = json.loads(response.read())
    return plan


def _nothing_to_do(plan: dict[str, Any]) -> bool:
    keys = ("toBeCreated", "toBeAdded", "toBeAddedIndexes", "unsafeChanges", "schemaProblems", "warnings")
    return all(plan[key] == [] for key in keys)


@contextlib.contextmanager
def two_factor_database(folder: Path) -> Iterator[tuple[str, Path]]:
    """A fresh Postgres database migrated by ``authsidecar migrate`` with the plugin, and that configuration file;
    dropped after."""
    url = create_pg_database("authsidecar_2fa_ba")
    config = folder / "two-factor.toml"
    config.write_text(PLUGIN_TOML)
    try:
        migrated = _migrate(folder, {"DATABASE_URL": url, "AUTHSIDECAR_CONFIG": str(config)})
        assert migrated.returncode == 0, migrated.stderr
        yield url, config
    finally:
        drop_pg_database(url)


@dataclass
class Pair:
    """A Better Auth app with twoFactor and an authsidecar server with two_factor, on one database and Redis."""

    mode: str
    app: BetterAuthApp
    server: Server
    url: str


@contextlib.contextmanager
def running_pair(
    mode: str, folder: Path, database: tuple[str, Path], secret_env: dict[str, str] | None = None
) -> Iterator[Pair]:
    """The app and the server on ``database`` and a fresh Redis prefix, both with the Better Auth secret
    (``secret_env`` adds to or replaces it on both sides); stopped, and the prefix emptied, after."""
    use_redis, in_sql = MODES[mode]
    url, config = database
    prefix = f"authsidecar-test-2fa-ba-{secrets.token_hex(4)}:"
    app: BetterAuthApp | None = None
    server: Server | None = None
    try:
        app_env = {
            "BA_DATABASE_URL": url,
            "BA_REDIS_URL": REDIS_URL if use_redis else "",
            "BA_REDIS_PREFIX": prefix,
            "BA_STORE_SESSION_IN_DATABASE": "1" if in_sql else "0",
            "BA_TWO_FACTOR": "1",
            **(secret_env or {}),
        }
        app = BetterAuthApp(free_port(), app_env, folder / f"better-auth-{prefix[:-1]}.log")
        env = {
            "DATABASE_URL": url,
            "AUTHSIDECAR_CONFIG": str(config),
            "AUTHSIDECAR_COMPAT": "better-auth",
            "BETTER_AUTH_SECRET": SECRET,
            "AUTHSIDECAR_STORE_SESSION_IN_DATABASE": "true" if in_sql else "false",
            **(secret_env or {}),
        }
        if use_redis:
            env |= {"REDIS_URL": REDIS_URL, "AUTHSIDECAR_REDIS_KEY_PREFIX": prefix}
        server = start_server(folder, env)
        server.wait_for(SERVING)
        yield Pair(mode, app, server, url)
    finally:
        if server is not None:
            assert server.stop() == 0, server.log()
        if app is not None:
            app.stop()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(scope="module", params=list(MODES))
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    folder = tmp_path_factory.mktemp("two-factor-better-auth")
    with two_factor_database(folder) as database, running_pair(request.param, folder, database) as running:
        yield running


@dataclass
class TwoFactorStubs:
    base: Stubs
    two_factor: tf_grpc.TwoFactorServiceStub


@pytest.fixture
async def stubs(pair: Pair) -> AsyncIterator[TwoFactorStubs]:
    base = stubs_for(pair.server.address)
    yield TwoFactorStubs(base, tf_grpc.TwoFactorServiceStub(base.channel))
    await base.channel.close()


async def _reason(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        details = error_details(exc)
        return details.code, details.reason
    raise AssertionError("the call succeeded")


def _email() -> str:
    return f"mfa-ba-{secrets.token_hex(5)}@example.com"


def _session_cookie(value: str) -> str:
    return f"{SESSION_COOKIE}={value}"


def _app_challenge(pair: Pair, email: str) -> str:
    """Sign in on the app with the password: it answers twoFactorRedirect and sets its two_factor cookie (no
    session); returns that cookie, for verify-totp or verify-backup-code."""
    reply = pair.app.call("POST", "/sign-in/email", {"email": email, "password": PASSWORD})
    assert reply.status == 200, reply
    assert reply.body == {"twoFactorRedirect": True, "twoFactorMethods": ["totp"]}, reply.body
    assert not reply.cookie(SESSION_COOKIE)  # the password's session was deleted and its cookie expired
    challenge = reply.cookie(TWO_FACTOR_COOKIE)
    assert challenge
    return f"{TWO_FACTOR_COOKIE}={challenge}"


def _app_signed_in(pair: Pair, reply: Reply, user_id: str) -> str:
    """The session a successful verify-totp / verify-backup-code on the app opened (its token): the app's cookie
    works on the app."""
    assert reply.status == 200, reply
    assert reply.body["user"]["id"] == user_id and reply.body["user"]["twoFactorEnabled"] is True
    cookie = reply.cookie(SESSION_COOKIE)
    assert cookie and unquote(cookie).startswith(reply.body["token"] + ".")
    seen = pair.app.session(cookie)
    assert seen is not None and seen["user"]["id"] == user_id
    token: str = reply.body["token"]
    return token


async def _challenge(s: TwoFactorStubs, email: str) -> str:
    """Sign in here with the password: a challenge instead of a session."""
    reply = await s.base.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))
    assert reply.challenge.token and not reply.token and not reply.HasField("session"), reply
    assert list(reply.challenge.methods) == ["totp", "backup_code"]
    return reply.challenge.token


@dataclass
class Enrolled:
    email: str
    user_id: str
    secret: str  # base32, from the otpauth URI
    codes: list[str]


@contextlib.asynccontextmanager
async def _stubs_of(pair: Pair) -> AsyncIterator[TwoFactorStubs]:
    base = stubs_for(pair.server.address)
    try:
        yield TwoFactorStubs(base, tf_grpc.TwoFactorServiceStub(base.channel))
    finally:
        await base.channel.close()


async def _enrol_here(s: TwoFactorStubs) -> Enrolled:
    email = _email()
    up = await s.base.auth.SignUp(auth_pb.SignUpRequest(email=email, password=PASSWORD, name="Enrolled Here"))
    enabled = await s.two_factor.EnableTwoFactor(tf_pb.EnableTwoFactorRequest(token=up.token, password=PASSWORD))
    secret = secret_of(enabled.totp_uri)
    steady()
    await s.two_factor.ConfirmTwoFactor(tf_pb.ConfirmTwoFactorRequest(token=up.token, code=totp(secret, step=-1)))
    return Enrolled(email, up.user.id, secret, list(enabled.backup_codes))


def _enrol_on_app(pair: Pair) -> Enrolled:
    email = _email()
    up = pair.app.call("POST", "/sign-up/email", {"email": email, "password": PASSWORD, "name": "Enrolled There"})
    assert up.status == 200, up
    cookie = _session_cookie(up.cookie() or "")
    enabled = pair.app.call("POST", "/two-factor/enable", {"password": PASSWORD}, cookie)
    assert enabled.status == 200, enabled
    secret = secret_of(enabled.body["totpURI"])
    steady()
    verified = pair.app.call("POST", "/two-factor/verify-totp", {"code": totp(secret, step=-1)}, cookie)
    assert verified.status == 200, verified
    return Enrolled(email, up.body["user"]["id"], secret, enabled.body["backupCodes"])


def _stored(url: str, user_id: str) -> tuple[str, str]:
    """The user's twoFactor.secret and twoFactor.backupCodes as stored."""

    async def read() -> tuple[str, str]:
        conn = await asyncpg.connect(url)
        try:
            row = await conn.fetchrow('SELECT "secret", "backupCodes" FROM "twoFactor" WHERE "userId" = $1', user_id)
        finally:
            await conn.close()
        assert row is not None
        return row["secret"], row["backupCodes"]

    return run_sync(read())


async def _both_sides_accept(pair: Pair, s: TwoFactorStubs, user: Enrolled) -> None:
    """Here first (the app's verify-totp would rewrite the row), then on the app: a TOTP code on each side; backup
    code 0 spent here, 1 on the app (which reads what we rewrote), 2 here (which reads what the app rewrote)."""
    challenge = await _challenge(s, user.email)
    steady()
    here = await s.two_factor.VerifyTotp(tf_pb.VerifyTotpRequest(challenge=challenge, code=totp(user.secret, step=1)))
    assert here.user.id == user.user_id
    steady()
    there = pair.app.call(
        "POST", "/two-factor/verify-totp", {"code": totp(user.secret)}, _app_challenge(pair, user.email)
    )
    _app_signed_in(pair, there, user.user_id)
    for index, side in enumerate(["here", "app", "here"]):
        if side == "app":
            call = {"code": user.codes[index]}
            used = pair.app.call("POST", "/two-factor/verify-backup-code", call, _app_challenge(pair, user.email))
            _app_signed_in(pair, used, user.user_id)
        else:
            request = tf_pb.VerifyBackupCodeRequest(challenge=await _challenge(s, user.email), code=user.codes[index])
            assert (await s.two_factor.VerifyBackupCode(request)).user.id == user.user_id


def test_migrate_makes_the_schema_better_auth_wants(tmp_path: Path) -> None:
    """The core schema alone: Better Auth's getMigrations wants twoFactor and user.twoFactorEnabled; after
    ``authsidecar migrate`` with the plugin, nothing (no table, column or index missing, no type or nullability
    warning)."""
    url = create_pg_database("authsidecar_2fa_ba_schema")
    try:
        assert _migrate(tmp_path, {"DATABASE_URL": url}).returncode == 0
        app = BetterAuthApp(
            free_port(),
            {"BA_DATABASE_URL": url, "BA_REDIS_URL": "", "BA_STORE_SESSION_IN_DATABASE": "1", "BA_TWO_FACTOR": "1"},
            tmp_path / "better-auth.log",
        )
        try:
            before = _plan(app)
            assert before["toBeCreated"] == ["twoFactor"], before
            assert before["toBeAdded"] == [{"table": "user", "fields": ["twoFactorEnabled"]}], before
            config = tmp_path / "two-factor.toml"
            config.write_text(PLUGIN_TOML)
            migrated = _migrate(tmp_path, {"DATABASE_URL": url, "AUTHSIDECAR_CONFIG": str(config)})
            assert migrated.returncode == 0, migrated.stderr
            after = _plan(app)
            assert _nothing_to_do(after), after
        finally:
            app.stop()
    finally:
        drop_pg_database(url)


def test_better_auth_finds_the_schema_complete(pair: Pair) -> None:
    plan = _plan(pair.app)
    assert _nothing_to_do(plan), plan


async def test_enrolled_here_signs_in_on_the_app(pair: Pair, stubs: TwoFactorStubs) -> None:
    email = _email()
    up = await stubs.base.auth.SignUp(auth_pb.SignUpRequest(email=email, password=PASSWORD, name="Enrolled Here"))
    enabled = await stubs.two_factor.EnableTwoFactor(tf_pb.EnableTwoFactorRequest(token=up.token, password=PASSWORD))
    secret = secret_of(enabled.totp_uri)
    codes = list(enabled.backup_codes)
    steady()
    confirmed = await stubs.two_factor.ConfirmTwoFactor(
        tf_pb.ConfirmTwoFactorRequest(token=up.token, code=totp(secret))
    )
    assert confirmed.user.additional_fields["twoFactorEnabled"] is True

    # The app reads the secret we encrypted: the URI it shows is ours, to the byte, but for the issuer (better-auth
    # 1.7.25's get-totp-uri ignores the plugin's `issuer`, which only /two-factor/enable uses, and shows appName).
    uri = pair.app.call("POST", "/two-factor/get-totp-uri", {"password": PASSWORD}, _session_cookie(up.session_cookie))
    assert uri.status == 200, uri
    as_the_app_names_it = enabled.totp_uri.replace("/Acme%20Co:", "/Better%20Auth:", 1)
    assert uri.body["totpURI"] == as_the_app_names_it.replace("&issuer=Acme+Co&", "&issuer=Better+Auth&", 1)

    # The app's sign-in asks for the second factor; a wrong code is refused, the right one signs in.
    challenge = _app_challenge(pair, email)
    steady()
    wrong = pair.app.call("POST", "/two-factor/verify-totp", {"code": totp(secret, step=5)}, challenge)
    assert (wrong.status, wrong.body["code"]) == (401, "INVALID_CODE"), wrong
    done = pair.app.call("POST", "/two-factor/verify-totp", {"code": totp(secret, step=1)}, challenge)
    token = _app_signed_in(pair, done, up.user.id)
    valid = await stubs.base.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=token))
    assert valid.user.id == up.user.id

    # A backup code we made signs in on the app, which spends it in a value we read.
    challenge = _app_challenge(pair, email)
    used = pair.app.call("POST", "/two-factor/verify-backup-code", {"code": codes[0]}, challenge)
    _app_signed_in(pair, used, up.user.id)
    here = await _challenge(stubs, email)
    spent = stubs.two_factor.VerifyBackupCode(tf_pb.VerifyBackupCodeRequest(challenge=here, code=codes[0]))
    assert await _reason(spent) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TWO_FACTOR_CODE")
    other = await stubs.two_factor.VerifyBackupCode(tf_pb.VerifyBackupCodeRequest(challenge=here, code=codes[1]))
    assert other.token and other.user.id == up.user.id
    assert pair.app.session(other.session_cookie)["user"]["id"] == up.user.id

    # The app's generate-backup-codes, on the session from before enrolment (whose user the app reads from its
    # session store, which we updated), takes the user as enrolled; the new codes work here, the old do not.
    fresh = pair.app.call(
        "POST", "/two-factor/generate-backup-codes", {"password": PASSWORD}, _session_cookie(up.session_cookie)
    )
    assert fresh.status == 200, fresh
    here = await _challenge(stubs, email)
    old = stubs.two_factor.VerifyBackupCode(tf_pb.VerifyBackupCodeRequest(challenge=here, code=codes[2]))
    assert (await _reason(old))[1] == "INVALID_TWO_FACTOR_CODE"
    new = await stubs.two_factor.VerifyBackupCode(
        tf_pb.VerifyBackupCodeRequest(challenge=here, code=fresh.body["backupCodes"][0])
    )
    assert new.token


async def test_enrolled_on_the_app_signs_in_here(pair: Pair, stubs: TwoFactorStubs) -> None:
    email = _email()
    up = pair.app.call("POST", "/sign-up/email", {"email": email, "password": PASSWORD, "name": "Enrolled There"})
    assert up.status == 200, up
    user_id = up.body["user"]["id"]
    cookie = _session_cookie(up.cookie() or "")
    enabled = pair.app.call("POST", "/two-factor/enable", {"password": PASSWORD}, cookie)
    assert enabled.status == 200, enabled
    assert enabled.body["method"] == "totp" and enabled.body["totpURI"].startswith("otpauth://totp/")
    assert unquote(urlsplit(enabled.body["totpURI"]).path) == f"/{ISSUER}:{email}"
    secret = secret_of(enabled.body["totpURI"])
    codes: list[str] = enabled.body["backupCodes"]

    # Enrolled but not yet verified: the password alone still signs in here.
    plain = await stubs.base.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))
    assert plain.token and not plain.HasField("challenge")

    steady()
    verified = pair.app.call("POST", "/two-factor/verify-totp", {"code": totp(secret)}, cookie)
    assert verified.status == 200, verified
    assert pair.app.session(verified.cookie() or "")["user"]["twoFactorEnabled"] is True

    # Here the password now yields a challenge, which a code from the app's secret completes.
    challenge = await _challenge(stubs, email)
    steady()
    done = await stubs.two_factor.VerifyTotp(tf_pb.VerifyTotpRequest(challenge=challenge, code=totp(secret)))
    assert done.token and done.user.id == user_id
    assert done.user.additional_fields["twoFactorEnabled"] is True
    seen = pair.app.session(done.session_cookie)
    assert seen is not None and seen["session"]["id"] == done.session.id
    again = stubs.base.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))
    assert (await again).challenge.token  # still a challenge: the sign-in above did not turn it off
    already = stubs.two_factor.EnableTwoFactor(tf_pb.EnableTwoFactorRequest(token=done.token, password=PASSWORD))
    assert (await _reason(already))[1] == "TWO_FACTOR_ALREADY_ENABLED"

    # A backup code the app made signs in here; we spend it in a value the app reads.
    challenge = await _challenge(stubs, email)
    used = await stubs.two_factor.VerifyBackupCode(tf_pb.VerifyBackupCodeRequest(challenge=challenge, code=codes[0]))
    assert used.token and used.user.id == user_id
    app_challenge = _app_challenge(pair, email)
    spent = pair.app.call("POST", "/two-factor/verify-backup-code", {"code": codes[0]}, app_challenge)
    assert (spent.status, spent.body["code"]) == (401, "INVALID_BACKUP_CODE"), spent
    other = pair.app.call("POST", "/two-factor/verify-backup-code", {"code": codes[1]}, app_challenge)
    _app_signed_in(pair, other, user_id)

    # Backup codes we replace are the ones the app accepts.
    fresh = await stubs.two_factor.GenerateBackupCodes(
        tf_pb.GenerateBackupCodesRequest(token=done.token, password=PASSWORD)
    )
    app_challenge = _app_challenge(pair, email)
    old = pair.app.call("POST", "/two-factor/verify-backup-code", {"code": codes[2]}, app_challenge)
    assert (old.status, old.body["code"]) == (401, "INVALID_BACKUP_CODE"), old
    new = pair.app.call("POST", "/two-factor/verify-backup-code", {"code": fresh.backup_codes[0]}, app_challenge)
    _app_signed_in(pair, new, user_id)


async def test_a_row_from_before_the_verified_column_counts_as_verified(pair: Pair, stubs: TwoFactorStubs) -> None:
    """twoFactor.verified came with better-auth 1.6 (#8711), nullable: rows enrolled before it may hold NULL (our
    migrate adds the column without a default), which Better Auth reads as verified (``verified !== false``)."""
    user = _enrol_on_app(pair)

    async def forget_verified() -> None:
        conn = await asyncpg.connect(pair.url)
        try:
            await conn.execute('UPDATE "twoFactor" SET "verified" = NULL WHERE "userId" = $1', user.user_id)
        finally:
            await conn.close()

    run_sync(forget_verified())
    await _both_sides_accept(pair, stubs, user)


async def test_a_rotated_secret_reads_what_was_written_before_and_after(tmp_path: Path) -> None:
    """Enrolled on either side under BETTER_AUTH_SECRET (bare hex); both restarted with a key set
    (BETTER_AUTH_SECRETS, BETTER_AUTH_SECRET kept as the legacy secret): those users still sign in on both sides,
    and users enrolled now (``$ba$2$`` envelopes) too."""
    with two_factor_database(tmp_path) as database:
        with running_pair("sql+redis", tmp_path, database) as before:
            async with _stubs_of(before) as s:
                old_here = await _enrol_here(s)
            old_there = _enrol_on_app(before)
        for user in (old_here, old_there):
            assert all(not value.startswith("$") for value in _stored(database[0], user.user_id))
        with running_pair("sql+redis", tmp_path, database, ROTATED) as after:
            async with _stubs_of(after) as s:
                new_here = await _enrol_here(s)
                new_there = _enrol_on_app(after)
                for user in (new_here, new_there):
                    assert all(value.startswith("$ba$2$") for value in _stored(database[0], user.user_id))
                for user in (old_here, old_there, new_here, new_there):
                    await _both_sides_accept(after, s, user)
            for user in (old_here, old_there):  # the backup codes were rewritten under the current key
                assert _stored(database[0], user.user_id)[1].startswith("$ba$2$")


def test_a_server_without_the_plugin_refuses_an_app_that_uses_two_factor(tmp_path: Path) -> None:
    """The app's users may have two-factor authentication on: a compat server without the plugin would let a
    password alone sign them in, so it does not start."""
    with two_factor_database(tmp_path) as (url, _config):
        env = {"DATABASE_URL": url, "AUTHSIDECAR_COMPAT": "better-auth", "BETTER_AUTH_SECRET": SECRET}
        server = start_server(tmp_path, env)
        assert server.process.wait(30) == 1, server.log()
        assert "enable the plugin" in server.log() and "twoFactorEnabled" in server.log()
