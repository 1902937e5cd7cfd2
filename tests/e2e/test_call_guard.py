"""The call guard wraps every service the server registers: a plugin's servicer that does nothing about callers,
errors or malformed requests still gets caller authentication, the error model and MALFORMED_REQUEST.

The server runs in this process (GrpcServer on a real port, called through the generated stubs over a real
channel): what is tested is the registration, not start-up."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from authsidecar.transport.grpc.callers import Caller, CallerPolicy
from authsidecar.transport.grpc.interceptors import CallGuard
from authsidecar.transport.grpc.server import GrpcServer
from authsidecar_client.v1 import auth_service_pb2_grpc, session_service_pb2_grpc
from authsidecar_client.v1 import two_factor_service_pb2 as pb
from authsidecar_client.v1 import two_factor_service_pb2_grpc as pb_grpc
from tests.e2e.conftest import error_details

APP_KEY = "app-service-key-0123456789abcdef"
OTHER_KEY = "other-service-key-0123456789abcdef"
SERVICE = pb.DESCRIPTOR.services_by_name["TwoFactorService"].full_name


def _sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class BarePluginServicer(pb_grpc.TwoFactorServiceServicer):
    """A plugin's servicer written with no knowledge of callers, status mapping or malformed requests."""

    def __init__(self) -> None:
        self.calls = 0

    async def VerifyTotp(self, request: pb.VerifyTotpRequest, context: Any) -> pb.VerifyTotpResponse:
        self.calls += 1
        return pb.VerifyTotpResponse(token="t-" + request.code)

    async def VerifyBackupCode(self, request: pb.VerifyBackupCodeRequest, context: Any) -> pb.VerifyBackupCodeResponse:
        self.calls += 1
        raise RuntimeError("plugin bug holding a secret: " + request.code)

    async def DisableTwoFactor(self, request: pb.DisableTwoFactorRequest, context: Any) -> pb.DisableTwoFactorResponse:
        raise NotImplementedError("a stub of the plugin's own, left in by mistake")


@pytest.fixture
async def guarded() -> AsyncIterator[tuple[pb_grpc.TwoFactorServiceStub, BarePluginServicer, grpc.aio.Channel]]:
    policy = CallerPolicy(
        [
            Caller(
                "app",
                frozenset({"VerifyTotp", "VerifyBackupCode", "EnableTwoFactor", "DisableTwoFactor"}),
                _sha256(APP_KEY),
            ),
            Caller("other", frozenset({"SignIn"}), _sha256(OTHER_KEY)),
        ]
    )
    servicer = BarePluginServicer()
    server = GrpcServer(
        auth_service_pb2_grpc.AuthServiceServicer(),
        session_service_pb2_grpc.SessionServiceServicer(),
        "127.0.0.1:0",
        extra=[(SERVICE, pb_grpc.add_TwoFactorServiceServicer_to_server, servicer)],
        guard=CallGuard(policy),
    )
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield pb_grpc.TwoFactorServiceStub(channel), servicer, channel
    finally:
        await channel.close()
        await server.stop(0)


def _key(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


async def test_plugin_rpc_without_a_service_key_is_refused_before_the_handler(guarded: Any) -> None:
    stub, servicer, _ = guarded
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.VerifyTotp(pb.VerifyTotpRequest(code="123456"), timeout=5)
    details = error_details(caught.value)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "CALLER_NOT_AUTHENTICATED")
    assert servicer.calls == 0


async def test_plugin_rpc_outside_the_callers_allow_list_is_refused(guarded: Any) -> None:
    stub, servicer, _ = guarded
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.VerifyTotp(pb.VerifyTotpRequest(code="123456"), metadata=_key(OTHER_KEY), timeout=5)
    details = error_details(caught.value)
    assert (details.code, details.reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    assert servicer.calls == 0


async def test_plugin_rpc_of_an_allowed_caller_reaches_the_handler(guarded: Any) -> None:
    stub, servicer, _ = guarded
    reply = await stub.VerifyTotp(pb.VerifyTotpRequest(code="123456"), metadata=_key(APP_KEY), timeout=5)
    assert reply.token == "t-123456"
    assert servicer.calls == 1


async def test_plugin_bug_is_internal_with_a_request_id_and_no_traceback(
    guarded: Any, caplog: pytest.LogCaptureFixture
) -> None:
    stub, _, _ = guarded
    with caplog.at_level(logging.ERROR, logger="authsidecar.rpc"), pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.VerifyBackupCode(pb.VerifyBackupCodeRequest(code="SECRET-CODE"), metadata=_key(APP_KEY), timeout=5)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INTERNAL
    assert details.metadata["request_id"] in details.message
    assert "SECRET-CODE" not in details.message and "Traceback" not in details.message
    assert any(details.metadata["request_id"] in r.getMessage() for r in caplog.records)


async def test_plugin_rpc_it_does_not_implement_is_unimplemented(guarded: Any) -> None:
    stub, _, _ = guarded
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.EnableTwoFactor(pb.EnableTwoFactorRequest(token="x"), metadata=_key(APP_KEY), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_not_implemented_error_of_the_plugins_own_code_is_internal(guarded: Any) -> None:
    stub, _, _ = guarded
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DisableTwoFactor(pb.DisableTwoFactorRequest(token="x"), metadata=_key(APP_KEY), timeout=5)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INTERNAL and "request_id" in details.metadata


async def test_plugin_rpc_with_malformed_bytes_is_malformed_request(guarded: Any) -> None:
    _, servicer, channel = guarded
    raw = channel.unary_unary(f"/{SERVICE}/VerifyTotp", request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(b"\xff\xff\xff", metadata=_key(APP_KEY), timeout=5)
    details = error_details(caught.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")
    assert servicer.calls == 0


def test_a_streaming_rpc_cannot_be_registered_unguarded() -> None:
    def add_streaming(servicer: object, server: Any) -> None:
        handler = grpc.unary_stream_rpc_method_handler(lambda request, context: iter(()))
        server.add_registered_method_handlers("example.v1.Streaming", {"Watch": handler})

    with pytest.raises(ValueError, match="only unary RPCs"):
        GrpcServer(
            auth_service_pb2_grpc.AuthServiceServicer(),
            session_service_pb2_grpc.SessionServiceServicer(),
            "127.0.0.1:0",
            extra=[("example.v1.Streaming", add_streaming, object())],
        )


def test_a_plugin_rpc_named_like_another_services_is_refused() -> None:
    """Allow lists name RPCs by method: a plugin's SignIn would be allowed to every caller allowed AuthService's."""

    def add_sign_in(servicer: object, server: Any) -> None:
        handler = grpc.unary_unary_rpc_method_handler(lambda request, context: b"", request_deserializer=bytes)
        server.add_registered_method_handlers("example.v1.Lookalike", {"SignIn": handler})

    with pytest.raises(ValueError, match="serves SignIn, an RPC name another service already serves"):
        GrpcServer(
            auth_service_pb2_grpc.AuthServiceServicer(),
            session_service_pb2_grpc.SessionServiceServicer(),
            "127.0.0.1:0",
            extra=[("example.v1.Lookalike", add_sign_in, object())],
        )
