"""OpenTelemetry traces through the real server: a real OTLP/gRPC receiver in the test process (the collector's
TraceService), the server started with OTEL_EXPORTER_OTLP_ENDPOINT, calls made through the generated stubs with W3C
``traceparent`` metadata. Spans must continue the caller's trace, carry the RPC's code and ErrorInfo reason, have
children for hashing, units of work and Redis calls, be flushed on SIGTERM, and never carry a secret."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import session_service_pb2 as session_pb
from tests.conftest import REDIS_URL
from tests.e2e.conftest import Server, error_details, free_port, start_server, stubs_for, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SERVER = trace_pb2.Span.SPAN_KIND_SERVER
UNSET = trace_pb2.Status.STATUS_CODE_UNSET


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@dataclass(frozen=True)
class Got:
    """One received span, flattened."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    status: int
    attributes: dict[str, Any]
    resource: dict[str, Any]


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps what it is sent (the raw requests too)."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.spans: list[Got] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.raw.append(request.SerializeToString())
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        Got(
                            span.name,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.kind,
                            span.status.code,
                            {a.key: _value(a.value) for a in span.attributes},
                            resource,
                        )
                    )
        return trace_service_pb2.ExportTraceServiceResponse()

    async def wait_for(self, check: Callable[[list[Got]], bool], within: float = 15.0) -> list[Got]:
        """The spans received, once ``check`` holds (fails after ``within`` seconds)."""

        def got() -> str:
            return f"got {len(self.spans)}: {sorted({s.name for s in self.spans})}"

        await wait_for(lambda: check(self.spans), within, "the spans expected", got)
        return self.spans


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    """The receiver on a free port."""
    servicer = Receiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, port
    await server.stop(None)


def _traced_env(pg_url: str, redis_prefix: str, port: int, delay_ms: int = 50) -> dict[str, str]:
    return {
        "DATABASE_URL": pg_url,
        "REDIS_URL": REDIS_URL,
        "AUTHSIDECAR_REDIS_KEY_PREFIX": redis_prefix,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": str(delay_ms),
        "AUTHSIDECAR_LOCAL_CACHE_SECONDS": "0",  # cache spans are Redis calls; an in-process hit has none
    }


def _traceparent() -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """A caller's trace id, span id and the metadata that carries them."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    metadata = (("traceparent", f"00-{trace_id}-{span_id}-01"), ("tracestate", "caller=yes"))
    return trace_id, span_id, metadata


def _one(spans: list[Got], name: str, trace_id: str) -> Got:
    found = [s for s in spans if s.name == name and s.trace_id == trace_id]
    assert len(found) == 1, (name, [(s.name, s.trace_id) for s in spans])
    return found[0]


def _children(spans: list[Got], parent: Got) -> list[Got]:
    return [s for s in spans if s.trace_id == parent.trace_id and s.parent_id == parent.span_id]


def _stop(server: Server) -> None:
    assert server.stop() == 0, server.log()


async def test_spans_continue_the_callers_trace_with_codes_reasons_and_children(
    tmp_path: Path, pg_url: str, redis_prefix: str, receiver: tuple[Receiver, int]
) -> None:
    received, port = receiver
    server = start_server(tmp_path, _traced_env(pg_url, redis_prefix, port))
    server.wait_for(health_pb2.HealthCheckResponse.SERVING)
    stubs = stubs_for(server.address)
    email = f"trace-{secrets.token_hex(4)}@example.com"
    password = f"pw-{secrets.token_hex(8)}"
    wrong = f"wrong-{secrets.token_hex(8)}"
    try:
        up_trace, _, up_md = _traceparent()
        up = await stubs.auth.SignUp(
            auth_pb.SignUpRequest(email=email, password=password, name="Tracy"), metadata=up_md
        )
        validate_trace, validate_parent, validate_md = _traceparent()
        request_id = f"trace-{secrets.token_hex(4)}"
        await stubs.sessions.ValidateSession(
            session_pb.ValidateSessionRequest(token=up.token), metadata=(*validate_md, ("x-request-id", request_id))
        )
        wrong_trace, _, wrong_md = _traceparent()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=wrong), metadata=wrong_md)
        assert error_details(refused.value).reason == "INVALID_EMAIL_OR_PASSWORD"
        unknown_trace, _, unknown_md = _traceparent()
        with pytest.raises(grpc.aio.AioRpcError):
            await stubs.auth.SignIn(auth_pb.SignInRequest(email=f"nobody-{email}", password=wrong), metadata=unknown_md)
        signed_in = await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=password))  # no traceparent
        garbled_id = f"garbled-{secrets.token_hex(4)}"
        garbled = (("traceparent", "00-" + "z" * 32 + "-" + "0" * 16 + "-01"), ("x-request-id", garbled_id))
        await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=up.token), metadata=garbled)
        traces = (up_trace, validate_trace, wrong_trace, unknown_trace)
        spans = await received.wait_for(
            lambda got: (
                {s.trace_id for s in got if s.kind == SERVER} >= set(traces)
                and sum(s.name == "authsidecar.v1.AuthService/SignIn" for s in got) == 3
                and any(s.attributes.get("authsidecar.request_id") == garbled_id for s in got)
            )
        )
    finally:
        await stubs.channel.close()
        _stop(server)

    # ValidateSession continues the caller's trace, as a server span under the caller's span.
    validate = _one(spans, "authsidecar.v1.SessionService/ValidateSession", validate_trace)
    assert validate.parent_id == validate_parent
    assert validate.kind == SERVER
    assert validate.status == UNSET
    assert validate.attributes == {
        "rpc.system": "grpc",
        "rpc.service": "authsidecar.v1.SessionService",
        "rpc.method": "ValidateSession",
        "rpc.grpc.status_code": 0,
        "authsidecar.request_id": request_id,
        "enduser.id": up.user.id,
    }
    assert validate.resource["service.name"] == "authsidecar"
    cache_reads = [s for s in _children(spans, validate) if s.name == "cache.get"]
    assert [s.attributes["cache.hit"] for s in cache_reads] == [True]  # SignUp wrote the session through

    # SignUp: the hash and the unit of work are children of the RPC's span.
    sign_up = _one(spans, "authsidecar.v1.AuthService/SignUp", up_trace)
    assert {"password.hash", "db.transaction"} <= {s.name for s in _children(spans, sign_up)}
    transaction = next(s for s in _children(spans, sign_up) if s.name == "db.transaction")
    assert transaction.attributes["db.system.name"] == "postgresql"

    # A wrong password: the code and reason, not a server fault (OpenTelemetry's gRPC server convention).
    refused_span = _one(spans, "authsidecar.v1.AuthService/SignIn", wrong_trace)
    assert refused_span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert refused_span.attributes["authsidecar.error.reason"] == "INVALID_EMAIL_OR_PASSWORD"
    assert refused_span.status == UNSET
    assert "enduser.id" not in refused_span.attributes
    # An unknown email looks exactly like a wrong password in a trace too: same children, same attribute keys.
    unknown_span = _one(spans, "authsidecar.v1.AuthService/SignIn", unknown_trace)
    assert unknown_span.attributes.keys() == refused_span.attributes.keys()
    assert unknown_span.attributes["authsidecar.error.reason"] == "INVALID_EMAIL_OR_PASSWORD"
    shape = sorted((s.name, sorted(s.attributes.items())) for s in _children(spans, refused_span))
    assert shape == sorted((s.name, sorted(s.attributes.items())) for s in _children(spans, unknown_span))
    assert "password.verify" in [name for name, _ in shape]

    # Without a traceparent, a new trace (the server span is a root) with its own verify.
    sign_in = next(
        s
        for s in spans
        if s.name == "authsidecar.v1.AuthService/SignIn" and s.trace_id not in traces and s.kind == SERVER
    )
    assert sign_in.parent_id == ""
    assert sign_in.attributes["enduser.id"] == up.user.id
    assert "password.verify" in {s.name for s in _children(spans, sign_in)}

    # A malformed traceparent is ignored: a new trace.
    lone = next(s for s in spans if s.attributes.get("authsidecar.request_id") == garbled_id)
    assert lone.parent_id == ""
    assert lone.trace_id not in traces
    assert lone.attributes["rpc.grpc.status_code"] == 0

    # No secret anywhere in what was exported (attributes, resource, names, events): not the password, the
    # wrong password, the email, the tokens or the cookies (when this profile sends any).
    raw = b"".join(received.raw)
    assert len(raw) > 1000
    for secret in (password, wrong, email, up.token, signed_in.token):
        assert secret.encode() not in raw, secret
    for cookie in (up.session_cookie, signed_in.session_cookie):
        assert not cookie or cookie.encode() not in raw


async def test_spans_are_flushed_on_sigterm(
    tmp_path: Path, pg_url: str, redis_prefix: str, receiver: tuple[Receiver, int]
) -> None:
    received, port = receiver
    # A minute's schedule delay: nothing is sent on a timer during the test, only by the shutdown's flush.
    server = start_server(tmp_path, _traced_env(pg_url, redis_prefix, port, delay_ms=60_000))
    server.wait_for(health_pb2.HealthCheckResponse.SERVING)
    stubs = stubs_for(server.address)
    trace_id, _, metadata = _traceparent()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token="x" * 43), metadata=metadata)
        assert error_details(refused.value).reason == "INVALID_TOKEN"
        await asyncio.sleep(0.5)
        assert received.spans == []
    finally:
        await stubs.channel.close()
    await asyncio.to_thread(_stop, server)
    span = _one(received.spans, "authsidecar.v1.SessionService/ValidateSession", trace_id)
    assert span.attributes["authsidecar.error.reason"] == "INVALID_TOKEN"
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert "tracing on: OTLP/gRPC to http://127.0.0.1:" in server.log()


async def test_an_unreachable_collector_costs_the_calls_nothing(tmp_path: Path, pg_url: str, redis_prefix: str) -> None:
    env = _traced_env(pg_url, redis_prefix, free_port())  # nothing listens there
    env |= {"OTEL_BSP_MAX_QUEUE_SIZE": "4", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2"}  # the queue overflows at once
    server = start_server(tmp_path, env)
    server.wait_for(health_pb2.HealthCheckResponse.SERVING)
    stubs = stubs_for(server.address)
    try:
        email = f"trace-down-{secrets.token_hex(4)}@example.com"
        up = await stubs.auth.SignUp(auth_pb.SignUpRequest(email=email, password="pw-pw-pw-pw", name="D"))
        # The span queue is full (spans are being dropped) and every call is still answered, each within its own
        # deadline: a call never waits for the exporter.
        for _ in range(50):
            await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=up.token), timeout=2)
        assert "Queue full, dropping" in server.log()
    finally:
        await stubs.channel.close()
    # The shutdown's flush gives up (the spans left are dropped, and that is logged) and the process exits 0:
    # _stop fails if it had to be killed after server.stop's 20 s.
    await asyncio.to_thread(_stop, server)
    assert "spans not sent within 5.0s of shutdown" in server.log(), server.log()
    # About a hundred spans were dropped: the SDK's warning per dropped span is written once (its duplicate
    # filter), not a hundred times.
    assert server.log().count("Queue full, dropping") == 1, server.log()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/v1/traces"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
    ],
)
async def test_a_configuration_that_cannot_work_stops_start_up(tmp_path: Path, variable: str, value: str) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}", variable: value}
    server = start_server(tmp_path, env)
    code = await asyncio.to_thread(server.process.wait, 20)
    assert code != 0
    assert f"invalid configuration: {variable}" in server.log()
    assert "Traceback" not in server.log()
