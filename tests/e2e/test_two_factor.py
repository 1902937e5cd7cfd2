"""The two_factor plugin through the real server, with codes computed here (RFC 6238): enrolment, the sign-in
challenge, TOTP and backup codes, wrong codes and attempt limits, replay, disabling; its service in reflection; its
tables renamed by configuration, created by migrate, shown by generate, checked by migrate --check."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import session_service_pb2 as session_pb
from authsidecar_client.v1 import two_factor_service_pb2 as tf_pb
from authsidecar_client.v1 import two_factor_service_pb2_grpc as tf_grpc
from tests.better_auth.harness import token_in_log
from tests.conftest import REDIS_URL, create_pg_database, drop_pg_database, run_sync
from tests.e2e.conftest import Server, Stubs, clean_env, error_details, start_server, stubs_for

pytestmark = [pytest.mark.postgres]

SERVING = health_pb2.HealthCheckResponse.SERVING
PASSWORD = "correct horse battery"
PLUGIN_TOML = '[plugins.two_factor]\nissuer = "Acme Co"\n'
RENAMED_TOML = """
[plugins.two_factor]
issuer = "Acme Co"
[plugins.two_factor.schema.two_factor]
model_name = "mfa_factors"
fields = { secret = "totp_secret", backup_codes = "recovery_codes" }
[plugins.two_factor.schema.user]
fields = { twoFactorEnabled = "has_mfa" }
"""


def totp(secret_b32: str, at: float | None = None, step: int = 0) -> str:
    """RFC 6238 TOTP (HMAC-SHA1, 6 digits, 30 s), computed here from the otpauth URI's secret."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    counter = int((time.time() if at is None else at) // 30) + step
    mac = hmac.new(key, counter.to_bytes(8, "big"), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    return f"{(int.from_bytes(mac[offset : offset + 4], 'big') & 0x7FFFFFFF) % 1_000_000:06d}"


def _migrate(folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authsidecar", "migrate", *args],
        cwd=folder,
        env={**clean_env(), **env},
        capture_output=True,
        text=True,
        check=False,
    )


@dataclass
class TwoFactorStubs:
    base: Stubs
    two_factor: tf_grpc.TwoFactorServiceStub


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A Postgres database of its own, migrated with the plugin enabled."""
    url = create_pg_database("authsidecar_2fa")
    folder = tmp_path_factory.mktemp("two-factor")
    config = folder / "two-factor.toml"
    config.write_text(PLUGIN_TOML)
    migrated = _migrate(folder, {"DATABASE_URL": url, "AUTHSIDECAR_CONFIG": str(config)})
    assert migrated.returncode == 0, migrated.stderr
    yield url, config
    drop_pg_database(url)


@pytest.fixture(scope="module")
def server(database: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory, redis_prefix: str) -> Iterator[Server]:
    url, config = database
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": REDIS_URL,
        "AUTHSIDECAR_REDIS_KEY_PREFIX": redis_prefix,
        "AUTHSIDECAR_CONFIG": str(config),
        "AUTHSIDECAR_AUTO_SIGN_IN_AFTER_VERIFICATION": "true",  # links must not bypass the second factor
    }
    srv = start_server(tmp_path_factory.mktemp("two-factor-server"), env)
    srv.wait_for(SERVING)
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture
async def stubs(server: Server) -> AsyncIterator[TwoFactorStubs]:
    base = stubs_for(server.address)
    yield TwoFactorStubs(base, tf_grpc.TwoFactorServiceStub(base.channel))
    await base.channel.close()


async def _fails(call: object) -> tuple[grpc.StatusCode, str, float | None]:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call  # type: ignore[misc]
    details = error_details(exc.value)
    return details.code, details.reason, details.retry_delay


@dataclass
class Enrolled:
    email: str
    token: str
    secret: str
    codes: list[str]


async def _enrolled(s: TwoFactorStubs) -> Enrolled:
    """A new user with two-factor authentication on."""
    email = f"mfa-{secrets.token_hex(5)}@example.com"
    up = await s.base.auth.SignUp(auth_pb.SignUpRequest(email=email, password=PASSWORD, name="Mfa"))
    enabled = await s.two_factor.EnableTwoFactor(tf_pb.EnableTwoFactorRequest(token=up.token, password=PASSWORD))
    secret = parse_qs(urlsplit(enabled.totp_uri).query)["secret"][0]
    confirmed = await s.two_factor.ConfirmTwoFactor(tf_pb.ConfirmTwoFactorRequest(token=up.token, code=totp(secret)))
    assert confirmed.user.additional_fields["twoFactorEnabled"] is True
    return Enrolled(email, up.token, secret, list(enabled.backup_codes))


async def _challenge(s: TwoFactorStubs, email: str) -> str:
    reply = await s.base.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))
    assert reply.challenge.token and not reply.token and not reply.HasField("session") and not reply.HasField("user")
    assert reply.challenge.kind == "two_factor" and list(reply.challenge.methods) == ["totp", "backup_code"]
    assert reply.challenge.expires_at.ToSeconds() > time.time() + 500
    return reply.challenge.token


async def test_enrolment_then_sign_in_needs_a_totp_code(stubs: TwoFactorStubs) -> None:
    email = f"mfa-{secrets.token_hex(5)}@example.com"
    up = await stubs.base.auth.SignUp(auth_pb.SignUpRequest(email=email, password=PASSWORD, name="Mfa"))
    wrong_password = stubs.two_factor.EnableTwoFactor(
        tf_pb.EnableTwoFactorRequest(token=up.token, password="nope-nope")
    )
    assert (await _fails(wrong_password))[1] == "INVALID_PASSWORD"
    enabled = await stubs.two_factor.EnableTwoFactor(tf_pb.EnableTwoFactorRequest(token=up.token, password=PASSWORD))
    uri = urlsplit(enabled.totp_uri)
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert unquote(uri.path) == f"/Acme Co:{email}"
    query = parse_qs(uri.query)
    assert query["issuer"] == ["Acme Co"] and query["digits"] == ["6"] and query["period"] == ["30"]
    assert len(enabled.backup_codes) == 10 and all(len(c) == 11 and c[5] == "-" for c in enabled.backup_codes)
    # Not on until confirmed: the password alone still signs in.
    plain = await stubs.base.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))
    assert plain.token and not plain.HasField("challenge")
    secret = query["secret"][0]
    wrong = stubs.two_factor.ConfirmTwoFactor(tf_pb.ConfirmTwoFactorRequest(token=up.token, code="000000"))
    assert (await _fails(wrong))[:2] == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TWO_FACTOR_CODE")
    await stubs.two_factor.ConfirmTwoFactor(tf_pb.ConfirmTwoFactorRequest(token=up.token, code=totp(secret)))
    again = stubs.two_factor.EnableTwoFactor(tf_pb.EnableTwoFactorRequest(token=up.token, password=PASSWORD))
    assert (await _fails(again))[1] == "TWO_FACTOR_ALREADY_ENABLED"

    challenge = await _challenge(stubs, email)
    bad = stubs.two_factor.VerifyTotp(tf_pb.VerifyTotpRequest(challenge=challenge, code="123456"))
    assert (await _fails(bad))[:2] == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TWO_FACTOR_CODE")
    replayed = stubs.two_factor.VerifyTotp(tf_pb.VerifyTotpRequest(challenge=challenge, code=totp(secret)))
    assert (await _fails(replayed))[1] == "INVALID_TWO_FACTOR_CODE"  # the code ConfirmTwoFactor used: once only
    done = await stubs.two_factor.VerifyTotp(tf_pb.VerifyTotpRequest(challenge=challenge, code=totp(secret, step=1)))
    assert done.token and done.user.email == email
    valid = await stubs.base.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=done.token))
    assert valid.session.id == done.session.id
    used = stubs.two_factor.VerifyTotp(tf_pb.VerifyTotpRequest(challenge=challenge, code=totp(secret, step=-1)))
    assert (await _fails(used))[:2] == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")


async def test_backup_codes_work_once_and_can_be_replaced(stubs: TwoFactorStubs) -> None:
    user = await _enrolled(stubs)
    done = await stubs.two_factor.VerifyBackupCode(
        tf_pb.VerifyBackupCodeRequest(challenge=await _challenge(stubs, user.email), code=user.codes[0])
    )
    assert done.token
    spent = stubs.two_factor.VerifyBackupCode(
        tf_pb.VerifyBackupCodeRequest(challenge=await _challenge(stubs, user.email), code=user.codes[0])
    )
    assert (await _fails(spent))[1] == "INVALID_TWO_FACTOR_CODE"
    fresh = await stubs.two_factor.GenerateBackupCodes(
        tf_pb.GenerateBackupCodesRequest(token=user.token, password=PASSWORD)
    )
    assert len(fresh.backup_codes) == 10 and not set(fresh.backup_codes) & set(user.codes)
    old = stubs.two_factor.VerifyBackupCode(
        tf_pb.VerifyBackupCodeRequest(challenge=await _challenge(stubs, user.email), code=user.codes[1])
    )
    assert (await _fails(old))[1] == "INVALID_TWO_FACTOR_CODE"
    new = await stubs.two_factor.VerifyBackupCode(
        tf_pb.VerifyBackupCodeRequest(challenge=await _challenge(stubs, user.email), code=fresh.backup_codes[3])
    )
    assert new.token


async def test_a_challenge_takes_five_wrong_codes_and_a_user_ten_in_a_row(stubs: TwoFactorStubs) -> None:
    user = await _enrolled(stubs)
    challenge = await _challenge(stubs, user.email)
    for _ in range(5):
        wrong = stubs.two_factor.VerifyTotp(tf_pb.VerifyTotpRequest(challenge=challenge, code="111111"))
        assert (await _fails(wrong))[1] == "INVALID_TWO_FACTOR_CODE"
    gone = stubs.two_factor.VerifyTotp(tf_pb.VerifyTotpRequest(challenge=challenge, code=totp(user.secret, step=1)))
    assert (await _fails(gone))[1] == "INVALID_TOKEN"  # used up, even with the right code
    challenge = await _challenge(stubs, user.email)
    for _ in range(4):  # the tenth wrong code in a row (any challenge) locks two-factor sign-in
        wrong = stubs.two_factor.VerifyTotp(tf_pb.VerifyTotpRequest(challenge=challenge, code="222222"))
        assert (await _fails(wrong))[1] == "INVALID_TWO_FACTOR_CODE"
    challenge = await _challenge(stubs, user.email)
    wrong = stubs.two_factor.VerifyTotp(tf_pb.VerifyTotpRequest(challenge=challenge, code="333333"))
    assert (await _fails(wrong))[1] == "INVALID_TWO_FACTOR_CODE"
    locked = stubs.two_factor.VerifyTotp(tf_pb.VerifyTotpRequest(challenge=challenge, code=totp(user.secret, step=1)))
    code, reason, retry = await _fails(locked)
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TWO_FACTOR_LOCKED")
    assert retry is not None and 800 < retry <= 900
    backup = stubs.two_factor.VerifyBackupCode(tf_pb.VerifyBackupCodeRequest(challenge=challenge, code=user.codes[0]))
    assert (await _fails(backup))[1] == "TWO_FACTOR_LOCKED"  # every second factor, while locked


async def test_wrong_confirmations_after_enrolment_never_lock_sign_in(stubs: TwoFactorStubs) -> None:
    """With a stolen session token, ConfirmTwoFactor was a way to test codes and, eleven wrong ones later, to lock
    the owner's two-factor sign-in for 15 minutes. Once two-factor is on, it no longer looks at the code."""
    user = await _enrolled(stubs)
    for _ in range(11):
        wrong = stubs.two_factor.ConfirmTwoFactor(tf_pb.ConfirmTwoFactorRequest(token=user.token, code="444444"))
        assert (await _fails(wrong))[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "TWO_FACTOR_ALREADY_ENABLED")
    right = stubs.two_factor.ConfirmTwoFactor(
        tf_pb.ConfirmTwoFactorRequest(token=user.token, code=totp(user.secret, step=1))
    )
    assert (await _fails(right))[1] == "TWO_FACTOR_ALREADY_ENABLED"  # not an oracle either: the same answer
    challenge = await _challenge(stubs, user.email)
    done = await stubs.two_factor.VerifyTotp(
        tf_pb.VerifyTotpRequest(challenge=challenge, code=totp(user.secret, step=-1))
    )
    assert done.token  # the owner's sign-in is not locked


async def test_disabling_restores_password_sign_in(stubs: TwoFactorStubs) -> None:
    user = await _enrolled(stubs)
    wrong = stubs.two_factor.DisableTwoFactor(tf_pb.DisableTwoFactorRequest(token=user.token, password="wrong-wrong"))
    assert (await _fails(wrong))[1] == "INVALID_PASSWORD"
    off = await stubs.two_factor.DisableTwoFactor(tf_pb.DisableTwoFactorRequest(token=user.token, password=PASSWORD))
    assert off.user.additional_fields["twoFactorEnabled"] is False
    signed_in = await stubs.base.auth.SignIn(auth_pb.SignInRequest(email=user.email, password=PASSWORD))
    assert signed_in.token and not signed_in.HasField("challenge")
    again = stubs.two_factor.DisableTwoFactor(tf_pb.DisableTwoFactorRequest(token=user.token, password=PASSWORD))
    assert (await _fails(again))[1] == "TWO_FACTOR_NOT_ENABLED"
    codes = stubs.two_factor.GenerateBackupCodes(tf_pb.GenerateBackupCodesRequest(token=user.token, password=PASSWORD))
    assert (await _fails(codes))[1] == "TWO_FACTOR_NOT_ENABLED"


async def _verify_link(server: Server, email: str) -> str:
    """The token of the verification link the server logged for ``email`` (delivery is in the background)."""
    for _ in range(200):
        if f"verify-email message for {email}" in server.log():
            break
        await asyncio.sleep(0.05)
    return token_in_log(server.log(), "verify-email", email)


async def test_a_verification_link_does_not_sign_a_two_factor_user_in(server: Server, stubs: TwoFactorStubs) -> None:
    user = await _enrolled(stubs)  # enrolled before verifying the address
    await stubs.base.auth.SendVerificationEmail(auth_pb.SendVerificationEmailRequest(email=user.email))
    verified = await stubs.base.auth.VerifyEmail(
        auth_pb.VerifyEmailRequest(token=await _verify_link(server, user.email))
    )
    assert verified.user.email_verified and not verified.token and not verified.HasField("session")
    plain = f"plain-{secrets.token_hex(5)}@example.com"  # without two-factor authentication, the link signs in
    await stubs.base.auth.SignUp(auth_pb.SignUpRequest(email=plain, password=PASSWORD, name="Plain"))
    await stubs.base.auth.SendVerificationEmail(auth_pb.SendVerificationEmailRequest(email=plain))
    signed_in = await stubs.base.auth.VerifyEmail(auth_pb.VerifyEmailRequest(token=await _verify_link(server, plain)))
    assert signed_in.token


async def test_bad_requests_get_invalid_argument(stubs: TwoFactorStubs) -> None:
    empty = stubs.two_factor.VerifyTotp(tf_pb.VerifyTotpRequest(challenge="", code=""))
    assert (await _fails(empty))[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "MISSING_FIELD")
    long = stubs.two_factor.VerifyTotp(tf_pb.VerifyTotpRequest(challenge="x" * 40, code="1" * 100))
    assert (await _fails(long))[0] == grpc.StatusCode.INVALID_ARGUMENT
    unknown = stubs.two_factor.VerifyTotp(tf_pb.VerifyTotpRequest(challenge="x" * 40, code="123456"))
    assert (await _fails(unknown))[1] == "INVALID_TOKEN"


def test_the_service_is_in_reflection(server: Server) -> None:
    with grpc.insecure_channel(server.address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert "authsidecar.v1.TwoFactorService" in services


def test_secrets_and_backup_codes_are_encrypted_at_rest(database: tuple[str, Path], server: Server) -> None:
    async def rows() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database[0])
        try:
            return list(await conn.fetch('SELECT "secret", "backupCodes" FROM "twoFactor"'))
        finally:
            await conn.close()

    found = run_sync(rows())
    assert found
    for row in found:
        assert all(c in "0123456789abcdef" for c in row["secret"]) and len(row["secret"]) > 100
        assert "-" not in row["backupCodes"] and "[" not in row["backupCodes"]


def test_generate_and_migrate_check_with_renamed_plugin_tables(tmp_path: Path) -> None:
    config = tmp_path / "renamed.toml"
    config.write_text(RENAMED_TOML)
    env = {**clean_env(), "AUTHSIDECAR_CONFIG": str(config)}
    generated = subprocess.run(
        [sys.executable, "-m", "authsidecar", "generate"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "CREATE TABLE mfa_factors" in generated or 'CREATE TABLE "mfa_factors"' in generated
    assert "totp_secret" in generated and "recovery_codes" in generated and "has_mfa" in generated
    assert "twoFactor" not in generated
    url = create_pg_database("authsidecar_2fa_renamed")
    try:
        plain = _migrate(tmp_path, {"DATABASE_URL": url})  # the core schema only
        assert plain.returncode == 0, plain.stderr
        db_env = {"DATABASE_URL": url, "AUTHSIDECAR_CONFIG": str(config)}
        check = _migrate(tmp_path, db_env, "--check")
        assert check.returncode == 1 and "mfa_factors" in check.stdout and "has_mfa" in check.stdout, check.stdout
        refused = start_server(tmp_path, db_env)  # an unmigrated plugin schema stops start-up with the hint
        assert refused.process.wait(20) == 1 and "authsidecar migrate" in refused.log()
        assert _migrate(tmp_path, db_env).returncode == 0
        check = _migrate(tmp_path, db_env, "--check")
        assert check.returncode == 0, check.stdout

        async def columns() -> dict[str, set[str]]:
            conn = await asyncpg.connect(url)
            try:
                rows = await conn.fetch(
                    "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
                )
            finally:
                await conn.close()
            out: dict[str, set[str]] = {}
            for row in rows:
                out.setdefault(row["table_name"], set()).add(row["column_name"])
            return out

        found = run_sync(columns())
        assert {"id", "totp_secret", "recovery_codes", "userId", "verified"} <= found["mfa_factors"]
        assert "has_mfa" in found["user"]
        server = start_server(tmp_path, {**db_env, "REDIS_URL": REDIS_URL})
        try:
            server.wait_for(SERVING)
            run_sync(_renamed_flow(server.address))
        finally:
            assert server.stop() == 0, server.log()
    finally:
        drop_pg_database(url)


async def _renamed_flow(address: str) -> None:
    base = stubs_for(address)
    try:
        user = await _enrolled(TwoFactorStubs(base, tf_grpc.TwoFactorServiceStub(base.channel)))
        reply = await base.auth.SignIn(auth_pb.SignInRequest(email=user.email, password=PASSWORD))
        assert reply.challenge.token
    finally:
        await base.channel.close()


async def test_the_python_client_signs_in_with_a_second_factor(server: Server) -> None:
    from authsidecar_client import AuthClient, AuthSidecarError

    email = f"client-{secrets.token_hex(5)}@example.com"
    async with AuthClient(server.address) as auth:
        token = (await auth.sign_up(email, PASSWORD, name="Client")).token
        enrolment = await auth.enable_two_factor(token, PASSWORD, issuer="Py")
        secret = parse_qs(urlsplit(enrolment.totp_uri).query)["secret"][0]
        assert (await auth.confirm_two_factor(token, totp(secret))).additional_fields["twoFactorEnabled"] is True
        signed_in = await auth.sign_in(email, PASSWORD)
        assert signed_in.HasField("challenge")
        with pytest.raises(AuthSidecarError) as wrong:
            await auth.verify_totp(signed_in.challenge.token, "000000")
        assert wrong.value.reason == "INVALID_TWO_FACTOR_CODE"
        done = await auth.verify_totp(signed_in.challenge.token, totp(secret, step=1))
        assert (await auth.validate_session(done.token)).user.email == email
        codes = await auth.generate_backup_codes(done.token, PASSWORD)
        again = await auth.sign_in(email, PASSWORD)
        assert (await auth.verify_backup_code(again.challenge.token, codes[0])).token
        assert (await auth.disable_two_factor(done.token, PASSWORD)).additional_fields["twoFactorEnabled"] is False


async def test_one_code_signs_in_once_even_when_sent_to_many_challenges_at_once(stubs: TwoFactorStubs) -> None:
    user = await _enrolled(stubs)
    challenges = [await _challenge(stubs, user.email) for _ in range(6)]
    code = totp(user.secret, step=1)
    calls = [stubs.two_factor.VerifyTotp(tf_pb.VerifyTotpRequest(challenge=c, code=code)) for c in challenges]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    sessions = [o for o in outcomes if isinstance(o, tf_pb.VerifyTotpResponse)]
    assert len(sessions) == 1, outcomes
    refused = [error_details(o).reason for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert refused == ["INVALID_TWO_FACTOR_CODE"] * 5


async def test_concurrent_wrong_codes_cannot_outrun_the_lock(stubs: TwoFactorStubs) -> None:
    user = await _enrolled(stubs)
    challenges = [await _challenge(stubs, user.email) for _ in range(24)]
    calls = [stubs.two_factor.VerifyTotp(tf_pb.VerifyTotpRequest(challenge=c, code="999999")) for c in challenges]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    reasons = [error_details(o).reason for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(reasons) == 24
    assert reasons.count("INVALID_TWO_FACTOR_CODE") == 10  # exactly max_failures codes were looked at
    assert reasons.count("TWO_FACTOR_LOCKED") == 14


async def test_a_challenge_dies_with_the_password_it_was_won_with(stubs: TwoFactorStubs) -> None:
    user = await _enrolled(stubs)
    challenge = await _challenge(stubs, user.email)
    await stubs.base.auth.ChangePassword(
        auth_pb.ChangePasswordRequest(token=user.token, current_password=PASSWORD, new_password=PASSWORD + "!")
    )
    stale = stubs.two_factor.VerifyBackupCode(tf_pb.VerifyBackupCodeRequest(challenge=challenge, code=user.codes[0]))
    assert (await _fails(stale))[1] == "INVALID_TOKEN"


def test_totp_digits_and_period_follow_the_options(tmp_path: Path, database: tuple[str, Path]) -> None:
    config = tmp_path / "eight.toml"
    config.write_text('[plugins.two_factor]\nissuer = "Acme Co"\ndigits = 8\nperiod = 60\n')
    srv = start_server(tmp_path, {"DATABASE_URL": database[0], "AUTHSIDECAR_CONFIG": str(config)})
    try:
        srv.wait_for(SERVING)
        run_sync(_eight_digit_flow(srv.address))
    finally:
        assert srv.stop() == 0, srv.log()


async def _eight_digit_flow(address: str) -> None:
    from authsidecar_client import AuthClient

    email = f"eight-{secrets.token_hex(5)}@example.com"
    async with AuthClient(address) as auth:
        token = (await auth.sign_up(email, PASSWORD, name="Eight")).token
        uri = (await auth.enable_two_factor(token, PASSWORD)).totp_uri
        query = parse_qs(urlsplit(uri).query)
        assert (query["digits"], query["period"]) == (["8"], ["60"])
        key = base64.b32decode(query["secret"][0] + "=" * (-len(query["secret"][0]) % 8))
        mac = hmac.new(key, int(time.time() // 60).to_bytes(8, "big"), hashlib.sha1).digest()
        offset = mac[-1] & 0x0F
        code = f"{(int.from_bytes(mac[offset : offset + 4], 'big') & 0x7FFFFFFF) % 100_000_000:08d}"
        await auth.confirm_two_factor(token, code)
