"""End to end through the real server and the generated stubs, on Postgres+Redis and on the embedded default."""

from __future__ import annotations

import asyncio
import secrets

import grpc
import pytest

from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import resources_pb2
from authsidecar_client.v1 import session_service_pb2 as session_pb
from tests.e2e.conftest import Server, error_details, stubs_for

PASSWORD = "correct horse battery"


def new_email() -> str:
    return f"e2e-{secrets.token_hex(6)}@Example.COM"


async def expect_error(call: object, code: grpc.StatusCode, reason: str) -> list[tuple[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    details = error_details(info.value)
    assert (details.code, details.reason, details.domain) == (code, reason, "authsidecar"), details
    assert "Traceback" not in details.message
    return details.field_violations


async def test_sign_up_validate_list_revoke_sign_out(server: Server) -> None:
    stubs = stubs_for(server.address)
    try:
        email = new_email()
        client = resources_pb2.ClientContext(ip_address="2001:db8::1", user_agent="e2e/1.0")
        up = await stubs.auth.SignUp(auth_pb.SignUpRequest(email=email, password=PASSWORD, name="Ada", client=client))
        assert up.user.email == email.lower() and up.token and up.session.id
        assert up.session.ip_address == "2001:db8::1" and up.session.user_agent == "e2e/1.0"
        assert up.session.expires_at.seconds - up.session.created_at.seconds == 7 * 86400

        valid = await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=up.token))
        assert valid.user == up.user and valid.session == up.session

        second = await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD, remember_me=False))
        assert second.session.expires_at.seconds - second.session.created_at.seconds == 86400
        third = await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))

        listed = await stubs.sessions.ListSessions(session_pb.ListSessionsRequest(token=up.token))
        assert {s.id for s in listed.sessions} == {up.session.id, second.session.id, third.session.id}
        assert listed.current_session_id == up.session.id  # the caller's own is marked
        as_third = await stubs.sessions.ListSessions(session_pb.ListSessionsRequest(token=third.token))
        assert as_third.current_session_id == third.session.id

        await stubs.sessions.RevokeSession(
            session_pb.RevokeSessionRequest(token=up.token, session_id=second.session.id)
        )
        await expect_error(
            stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=second.token)),
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_TOKEN",
        )
        await expect_error(
            stubs.sessions.RevokeSession(session_pb.RevokeSessionRequest(token=up.token, session_id=second.session.id)),
            grpc.StatusCode.NOT_FOUND,
            "SESSION_NOT_FOUND",
        )
        others = await stubs.sessions.RevokeOtherSessions(session_pb.RevokeOtherSessionsRequest(token=up.token))
        assert others.revoked_count == 1
        await stubs.auth.SignOut(auth_pb.SignOutRequest(token=up.token))
        for token in (up.token, third.token):
            await expect_error(
                stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=token)),
                grpc.StatusCode.UNAUTHENTICATED,
                "INVALID_TOKEN",
            )
        again = await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))
        assert (
            await stubs.sessions.RevokeSessions(session_pb.RevokeSessionsRequest(token=again.token))
        ).revoked_count == 1
    finally:
        await stubs.channel.close()
    log = server.log()
    assert PASSWORD not in log and up.token not in log and third.token not in log


async def test_bad_input_gets_invalid_argument_with_field_violations(server: Server) -> None:
    stubs = stubs_for(server.address)
    try:
        violations = await expect_error(
            stubs.auth.SignUp(auth_pb.SignUpRequest()), grpc.StatusCode.INVALID_ARGUMENT, "MISSING_FIELD"
        )
        assert {f for f, _ in violations} == {"email", "password", "name"}
        await expect_error(
            stubs.auth.SignUp(auth_pb.SignUpRequest(email="not-an-email", password=PASSWORD, name="A")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_EMAIL",
        )
        violations = await expect_error(
            stubs.auth.SignUp(auth_pb.SignUpRequest(email=new_email(), password="short", name="A")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "PASSWORD_TOO_SHORT",
        )
        assert violations[0][0] == "password"
        await expect_error(
            stubs.auth.SignUp(auth_pb.SignUpRequest(email=new_email(), password="x" * 129, name="A")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "PASSWORD_TOO_LONG",
        )
        violations = await expect_error(
            stubs.auth.SignUp(auth_pb.SignUpRequest(email=new_email(), password=PASSWORD, name="A\x00B")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "VALIDATION_ERROR",
        )
        assert violations == [("name", "must not contain NUL characters")]
        bad_ip = resources_pb2.ClientContext(ip_address="999.1.1.1")
        violations = await expect_error(
            stubs.auth.SignIn(auth_pb.SignInRequest(email=new_email(), password=PASSWORD, client=bad_ip)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "VALIDATION_ERROR",
        )
        assert violations[0][0] == "client.ip_address"
        await expect_error(
            stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token="t" * 10_000)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "VALIDATION_ERROR",
        )
        await expect_error(
            stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest()),
            grpc.StatusCode.INVALID_ARGUMENT,
            "MISSING_FIELD",
        )
        await expect_error(
            stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token="no-such-token")),
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_TOKEN",
        )
        await expect_error(
            stubs.auth.SignIn(auth_pb.SignInRequest(email=new_email(), password=PASSWORD)),
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_EMAIL_OR_PASSWORD",
        )
    finally:
        await stubs.channel.close()


async def test_parallel_sign_ups_of_one_email(server: Server) -> None:
    stubs = stubs_for(server.address)
    email = new_email()
    try:
        calls = [
            stubs.auth.SignUp(auth_pb.SignUpRequest(email=email, password=PASSWORD, name=f"racer {i}"))
            for i in range(10)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await stubs.channel.close()
    ok = [r for r in results if isinstance(r, auth_pb.SignUpResponse)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1 and len(failed) == 9
    assert {error_details(e).reason for e in failed} == {"USER_ALREADY_EXISTS"}
    assert {e.code() for e in failed} == {grpc.StatusCode.ALREADY_EXISTS}
