"""Abuse resistance through the real server on Postgres + Redis (real counters): per-IP and per-identifier rate
limits with RetryInfo, brute-force protection that cannot lock the owner out, one message per address and
interval, and links that stop working when they should."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import resources_pb2
from tests.better_auth.harness import token_in_log
from tests.conftest import REDIS_URL
from tests.e2e.conftest import Server, Stubs, error_details, start_server, stubs_for, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SERVING = health_pb2.HealthCheckResponse.SERVING
PASSWORD = "correct horse battery"


_ADDRESSES = itertools.count(1)


def _ip() -> str:
    """A client address no other call of this test process used (a random one could be an attacker's)."""
    n = next(_ADDRESSES)
    return f"198.18.{n // 250}.{n % 250 + 1}"


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


def _limited_server(folder: Path, pg_url: str, redis_prefix: str, **settings: str) -> Iterator[Server]:
    """A server on Postgres and Redis (counters shared) with limits on, and ``settings`` (AUTHSIDECAR_ names)."""
    env = {"DATABASE_URL": pg_url, "REDIS_URL": REDIS_URL, "AUTHSIDECAR_REDIS_KEY_PREFIX": redis_prefix}
    env |= {"AUTHSIDECAR_RATE_LIMIT_ENABLED": "true"} | {f"AUTHSIDECAR_{k.upper()}": v for k, v in settings.items()}
    server = start_server(folder, env)
    server.wait_for(SERVING)
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, pg_url: str, redis_prefix: str) -> Iterator[Server]:
    """The default limits, counters in Redis."""
    yield from _limited_server(tmp_path_factory.mktemp("abuse"), pg_url, redis_prefix)


@pytest.fixture
async def stubs(limited: Server) -> AsyncIterator[Stubs]:
    s = stubs_for(limited.address)
    yield s
    await s.channel.close()


async def _sign_up(stubs: Stubs, email: str, ip: str | None = None) -> auth_pb.SignUpResponse:
    request = auth_pb.SignUpRequest(email=email, password=PASSWORD, name="Abuse", client=_client(ip or _ip()))
    return await stubs.auth.SignUp(request)


async def test_retries_refused_by_the_rate_limit_do_not_lock_the_owner_out(stubs: Stubs) -> None:
    """Three typos, then three quick retries with the right password that the per-IP SignIn limit (3 per 10 s)
    refuses: only the three passwords checked count against this address's attempts on the account (5 per 15
    minutes), so once the limit's wait is over the owner is in. Before, every call was counted first, and the
    owner stayed refused for 15 minutes."""
    email = _email()
    await _sign_up(stubs, email)
    ip = _ip()
    typo = auth_pb.SignInRequest(email=email, password="typo-" + PASSWORD, client=_client(ip))
    for _ in range(3):
        assert (await _outcome(stubs.auth.SignIn(typo)))[1] == "INVALID_EMAIL_OR_PASSWORD"
    right = auth_pb.SignInRequest(email=email, password=PASSWORD, client=_client(ip))
    waits = []
    for _ in range(3):
        code, reason, retry = await _outcome(stubs.auth.SignIn(right))
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED") and retry is not None
        assert retry <= 10, "refused by the guard (its wait is minutes), not by the SignIn limit's 10 s window"
        waits.append(retry)
    await asyncio.sleep(max(waits) + 0.2)  # the SignIn limit's own window must pass: time, by design
    assert (await _outcome(stubs.auth.SignIn(right)))[0] == grpc.StatusCode.OK


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
    assert outcomes == [""] * 11  # sign-in has no per-account limit anyone could spend (the guard protects it)
    reset = auth_pb.RequestPasswordResetRequest(email=emails[1])
    outcomes = [(await _outcome(stubs.auth.RequestPasswordReset(reset)))[1] for _ in range(4)]
    assert outcomes == ["", "", "", "RATE_LIMITED"]  # 3 per minute per address


@pytest.fixture
def guarded(tmp_path: Path, pg_url: str, redis_prefix: str) -> Iterator[Server]:
    """The default limits, with a short account-wide slowdown after 8 failures."""
    yield from _limited_server(tmp_path, pg_url, redis_prefix, login_failures_per_account="8/1h", login_slowdown="0.5")


async def test_brute_force_cannot_lock_the_owner_out(guarded: Server) -> None:
    """Attackers hammer the account from two IPs with the default limits on: they are refused, and the owner,
    from their own IP, still signs in every time (no per-account refusal anyone could trigger)."""
    stubs = stubs_for(guarded.address)
    try:
        email = _email()
        await _sign_up(stubs, email)
        attackers = [_ip() for _ in range(2)]
        outcomes: list[str] = []
        for round_ in range(6):
            for ip in attackers:
                wrong = auth_pb.SignInRequest(email=email, password=f"wrong-{round_}", client=_client(ip))
                outcomes.append((await _outcome(stubs.auth.SignIn(wrong)))[1])
            owner = auth_pb.SignInRequest(email=email, password=PASSWORD, client=_client("203.0.113.200"))
            assert (await _outcome(stubs.auth.SignIn(owner)))[0] == grpc.StatusCode.OK, round_
            await asyncio.sleep(3.4)  # the owner's own per-IP limit (3 per 10 s)
        assert outcomes.count("INVALID_EMAIL_OR_PASSWORD") <= 10 and "RATE_LIMITED" in outcomes
        right_from_attacker = auth_pb.SignInRequest(email=email, password=PASSWORD, client=_client(attackers[0]))
        code, reason, retry = await _outcome(stubs.auth.SignIn(right_from_attacker))
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED") and retry is not None
        # From yet another IP the owner is in, after the slowdown: while the owner's sign-in waits, two sign-ins to
        # an account nobody attacked, sent after it, are answered one after the other.
        bystander = _email()
        await _sign_up(stubs, bystander)
        owner = auth_pb.SignInRequest(email=email, password=PASSWORD, client=_client(_ip()))
        slowed = stubs.auth.SignIn(owner)
        for _ in range(2):
            other = auth_pb.SignInRequest(email=bystander, password=PASSWORD, client=_client(_ip()))
            assert (await stubs.auth.SignIn(other)).token
        assert not slowed.done()
        assert (await slowed).token
    finally:
        await stubs.channel.close()


@pytest.fixture
def unthrottled_ip(tmp_path: Path, pg_url: str, redis_prefix: str) -> Iterator[Server]:
    """The brute-force guard alone: sign-in's per-IP limit off."""
    yield from _limited_server(tmp_path, pg_url, redis_prefix, rate_limits=json.dumps({"SignIn": {"ip": "off"}}))


async def test_concurrent_guesses_cannot_overshoot_the_guard(unthrottled_ip: Server) -> None:
    stubs = stubs_for(unthrottled_ip.address)
    try:
        email = _email()
        await _sign_up(stubs, email)
        ip = _ip()
        calls = [
            _outcome(stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=f"w{i}", client=_client(ip))))
            for i in range(12)
        ]
        reasons = [reason for _, reason, _ in await asyncio.gather(*calls)]
        assert reasons.count("INVALID_EMAIL_OR_PASSWORD") <= 5  # 5 attempts per (account, IP), counted atomically
        assert reasons.count("RATE_LIMITED") >= 7
    finally:
        await stubs.channel.close()


async def test_one_reset_message_per_interval_and_newest_link_only(limited: Server, stubs: Stubs) -> None:
    email = _email()
    await _sign_up(stubs, email)
    for _ in range(3):
        await stubs.auth.RequestPasswordReset(auth_pb.RequestPasswordResetRequest(email=email))
    # Messages go out one at a time, in order: once a later one for another address is out, the three requests'
    # messages (if any) are too.
    later = _email()
    await _sign_up(stubs, later)
    await stubs.auth.RequestPasswordReset(auth_pb.RequestPasswordResetRequest(email=later))
    await _token_for(limited, "reset-password", later)
    marker = f"delivery=log: reset-password message for {email}"
    assert limited.log().count(marker) == 1  # three requests, one message (60 s per address and purpose)
    fourth = await _outcome(stubs.auth.RequestPasswordReset(auth_pb.RequestPasswordResetRequest(email=email)))
    assert fourth[1] == "RATE_LIMITED"  # 3 per minute per address


@pytest.fixture
def hygiene(tmp_path: Path, pg_url: str, redis_prefix: str) -> Iterator[Server]:
    """Limits on, but no mail interval (every request sends its message), no per-address reset limit and no
    per-user email-change limit (the tests run several flows in a row)."""
    rules = json.dumps({"RequestPasswordReset": {"identifier": "off"}, "ChangeEmail": {"identifier": "off"}})
    yield from _limited_server(tmp_path, pg_url, redis_prefix, mail_interval="0", rate_limits=rules)


async def _reset_token(server: Server, stubs: Stubs, email: str) -> str:
    before = server.log().count(f"delivery=log: reset-password message for {email}")
    await stubs.auth.RequestPasswordReset(auth_pb.RequestPasswordResetRequest(email=email))
    marker = f"delivery=log: reset-password message for {email}"
    await wait_for(lambda: server.log().count(marker) > before, 5, "the reset message")
    return token_in_log(server.log(), "reset-password", email)


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
    marker = f"delivery=log: {purpose} message for {email}"
    await wait_for(lambda: marker in server.log(), 5, f"a {purpose} message for {email}")
    return token_in_log(server.log(), purpose, email)


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
        told = f"delivery=log: email-changed message for {old}"
        await wait_for(lambda: told in hygiene.log(), 5, "the former address told")
        # A pending approval link dies with a password change.
        await stubs.auth.ChangeEmail(auth_pb.ChangeEmailRequest(token=signed_up.token, new_email=_email()))
        pending = await _token_for(hygiene, "approve-email-change", new)
        change = auth_pb.ChangePasswordRequest(token=signed_up.token, current_password=PASSWORD, new_password=PASSWORD)
        await stubs.auth.ChangePassword(change)
        dead = await _outcome(stubs.auth.VerifyEmail(auth_pb.VerifyEmailRequest(token=pending)))
        assert dead[1] == "INVALID_TOKEN"
        # The current password replaces the approval; a wrong one is refused.
        wrong = stubs.auth.ChangeEmail(
            auth_pb.ChangeEmailRequest(token=signed_up.token, new_email=other, current_password="not it at all")
        )
        assert (await _outcome(wrong))[1] == "INVALID_PASSWORD"
        approvals = hygiene.log().count(f"approve-email-change message for {new}")
        await stubs.auth.ChangeEmail(
            auth_pb.ChangeEmailRequest(token=signed_up.token, new_email=other, current_password=PASSWORD)
        )
        assert await _token_for(hygiene, "change-email", other)  # straight to the new address
        assert hygiene.log().count(f"approve-email-change message for {new}") == approvals
    finally:
        await stubs.channel.close()
