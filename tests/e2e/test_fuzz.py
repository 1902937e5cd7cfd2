"""Property-based fuzzing of every RPC through the real server (hypothesis): random messages built from the
request types' descriptors, and random bytes. Every answer is OK or a documented status with an ErrorInfo
reason (never UNKNOWN or INTERNAL), and the server keeps serving."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authsidecar_client.v1 import auth_service_pb2, session_service_pb2
from tests.e2e.conftest import Server, clean_env, error_details, start_server

SERVING = health_pb2.HealthCheckResponse.SERVING
FD = pb_descriptor.FieldDescriptor
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
}
METHODS = [
    (f"/{module.DESCRIPTOR.package}.{service}/{method.name}", method.input_type)
    for module, service in ((auth_service_pb2, "AuthService"), (session_service_pb2, "SessionService"))
    for method in module.DESCRIPTOR.services_by_name[service].methods
]
TEXT = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["", "a@example.com", "x<a@evil.example>", "\x00", "%", ".", "a" * 300, "\r\n", "é@é.é"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%@=-", max_size=400),
)
JSON_VALUE = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))


def message(desc: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Random messages of a descriptor's type (every field may be left unset)."""
    if desc.full_name == "google.protobuf.Struct":

        def struct(values: dict[str, Any]) -> struct_pb2.Struct:
            out = struct_pb2.Struct()
            out.update(values)
            return out

        return st.dictionaries(st.text(max_size=12), JSON_VALUE, max_size=3).map(struct)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in desc.fields:
        if field.type == FD.TYPE_STRING:
            fields[field.name] = TEXT
        elif field.type == FD.TYPE_BOOL:
            fields[field.name] = st.booleans()
        elif field.type in (FD.TYPE_INT32, FD.TYPE_INT64):
            fields[field.name] = st.integers(-(2**31), 2**31 - 1)
        elif field.type == FD.TYPE_MESSAGE and depth < 2:
            fields[field.name] = message(field.message_type, depth + 1)
    cls = desc._concrete_class

    def build(values: dict[str, Any]) -> Any:
        built = cls()
        for name, value in values.items():
            if isinstance(value, struct_pb2.Struct) or hasattr(value, "DESCRIPTOR"):
                getattr(built, name).CopyFrom(value)
            else:
                setattr(built, name, value)
        return built

    return st.fixed_dictionaries({}, optional=fields).map(build)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("fuzz")
    subprocess.run([sys.executable, "-m", "authsidecar", "migrate"], cwd=folder, env=clean_env(), check=True)
    server = start_server(folder, {"AUTHSIDECAR_SQLITE_PATH": str(folder / "authsidecar.db")})
    server.wait_for(SERVING)
    yield server
    assert server.health() == SERVING, server.log()
    assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log()


def _call(channel: grpc.Channel, method: str, payload: bytes) -> None:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    failure: Any = None
    try:
        call(payload, timeout=10)
    except grpc.RpcError as exc:
        failure = exc
    if failure is not None:
        assert failure.code() in DOCUMENTED, (method, failure.code(), failure.details())
        assert error_details(failure).reason, method


@pytest.mark.parametrize(("method", "request_type"), METHODS, ids=[m.rsplit("/", 1)[1] for m, _ in METHODS])
def test_random_messages(fuzzed: Server, method: str, request_type: Any) -> None:
    with grpc.insecure_channel(fuzzed.address) as channel:

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(message(request_type))
        def check(request: Any) -> None:
            _call(channel, method, request.SerializeToString())

        check()


@pytest.mark.parametrize(("method", "request_type"), METHODS, ids=[m.rsplit("/", 1)[1] for m, _ in METHODS])
def test_random_bytes(fuzzed: Server, method: str, request_type: Any) -> None:
    with grpc.insecure_channel(fuzzed.address) as channel:

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(st.binary(max_size=200))
        def check(payload: bytes) -> None:
            _call(channel, method, payload)

        check()
