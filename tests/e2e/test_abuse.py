"""Abuse resistance through the real server on Postgres + Redis (real counters): per-IP and per-identifier rate
limits with RetryInfo, brute-force protection that cannot lock the owner out, one message per address and
interval, and links that stop working when they should."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import resources_pb2
from tests.better_auth.harness import token_in_log
from tests.conftest import REDIS_URL
from tests.e2e.conftest import Server, Stubs, error_details, start_server, stubs_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SERVING = health_pb2.HealthCheckResponse.SERVING
PASSWORD = "correct horse battery"


def _ip() -> str:
    return f"198.51.100.{secrets.randbelow(250) + 1}"


def _client(ip: str) -> resources_pb2.ClientContext:
    return resources_pb2.ClientContext(ip_address=ip, user_agent="test")


def _email() -> str:
    return f"abuse-{secrets.token_hex(5)}@example.com"


async def _outcome(call: object) -> tuple[grpc.StatusCode, str, float | None]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        details = error_details(exc)
        return details.code, details.reason, details.retry_delay
    return grpc.StatusCode.OK, "", None


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, pg_url: str, redis_prefix: str) -> Iterator[Server]:
    """A server with the default limits (but a shorter slowdown), sharing Redis counters."""
    folder = tmp_path_factory.mktemp("abuse")
    env = {
        "DATABASE_URL": pg_url,
        "REDIS_URL": REDIS_URL,
        "AUTHSIDECAR_REDIS_KEY_PREFIX": redis_prefix,
        "AUTHSIDECAR_RATE_LIMIT_ENABLED": "true",
        "AUTHSIDECAR_LOGIN_FAILURES_PER_ACCOUNT": "8/1h",
        "AUTHSIDECAR_LOGIN_SLOWDOWN": "0.5",
    }
    server = start_server(folder, env)
    server.wait_for(SERVING)
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
async def stubs(limited: Server) -> AsyncIterator[Stubs]:
    s = stubs_for(limited.address)
    yield s
    await s.channel.close()


async def _sign_up(stubs: Stubs, email: str, ip: str | None = None) -> auth_pb.SignUpResponse:
    request = auth_pb.SignUpRequest(email=email, password=PASSWORD, name="Abuse", client=_client(ip or _ip()))
    return await stubs.auth.SignUp(request)


async def test_sign_in_is_limited_per_client_ip_with_retry_info(stubs: Stubs) -> None:
    email = _email()
    await _sign_up(stubs, email)
    ip = _ip()
    request = auth_pb.SignInRequest(email=email, password=PASSWORD, client=_client(ip))
    for _ in range(3):
        assert (await _outcome(stubs.auth.SignIn(request)))[0] == grpc.StatusCode.OK
    code, reason, retry = await _outcome(stubs.auth.SignIn(request))
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert retry is not None and 0 < retry <= 10
    other = auth_pb.SignInRequest(email=email, password=PASSWORD, client=_client(_ip()))
    assert (await _outcome(stubs.auth.SignIn(other)))[0] == grpc.StatusCode.OK  # another client IP
    refused_again = await _outcome(stubs.auth.SignIn(request))
    assert refused_again[1] == "RATE_LIMITED" and refused_again[2] is not None
    assert refused_again[2] <= retry + 0.1  # refused calls do not push the window further


async def test_without_a_client_ip_only_identifier_limits_apply(stubs: Stubs) -> None:
    emails = [_email() for _ in range(5)]
    for email in emails:  # five sign-ups from "the calling service": no per-IP limit
        assert (await stubs.auth.SignUp(auth_pb.SignUpRequest(email=email, password=PASSWORD, name="x"))).user.id
    one = auth_pb.SignInRequest(email=emails[0], password=PASSWORD)
    outcomes = [(await _outcome(stubs.auth.SignIn(one)))[1] for _ in range(11)]
    assert outcomes[:10] == [""] * 10 and outcomes[10] == "RATE_LIMITED"  # 10 per minute per account


@pytest.fixture
def guarded(tmp_path: Path, pg_url: str, redis_prefix: str) -> Iterator[Server]:
    """Brute-force protection alone (sign-in's per-IP and per-account rate limits off), a short slowdown."""
    env = {"DATABASE_URL": pg_url, "REDIS_URL": REDIS_URL, "AUTHSIDECAR_REDIS_KEY_PREFIX": redis_prefix}
    env |= {
        "AUTHSIDECAR_RATE_LIMIT_ENABLED": "true",
        "AUTHSIDECAR_RATE_LIMITS": json.dumps({"SignIn": {"ip": "off", "identifier": "off"}}),
        "AUTHSIDECAR_LOGIN_FAILURES_PER_ACCOUNT": "8/1h",
        "AUTHSIDECAR_LOGIN_SLOWDOWN": "0.5",
    }
    server = start_server(tmp_path, env)
    server.wait_for(SERVING)
    yield server
    assert server.stop() == 0, server.log()


async def test_brute_force_cannot_lock_the_owner_out(guarded: Server) -> None:
    stubs = stubs_for(guarded.address)
    try:
        email = _email()
        await _sign_up(stubs, email)
        attacker = [_ip() for _ in range(2)]
        for ip in attacker:  # 5 failures per (account, IP) are allowed, from each of two IPs
            for attempt in range(5):
                wrong = auth_pb.SignInRequest(email=email, password=f"wrong-{attempt}", client=_client(ip))
                assert (await _outcome(stubs.auth.SignIn(wrong)))[1] == "INVALID_EMAIL_OR_PASSWORD"
        right_from_attacker = auth_pb.SignInRequest(email=email, password=PASSWORD, client=_client(attacker[0]))
        code, reason, retry = await _outcome(stubs.auth.SignIn(right_from_attacker))
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED") and retry is not None
        owner = auth_pb.SignInRequest(email=email, password=PASSWORD, client=_client(_ip()))
        started = time.perf_counter()
        assert (await stubs.auth.SignIn(owner)).token  # the owner, from another IP, still gets in
        assert time.perf_counter() - started >= 0.5  # ... after the account-wide slowdown (8 failures spent)
        unharmed = auth_pb.SignInRequest(email=email, password=PASSWORD, client=_client(attacker[1]))
        code, reason, _ = await _outcome(stubs.auth.SignIn(unharmed))
        assert reason == "RATE_LIMITED"  # the second attacker IP spent its five failures too
    finally:
        await stubs.channel.close()


async def test_one_reset_message_per_interval_and_newest_link_only(limited: Server, stubs: Stubs) -> None:
    email = _email()
    await _sign_up(stubs, email)
    for _ in range(3):
        await stubs.auth.RequestPasswordReset(auth_pb.RequestPasswordResetRequest(email=email))
    await asyncio.sleep(0.5)
    marker = f"delivery=log: reset-password message for {email}"
    assert limited.log().count(marker) == 1  # three requests, one message (60 s per address and purpose)
    fourth = await _outcome(stubs.auth.RequestPasswordReset(auth_pb.RequestPasswordResetRequest(email=email)))
    assert fourth[1] == "RATE_LIMITED"  # 3 per minute per address


@pytest.fixture
def hygiene(tmp_path: Path, pg_url: str, redis_prefix: str) -> Iterator[Server]:
    """Limits on, but no mail interval: every request sends its message."""
    env = {"DATABASE_URL": pg_url, "REDIS_URL": REDIS_URL, "AUTHSIDECAR_REDIS_KEY_PREFIX": redis_prefix}
    env |= {
        "AUTHSIDECAR_MAIL_INTERVAL": "0",
        "AUTHSIDECAR_RATE_LIMITS": json.dumps({"RequestPasswordReset": {"identifier": "off"}}),
    }
    server = start_server(tmp_path, env)
    server.wait_for(SERVING)
    yield server
    assert server.stop() == 0, server.log()


async def _reset_token(server: Server, stubs: Stubs, email: str) -> str:
    before = server.log().count(f"delivery=log: reset-password message for {email}")
    await stubs.auth.RequestPasswordReset(auth_pb.RequestPasswordResetRequest(email=email))
    for _ in range(100):
        if server.log().count(f"delivery=log: reset-password message for {email}") > before:
            return token_in_log(server.log(), "reset-password", email)
        await asyncio.sleep(0.05)
    raise AssertionError("no reset message")


async def test_links_stop_working_when_they_should(hygiene: Server) -> None:
    stubs = stubs_for(hygiene.address)
    try:
        email = _email()
        signed_up = await _sign_up(stubs, email)
        # A newer reset link replaces the older one.
        older = await _reset_token(hygiene, stubs, email)
        newer = await _reset_token(hygiene, stubs, email)
        stale = stubs.auth.ResetPassword(auth_pb.ResetPasswordRequest(token=older, new_password="new password 1"))
        assert (await _outcome(stale))[1] == "INVALID_TOKEN"
        # ChangePassword kills outstanding reset links.
        change = auth_pb.ChangePasswordRequest(
            token=signed_up.token, current_password=PASSWORD, new_password="new password 2"
        )
        await stubs.auth.ChangePassword(change)
        assert (
            await _outcome(stubs.auth.ResetPassword(auth_pb.ResetPasswordRequest(token=newer, new_password="x" * 9)))
        )[1] == "INVALID_TOKEN"
        # Using one reset link kills the others; an email change kills links sent to the old address.
        first = await _reset_token(hygiene, stubs, email)
        await stubs.auth.ChangeEmail(auth_pb.ChangeEmailRequest(token=signed_up.token, new_email=_email()))
        gone = stubs.auth.ResetPassword(auth_pb.ResetPasswordRequest(token=first, new_password="new password 3"))
        assert (await _outcome(gone))[1] == "INVALID_TOKEN"
    finally:
        await stubs.channel.close()


async def _token_for(server: Server, purpose: str, email: str) -> str:
    for _ in range(100):
        if f"delivery=log: {purpose} message for {email}" in server.log():
            return token_in_log(server.log(), purpose, email)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {purpose} message for {email}")


async def test_email_change_of_a_verified_address_needs_its_approval(hygiene: Server) -> None:
    """A stolen fresh session alone cannot move the account: the current address approves first (or the current
    password replaces that step), and it is told after the change."""
    stubs = stubs_for(hygiene.address)
    try:
        old, new, other = _email(), _email(), _email()
        signed_up = await _sign_up(stubs, old)
        await stubs.auth.SendVerificationEmail(auth_pb.SendVerificationEmailRequest(email=old))
        await stubs.auth.VerifyEmail(auth_pb.VerifyEmailRequest(token=await _token_for(hygiene, "verify-email", old)))
        await stubs.auth.ChangeEmail(auth_pb.ChangeEmailRequest(token=signed_up.token, new_email=new))
        approval = await _token_for(hygiene, "approve-email-change", old)
        assert f"change-email message for {new}" not in hygiene.log()  # nothing reached the new address yet
        approved = await stubs.auth.VerifyEmail(auth_pb.VerifyEmailRequest(token=approval))
        assert approved.user.email == old  # approved, not changed
        confirmed = await stubs.auth.VerifyEmail(
            auth_pb.VerifyEmailRequest(token=await _token_for(hygiene, "change-email", new))
        )
        assert confirmed.user.email == new
        for _ in range(100):
            if f"delivery=log: email-changed message for {old}" in hygiene.log():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the former address was not told")
        # The current password replaces the approval; a wrong one is refused.
        wrong = stubs.auth.ChangeEmail(
            auth_pb.ChangeEmailRequest(token=signed_up.token, new_email=other, current_password="not it at all")
        )
        assert (await _outcome(wrong))[1] == "INVALID_PASSWORD"
        await stubs.auth.ChangeEmail(
            auth_pb.ChangeEmailRequest(token=signed_up.token, new_email=other, current_password=PASSWORD)
        )
        assert (await _token_for(hygiene, "change-email", other)) and f"approve-email-change message for {new}" not in (
            hygiene.log()
        )
    finally:
        await stubs.channel.close()
