"""Input and log hygiene through the real server: malformed protobuf, strict email syntax, control characters,
the delivery=log warning, and no SQL parameters in the log at DEBUG."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2

from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import resources_pb2
from tests.e2e.conftest import Server, clean_env, error_details, start_server, stubs_for

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def debug_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The embedded default at DEBUG, so that anything a driver logs would show."""
    folder = tmp_path_factory.mktemp("hygiene")
    subprocess.run([sys.executable, "-m", "authsidecar", "migrate"], cwd=folder, env=clean_env(), check=True)
    server = start_server(
        folder, {"AUTHSIDECAR_LOG_LEVEL": "DEBUG", "AUTHSIDECAR_SQLITE_PATH": str(folder / "authsidecar.db")}
    )
    server.wait_for(SERVING)
    yield server
    assert server.stop() == 0, server.log()


async def test_malformed_protobuf_is_invalid_argument_with_one_log_line(debug_server: Server) -> None:
    async with grpc.aio.insecure_channel(debug_server.address) as channel:
        for method in ("/authsidecar.v1.AuthService/SignUp", "/authsidecar.v1.SessionService/ValidateSession"):
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(b"\xff\xff\xff\xff\x0f garbage")
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error_details(info.value).reason == "MALFORMED_REQUEST"
        health = channel.unary_unary(
            "/grpc.health.v1.Health/Check", request_serializer=None, response_deserializer=None
        )
        reply = health_pb2.HealthCheckResponse.FromString(await health(b"\xff\xff\xff"))
        assert reply.status == SERVING  # a malformed probe asks for the overall status
    log = debug_server.log()
    assert "Traceback" not in log
    assert log.count("refused a request that is not a valid") == 2


@pytest.mark.parametrize(
    "email",
    [
        "x<attacker@evil.example>.corp.example",
        "Ada <ada@example.com>",
        '"ada"@example.com',
        "ada@example",
        "ad\u200ba@example.com",  # zero-width space: looks like another account's address
        "ada\u202e@example.com",  # right-to-left override
    ],
)
async def test_sign_up_refuses_anything_but_an_address(debug_server: Server, email: str) -> None:
    stubs = stubs_for(debug_server.address)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stubs.auth.SignUp(auth_pb.SignUpRequest(email=email, password="correct horse", name="x"))
        assert error_details(info.value).reason == "INVALID_EMAIL"
    finally:
        await stubs.channel.close()


@pytest.mark.parametrize("name", ["Ada\r\nBcc: x@evil.example", "Ada\x1b[2J", "Ada\u2028", "\u200b", "Ada\u202e"])
async def test_names_and_user_agents_refuse_control_characters(debug_server: Server, name: str) -> None:
    stubs = stubs_for(debug_server.address)
    email = f"clean-{secrets.token_hex(4)}@example.com"
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stubs.auth.SignUp(auth_pb.SignUpRequest(email=email, password="correct horse", name=name))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_details(info.value).field_violations[0][0] == "name"
        client = resources_pb2.ClientContext(user_agent=name)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stubs.auth.SignUp(
                auth_pb.SignUpRequest(email=email, password="correct horse", name="A", client=client)
            )
        assert error_details(info.value).field_violations[0][0] == "client.user_agent"
    finally:
        await stubs.channel.close()


async def test_log_warns_about_delivery_log_and_holds_no_sql_parameters(debug_server: Server) -> None:
    stubs = stubs_for(debug_server.address)
    try:
        email = f"quiet-{secrets.token_hex(4)}@example.com"
        made = await stubs.auth.SignUp(auth_pb.SignUpRequest(email=email, password="correct horse", name="Quiet"))
        await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password="correct horse"))
    finally:
        await stubs.channel.close()
    log = debug_server.log()
    assert "AUTHSIDECAR_DELIVERY=log: verification and reset links, with live tokens" in log
    assert "$argon2id$" not in log and made.token not in log
    assert "executing" not in log or "parameters hidden" in log
