"""Side by side with a real Better Auth app (better-auth 1.7.25 under Node, tests/better_auth/app.mjs) on the same
Postgres database and Redis: users, sessions, cookies, revocations, resets and email verification cross over
both ways. Three storage modes, as a Better Auth app can be configured: sessions in SQL and Redis
(storeSessionInDatabase), in Redis only (Better Auth's default with secondary storage), in SQL only (no Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, unquote

import asyncpg
import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2

from authsidecar_client import AuthClient, AuthSidecarError
from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import session_service_pb2 as session_pb
from tests.better_auth.harness import SCRYPT_HASH, SECRET, BetterAuthApp, token_in_log
from tests.conftest import REDIS_URL, create_pg_database, drop_pg_database, migrate
from tests.e2e.conftest import RedisProcess, Server, Stubs, error_details, free_port, start_server, stubs_for
from tests.e2e.test_grpcurl import grpcurl

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
]

SERVING = health_pb2.HealthCheckResponse.SERVING
PASSWORD = "correct horse battery"
NEW_PASSWORD = "another horse battery"
MODES = {"sql+redis": (True, True), "redis-only": (True, False), "sql-only": (False, True)}
REDIS_MODES = ["sql+redis", "redis-only"]  # the modes with Redis documents


@dataclass
class Pair:
    """A Better Auth app and an authsidecar server sharing one database and Redis."""

    mode: str
    app: BetterAuthApp
    server: Server
    prefix: str
    url: str

    @property
    def redis(self) -> bool:
        return MODES[self.mode][0]


@contextlib.contextmanager
def running_pair(
    mode: str,
    folder: Path,
    app_options: dict[str, object] | None = None,
    server_env: dict[str, str] | None = None,
    app_env: dict[str, str] | None = None,
    redis_url: str = REDIS_URL,
) -> Iterator[Pair]:
    """A fresh database and Redis prefix, a Better Auth app and an authsidecar server on them; all removed after."""
    use_redis, in_sql = MODES[mode]
    url = create_pg_database("authsidecar_ba")
    prefix = f"authsidecar-test-ba-{secrets.token_hex(4)}:"
    app: BetterAuthApp | None = None
    server: Server | None = None
    try:
        migrate(url)
        app_env = {
            "BA_DATABASE_URL": url,
            "BA_REDIS_URL": redis_url if use_redis else "",
            "BA_REDIS_PREFIX": prefix,
            "BA_STORE_SESSION_IN_DATABASE": "1" if in_sql else "0",
            "BA_OPTIONS": json.dumps(app_options or {}),
            **(app_env or {}),
        }
        app = BetterAuthApp(free_port(), app_env, folder / f"better-auth-{prefix[:-1]}.log")
        env = {
            "DATABASE_URL": url,
            "AUTHSIDECAR_COMPAT": "better-auth",
            "BETTER_AUTH_SECRET": SECRET,
            "AUTHSIDECAR_STORE_SESSION_IN_DATABASE": "true" if in_sql else "false",
            **(server_env or {}),
        }
        if use_redis:
            env |= {"REDIS_URL": redis_url, "AUTHSIDECAR_REDIS_KEY_PREFIX": prefix}
        server = start_server(folder, env)
        server.wait_for(SERVING)
        yield Pair(mode, app, server, prefix, url)
    finally:
        if server is not None:
            assert server.stop() == 0, server.log()
        if app is not None:
            app.stop()
        drop_pg_database(url)
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(scope="module", params=list(MODES))
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with running_pair(request.param, tmp_path_factory.mktemp("better-auth")) as running:
        yield running


@pytest.fixture
async def stubs(pair: Pair) -> AsyncIterator[Stubs]:
    s = stubs_for(pair.server.address)
    yield s
    await s.channel.close()


def _email() -> str:
    return f"ba-{secrets.token_hex(5)}@example.com"


async def _reason(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        details = error_details(exc)
        return details.code, details.reason
    raise AssertionError("the call succeeded")


def _app_sign_up(pair: Pair, email: str) -> tuple[str, str]:
    """Sign up through Better Auth; returns (token, cookie value)."""
    reply = pair.app.call("POST", "/sign-up/email", {"email": email, "password": PASSWORD, "name": "From App"})
    assert reply.status == 200, reply
    cookie = reply.cookie()
    assert cookie is not None
    return reply.body["token"], cookie


async def test_app_user_signs_in_here_and_app_accepts_the_cookie(pair: Pair, stubs: Stubs) -> None:
    email = _email()
    _app_sign_up(pair, email)
    signed_in = await stubs.auth.SignIn(auth_pb.SignInRequest(email=email.upper(), password=PASSWORD))
    assert signed_in.user.email == email
    assert len(signed_in.token) == 32 and signed_in.token.isalnum()
    assert unquote(signed_in.session_cookie).startswith(signed_in.token + ".")
    seen = pair.app.session(signed_in.session_cookie)
    assert seen is not None and seen["session"]["id"] == signed_in.session.id
    assert seen["user"]["email"] == email
    wrong = stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=NEW_PASSWORD))
    assert await _reason(wrong) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_EMAIL_OR_PASSWORD")


async def test_app_session_validates_from_token_cookie_value_and_header(pair: Pair, stubs: Stubs) -> None:
    email = _email()
    token, cookie = _app_sign_up(pair, email)
    forms = [
        session_pb.ValidateSessionRequest(token=token),
        session_pb.ValidateSessionRequest(token=cookie),
        session_pb.ValidateSessionRequest(token=unquote(cookie)),
        session_pb.ValidateSessionRequest(cookie=f"theme=dark; better-auth.session_token={cookie}; other=1"),
        session_pb.ValidateSessionRequest(cookie=f"__Secure-better-auth.session_token={cookie}"),
    ]
    for request in forms:
        reply = await stubs.sessions.ValidateSession(request)
        assert reply.user.email == email, request
    signature = unquote(cookie).rpartition(".")[2]
    forged = quote(f"{token}.{signature[:10]}{'A' if signature[10] != 'A' else 'B'}{signature[11:]}", safe="")
    for request in [
        session_pb.ValidateSessionRequest(token=forged),
        session_pb.ValidateSessionRequest(cookie=f"better-auth.session_token={forged}"),
        session_pb.ValidateSessionRequest(cookie="better-auth.other=1"),
        session_pb.ValidateSessionRequest(token=secrets.token_hex(16)),
    ]:
        call = stubs.sessions.ValidateSession(request)
        assert await _reason(call) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN"), request
    both = stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=token, cookie="a=b"))
    assert (await _reason(both))[0] == grpc.StatusCode.INVALID_ARGUMENT


async def test_user_made_here_signs_in_through_the_app(pair: Pair, stubs: Stubs) -> None:
    email = _email()
    made = await stubs.auth.SignUp(auth_pb.SignUpRequest(email=email, password=PASSWORD, name="From Sidecar"))
    seen = pair.app.session(made.session_cookie)
    assert seen is not None and seen["user"]["id"] == made.user.id and seen["user"]["name"] == "From Sidecar"
    reply = pair.app.call("POST", "/sign-in/email", {"email": email, "password": PASSWORD})
    assert reply.status == 200, reply
    assert (await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=reply.body["token"]))).user.id
    listed = await stubs.sessions.ListSessions(session_pb.ListSessionsRequest(token=made.token))
    assert len(listed.sessions) == 2


async def test_revocations_cross_over_at_once(pair: Pair, stubs: Stubs) -> None:
    email = _email()
    token, cookie = _app_sign_up(pair, email)
    ours = await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))
    # The app signs its session out: gone here at once.
    assert pair.app.call("POST", "/sign-out", {}, cookie=f"better-auth.session_token={cookie}").status == 200
    call = stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=token))
    assert await _reason(call) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")
    # We sign ours out: gone for the app at once.
    assert pair.app.session(ours.session_cookie) is not None
    await stubs.auth.SignOut(auth_pb.SignOutRequest(token=ours.session_cookie))
    assert pair.app.session(ours.session_cookie) is None
    # The app revokes every session of the user (revoked-sessions-before with Redis): ours too.
    ours = await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))
    app_cookie = pair.app.call("POST", "/sign-in/email", {"email": email, "password": PASSWORD}).cookie()
    assert app_cookie is not None
    revoked = pair.app.call("POST", "/revoke-sessions", {}, cookie=f"better-auth.session_token={app_cookie}")
    assert revoked.status == 200, revoked
    call = stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=ours.token))
    assert await _reason(call) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")
    # We revoke every session: the app's too.
    app_cookie = pair.app.call("POST", "/sign-in/email", {"email": email, "password": PASSWORD}).cookie()
    assert app_cookie is not None
    ours = await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))
    count = await stubs.sessions.RevokeSessions(session_pb.RevokeSessionsRequest(token=ours.token))
    assert count.revoked_count == 2
    assert pair.app.session(app_cookie) is None
    # One session by id.
    app_cookie = pair.app.call("POST", "/sign-in/email", {"email": email, "password": PASSWORD}).cookie()
    assert app_cookie is not None
    app_session = pair.app.session(app_cookie)
    ours = await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))
    await stubs.sessions.RevokeSession(
        session_pb.RevokeSessionRequest(token=ours.token, session_id=app_session["session"]["id"])
    )
    assert pair.app.session(app_cookie) is None
    assert (await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=ours.token))).user.id


async def test_profile_changes_cross_over(pair: Pair, stubs: Stubs) -> None:
    email = _email()
    _, cookie = _app_sign_up(pair, email)
    ours = await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))
    updated = pair.app.call(
        "POST", "/update-user", {"name": "Renamed By App"}, cookie=f"better-auth.session_token={cookie}"
    )
    assert updated.status == 200, updated
    seen = await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=ours.token))
    assert seen.user.name == "Renamed By App"
    await stubs.auth.UpdateUser(auth_pb.UpdateUserRequest(token=ours.token, name="Renamed Here"))
    assert pair.app.session(cookie)["user"]["name"] == "Renamed Here"


async def test_reset_requested_on_one_side_completes_on_the_other(pair: Pair, stubs: Stubs) -> None:
    email = _email()
    _app_sign_up(pair, email)
    # The app issues the token; we consume it.
    assert pair.app.call("POST", "/request-password-reset", {"email": email, "redirectTo": "/reset"}).status == 200
    app_token = pair.app.last_token("reset-password", email)
    await stubs.auth.ResetPassword(auth_pb.ResetPasswordRequest(token=app_token, new_password=NEW_PASSWORD))
    again = stubs.auth.ResetPassword(auth_pb.ResetPasswordRequest(token=app_token, new_password=PASSWORD))
    assert (await _reason(again))[1] == "INVALID_TOKEN"
    assert pair.app.call("POST", "/sign-in/email", {"email": email, "password": NEW_PASSWORD}).status == 200
    # We issue the token; the app consumes it.
    await stubs.auth.RequestPasswordReset(auth_pb.RequestPasswordResetRequest(email=email))
    ours = _wait_for_token(pair.server, "reset-password", email)
    reset = pair.app.call("POST", "/reset-password", {"token": ours, "newPassword": PASSWORD})
    assert reset.status == 200, reset
    assert (await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))).token
    used = pair.app.call("POST", "/reset-password", {"token": ours, "newPassword": NEW_PASSWORD})
    assert used.status == 400, used


async def test_email_verification_both_ways(pair: Pair, stubs: Stubs) -> None:
    first, second = _email(), _email()
    _app_sign_up(pair, first)
    assert pair.app.call("POST", "/send-verification-email", {"email": first}).status == 200
    app_token = pair.app.last_token("verify-email", first)
    verified = await stubs.auth.VerifyEmail(auth_pb.VerifyEmailRequest(token=app_token))
    assert verified.user.email_verified
    await stubs.auth.SignUp(auth_pb.SignUpRequest(email=second, password=PASSWORD, name="Second"))
    await stubs.auth.SendVerificationEmail(auth_pb.SendVerificationEmailRequest(email=second))
    ours = _wait_for_token(pair.server, "verify-email", second)
    reply = pair.app.call("GET", f"/verify-email?token={ours}")
    assert reply.status == 200 and reply.body["status"] is True, reply
    signed_in = pair.app.call("POST", "/sign-in/email", {"email": second, "password": PASSWORD})
    assert signed_in.body["user"]["emailVerified"] is True
    forged = ours[:-2] + ("AA" if not ours.endswith("AA") else "BB")
    call = stubs.auth.VerifyEmail(auth_pb.VerifyEmailRequest(token=forged))
    assert (await _reason(call))[1] == "INVALID_TOKEN"


async def test_password_written_here_is_scrypt_and_app_hash_verifies(pair: Pair, stubs: Stubs) -> None:
    """Better Auth's own hash verifies here; ours verifies there (both directions of ChangePassword)."""
    email = _email()
    _, cookie = _app_sign_up(pair, email)
    ours = await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))
    changed = await stubs.auth.ChangePassword(
        auth_pb.ChangePasswordRequest(token=ours.token, current_password=PASSWORD, new_password=NEW_PASSWORD)
    )
    assert not changed.token
    assert pair.app.call("POST", "/sign-in/email", {"email": email, "password": NEW_PASSWORD}).status == 200
    body = {"currentPassword": NEW_PASSWORD, "newPassword": PASSWORD, "revokeOtherSessions": True}
    reply = pair.app.call("POST", "/change-password", body, cookie=f"better-auth.session_token={cookie}")
    assert reply.status == 200, reply
    assert (await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))).token
    call = stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=ours.token))
    assert await _reason(call) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")


def _wait_for_token(server: Server, purpose: str, email: str) -> str:
    end = time.monotonic() + 10
    while True:
        try:
            return token_in_log(server.log(), purpose, email)
        except AssertionError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def test_logs_hold_no_session_tokens(pair: Pair) -> None:
    """Sanity: the Better Auth profile does not write session tokens to authsidecar's log."""
    assert "session_token=" not in pair.server.log()


async def test_readme_examples_grpcurl_and_python_client(pair: Pair) -> None:
    """The README's worked example: a Cookie header through grpcurl and the Python client; SignIn's cookie."""
    email = _email()
    _, cookie = _app_sign_up(pair, email)
    header = f"theme=dark; better-auth.session_token={cookie}"
    validated = grpcurl(pair.server, "authsidecar.v1.SessionService/ValidateSession", data={"cookie": header})
    assert validated.returncode == 0, validated.stderr
    assert json.loads(validated.stdout)["user"]["email"] == email
    signed_in = grpcurl(pair.server, "authsidecar.v1.AuthService/SignIn", data={"email": email, "password": PASSWORD})
    assert signed_in.returncode == 0, signed_in.stderr
    assert pair.app.session(json.loads(signed_in.stdout)["session_cookie"]) is not None
    async with AuthClient(pair.server.address) as auth:
        current = await auth.validate_session(cookie=header)
        assert current.user.email == email
        with pytest.raises(AuthSidecarError) as info:
            await auth.validate_session(cookie="better-auth.session_token=forged.value")
        assert info.value.reason == "INVALID_TOKEN"


async def test_remember_me_false_stays_short_on_both_sides(pair: Pair, stubs: Stubs) -> None:
    email = _email()
    _app_sign_up(pair, email)
    short = await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD, remember_me=False))
    assert short.dont_remember_cookie and unquote(short.dont_remember_cookie).startswith("true.")
    lifetime = short.session.expires_at.ToDatetime() - short.session.created_at.ToDatetime()
    assert lifetime.total_seconds() == 86_400
    cookies = (
        f"better-auth.session_token={short.session_cookie}; better-auth.dont_remember={short.dont_remember_cookie}"
    )
    seen = pair.app.call("GET", "/get-session", cookie=cookies).body
    assert _parse(seen["session"]["expiresAt"]) == short.session.expires_at.ToDatetime()  # not extended
    app_short = pair.app.call("POST", "/sign-in/email", {"email": email, "password": PASSWORD, "rememberMe": False})
    assert app_short.status == 200 and app_short.cookie("better-auth.dont_remember")
    ours = await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=app_short.body["token"]))
    lifetime = ours.session.expires_at.ToDatetime() - ours.session.created_at.ToDatetime()
    assert 86_390 < lifetime.total_seconds() <= 86_400  # Better Auth takes expiresAt a moment before createdAt
    remembered = await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))
    assert not remembered.dont_remember_cookie


async def test_email_change_both_ways(pair: Pair, stubs: Stubs) -> None:
    email, first_new, second_new = _email(), _email(), _email()
    _, cookie = _app_sign_up(pair, email)
    ours = await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))
    # Started here, confirmed through the app's verify-email link.
    await stubs.auth.ChangeEmail(auth_pb.ChangeEmailRequest(token=ours.token, new_email=first_new))
    token = _wait_for_token(pair.server, "change-email", first_new)
    reply = pair.app.call("GET", f"/verify-email?token={token}")
    assert reply.status == 200 and reply.body["user"]["email"] == first_new, reply
    seen = await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=ours.token))
    assert seen.user.email == first_new
    # Started in the app, confirmed here.
    started = pair.app.call(
        "POST", "/change-email", {"newEmail": second_new}, cookie=f"better-auth.session_token={cookie}"
    )
    assert started.status == 200, started
    app_token = pair.app.last_token("verify-email", second_new)
    changed = await stubs.auth.VerifyEmail(auth_pb.VerifyEmailRequest(token=app_token))
    assert changed.user.email == second_new and not changed.user.email_verified  # kept, as Better Auth does
    assert pair.app.session(cookie)["user"]["email"] == second_new
    stale = stubs.auth.VerifyEmail(auth_pb.VerifyEmailRequest(token=token))  # issued for the old address
    assert (await _reason(stale))[1] == "INVALID_TOKEN"


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=None)


@pytest.mark.parametrize("mode", list(MODES))
async def test_sliding_refresh_is_shared(mode: str, tmp_path: Path) -> None:
    """updateAge 1 s on both sides: a refresh made by either side is what the other sees (row, document, list)."""
    with running_pair(mode, tmp_path, {"session": {"updateAge": 1}}, {"AUTHSIDECAR_SESSION_UPDATE_AGE": "1"}) as p:
        stubs = stubs_for(p.server.address)
        try:
            email = _email()
            _, cookie = _app_sign_up(p, email)
            first = p.app.session(cookie)["session"]
            await asyncio.sleep(1.2)
            ours = await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=cookie))
            refreshed_here = ours.session.expires_at.ToDatetime()
            assert refreshed_here > _parse(first["expiresAt"])
            seen = p.app.call("GET", "/get-session?disableRefresh=true", cookie=f"better-auth.session_token={cookie}")
            assert _parse(seen.body["session"]["expiresAt"]) == refreshed_here
            await asyncio.sleep(1.2)
            refreshed_there = _parse(p.app.session(cookie)["session"]["expiresAt"])
            assert refreshed_there > refreshed_here
            again = await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=cookie))
            assert again.session.expires_at.ToDatetime() >= refreshed_there
        finally:
            await stubs.channel.close()


@pytest.mark.parametrize("pair", REDIS_MODES, indirect=True)
async def test_a_document_written_back_after_a_revocation_is_deleted_again(pair: Pair, stubs: Stubs) -> None:
    """Better Auth refreshes a session by reading its document and writing it back; a sign-out here that lands in
    between would be undone. The document is deleted again shortly after, so the revocation holds."""
    email = _email()
    _app_sign_up(pair, email)
    ours = await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))
    client = redis.Redis.from_url(REDIS_URL)
    try:
        document = client.get(pair.prefix + ours.token)
        assert document is not None
        await stubs.auth.SignOut(auth_pb.SignOutRequest(token=ours.token))
        client.set(pair.prefix + ours.token, document, ex=3600)  # the app's late write-back
        assert pair.app.session(ours.session_cookie) is not None
        await asyncio.sleep(1.5)
        assert client.get(pair.prefix + ours.token) is None
        assert pair.app.session(ours.session_cookie) is None
    finally:
        client.close()
    call = stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=ours.token))
    assert await _reason(call) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")


@pytest.mark.parametrize("strategy", ["compact", "jwt"])
async def test_cookie_cache_is_read_only_when_asked(strategy: str, tmp_path: Path) -> None:
    """With AUTHSIDECAR_COOKIE_CACHE, the app's session_data cookie answers on its own until it expires: a session
    revoked meanwhile is still accepted with it (Better Auth's trade), and refused without it."""
    app_options = {"session": {"cookieCache": {"enabled": True, "maxAge": 300, "strategy": strategy}}}
    with running_pair("sql+redis", tmp_path, app_options, {"AUTHSIDECAR_COOKIE_CACHE": strategy}) as p:
        stubs = stubs_for(p.server.address)
        try:
            email = _email()
            reply = p.app.call("POST", "/sign-up/email", {"email": email, "password": PASSWORD, "name": "Cached"})
            token, data = reply.cookie(), reply.cookie("better-auth.session_data")
            assert token and data, reply.headers
            both = f"better-auth.session_token={token}; better-auth.session_data={data}"
            ok = await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(cookie=both))
            assert ok.user.email == email
            p.app.call("POST", "/revoke-sessions", {}, cookie=f"better-auth.session_token={token}")
            still = await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(cookie=both))
            assert still.session.id == ok.session.id  # from the cookie, as the app would answer
            chunked = f"better-auth.session_token={token}; better-auth.session_data.0={data[:40]}; "
            chunked += f"better-auth.session_data.1={data[40:]}"
            assert (await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(cookie=chunked))).user.id
            tampered = both[:-3] + ("A" if both[-3] != "A" else "B") + both[-2:]
            for header in (f"better-auth.session_token={token}", tampered):
                call = stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(cookie=header))
                assert await _reason(call) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")
        finally:
            await stubs.channel.close()
    with running_pair("sql+redis", tmp_path, app_options) as p:  # the default: the cookie is not trusted
        email = _email()
        reply = p.app.call("POST", "/sign-up/email", {"email": email, "password": PASSWORD, "name": "Cached"})
        token, data = reply.cookie(), reply.cookie("better-auth.session_data")
        p.app.call("POST", "/revoke-sessions", {}, cookie=f"better-auth.session_token={token}")
        stubs = stubs_for(p.server.address)
        try:
            both = f"better-auth.session_token={token}; better-auth.session_data={data}"
            call = stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(cookie=both))
            assert await _reason(call) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")
        finally:
            await stubs.channel.close()


async def test_argon2id_on_both_sides_and_scrypt_users_upgraded(tmp_path: Path) -> None:
    """The README's argon2id set-up: the app hashes with @node-rs/argon2, authsidecar with argon2id; each side
    verifies the other's hashes, and a remaining scrypt user is upgraded at sign-in so the app can verify it."""
    argon2 = {"AUTHSIDECAR_PASSWORD_HASH": "argon2id"}
    with running_pair("sql+redis", tmp_path, server_env=argon2, app_env={"BA_PASSWORD_HASH": "argon2id"}) as p:
        stubs = stubs_for(p.server.address)
        try:
            from_app, from_here, legacy = _email(), _email(), _email()
            _app_sign_up(p, from_app)
            assert (await _stored_hash(p.url, from_app)).startswith("$argon2id$")
            assert (await stubs.auth.SignIn(auth_pb.SignInRequest(email=from_app, password=PASSWORD))).token
            await stubs.auth.SignUp(auth_pb.SignUpRequest(email=from_here, password=PASSWORD, name="Here"))
            assert p.app.call("POST", "/sign-in/email", {"email": from_here, "password": PASSWORD}).status == 200
            await stubs.auth.SignUp(auth_pb.SignUpRequest(email=legacy, password=PASSWORD, name="Legacy"))
            await _set_hash(p.url, legacy, SCRYPT_HASH)  # made by Better Auth's default scrypt, for "password123"
            assert p.app.call("POST", "/sign-in/email", {"email": legacy, "password": "password123"}).status != 200
            assert (await stubs.auth.SignIn(auth_pb.SignInRequest(email=legacy, password="password123"))).token
            assert (await _stored_hash(p.url, legacy)).startswith("$argon2id$")
            assert p.app.call("POST", "/sign-in/email", {"email": legacy, "password": "password123"}).status == 200
        finally:
            await stubs.channel.close()


async def _stored_hash(url: str, email: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        query = 'SELECT a.password FROM account a JOIN "user" u ON u.id = a."userId" WHERE u.email = $1'
        return str(await conn.fetchval(query, email))
    finally:
        await conn.close()


async def _set_hash(url: str, email: str, encoded: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        query = 'UPDATE account SET password = $2 WHERE "userId" = (SELECT id FROM "user" WHERE email = $1)'
        await conn.execute(query, email, encoded)
    finally:
        await conn.close()


@pytest.mark.parametrize("pair", REDIS_MODES, indirect=True)
async def test_profile_change_written_back_by_the_app_is_rewritten(pair: Pair, stubs: Stubs) -> None:
    """The app's refresh can write an old user snapshot back after a profile change; it is rewritten again."""
    email = _email()
    _, cookie = _app_sign_up(pair, email)
    ours = await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))
    client = redis.Redis.from_url(REDIS_URL)
    try:
        old = client.get(pair.prefix + ours.token)
        assert old is not None
        await stubs.auth.UpdateUser(auth_pb.UpdateUserRequest(token=ours.token, name="Renamed"))
        assert pair.app.session(cookie)["user"]["name"] == "Renamed"
        client.set(pair.prefix + ours.token, old, keepttl=True)  # the app's late write-back
        await asyncio.sleep(1.5)
        assert json.loads(client.get(pair.prefix + ours.token))["user"]["name"] == "Renamed"
    finally:
        client.close()


@pytest.mark.parametrize("mode", ["redis-only", "sql+redis"])
async def test_concurrent_refreshes_never_refuse_a_live_session(mode: str, tmp_path: Path) -> None:
    """updateAge 0 on both sides: every call refreshes; many at once, from both sides, all succeed."""
    app_options = {"session": {"updateAge": 0}}
    with running_pair(mode, tmp_path, app_options, {"AUTHSIDECAR_SESSION_UPDATE_AGE": "0"}) as p:
        stubs = stubs_for(p.server.address)
        try:
            _, cookie = _app_sign_up(p, _email())
            request = session_pb.ValidateSessionRequest(token=cookie)
            for _ in range(5):
                app_calls = [asyncio.to_thread(p.app.session, cookie) for _ in range(3)]
                results = await asyncio.gather(
                    *(stubs.sessions.ValidateSession(request) for _ in range(20)), *app_calls
                )
                assert all(r is not None for r in results)
        finally:
            await stubs.channel.close()


async def test_preserved_sessions_are_only_live_in_redis(tmp_path: Path) -> None:
    """The app's preserveSessionInDatabase keeps ended sessions as rows: only the Redis document says a session is
    live, so authsidecar does not fall back to SQL (AUTHSIDECAR_PRESERVE_SESSION_IN_DATABASE)."""
    app_options = {"session": {"preserveSessionInDatabase": True}}
    server_env = {"AUTHSIDECAR_PRESERVE_SESSION_IN_DATABASE": "true"}
    with running_pair("sql+redis", tmp_path, app_options, server_env) as p:
        stubs = stubs_for(p.server.address)
        client = redis.Redis.from_url(REDIS_URL)
        try:
            token, cookie = _app_sign_up(p, _email())
            assert (await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=token))).user.id
            assert p.app.call("POST", "/sign-out", {}, cookie=f"better-auth.session_token={cookie}").status == 200
            call = stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=token))
            assert await _reason(call) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")
            other, _ = _app_sign_up(p, _email())
            client.delete(p.prefix + other)  # the row is there, the document is not: not a live session
            call = stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=other))
            assert await _reason(call) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")
        finally:
            client.close()
            await stubs.channel.close()


async def test_redis_only_sign_up_writes_nothing_while_redis_is_down(
    private_redis: RedisProcess, tmp_path: Path
) -> None:
    with running_pair("redis-only", tmp_path, redis_url=private_redis.url) as p:
        stubs = stubs_for(p.server.address)
        try:
            email = _email()
            private_redis.stop()
            call = stubs.auth.SignUp(auth_pb.SignUpRequest(email=email, password=PASSWORD, name="Down"))
            assert await _reason(call) == (grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE")
            private_redis.start()
            await asyncio.sleep(1.2)  # the breaker's retry_after
            made = await stubs.auth.SignUp(auth_pb.SignUpRequest(email=email, password=PASSWORD, name="Up"))
            assert made.token and p.app.session(made.session_cookie) is not None
        finally:
            await stubs.channel.close()
