"""A server span per RPC, put around each unary handler when tracing is on (server.py; imported only then).

The span is named ``authsidecar.v1.SessionService/ValidateSession``, continues the caller's trace when the call
carries W3C ``traceparent`` / ``tracestate`` metadata (or whatever OTEL_PROPAGATORS configures), and carries
rpc.system, rpc.service, rpc.method, rpc.grpc.status_code, the request id (the one in log lines and INTERNAL
errors), the user id of responses that carry a user, and on errors the ErrorInfo reason. Following OpenTelemetry's
gRPC conventions, a server span is marked failed only for the codes that mean the server failed (INTERNAL,
UNAVAILABLE, UNKNOWN, ...); a refused password or token is the caller's outcome, recorded by code and reason.

Nothing from the request is recorded: not its fields, not the metadata (it may carry a service key), not the
status message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Tracer

from authsidecar.observability.logs import request_id
from authsidecar.observability.otel import failed

__all__ = ["SERVER_FAULTS", "error_reason", "traced_handlers"]

# The codes for which OpenTelemetry's gRPC conventions mark a server span as an error.
SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}
_DETAILS_KEY = "grpc-status-details-bin"
_MAX_REASON = 64

Behavior = Callable[[Any, Any], Awaitable[Any]]


def _parent(context: Any, fields: frozenset[str]) -> Context | None:
    """The caller's trace context from the call's metadata (text entries named by the propagator only)."""
    carrier: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if key in fields and isinstance(value, str):
            carrier[key] = value
    return propagate.extract(carrier) if carrier else None


def _code(context: Any) -> grpc.StatusCode:
    """The status the handler aborted with."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return _BY_VALUE.get(code, grpc.StatusCode.UNKNOWN) if isinstance(code, int) else grpc.StatusCode.UNKNOWN


def error_reason(trailing_metadata: Any) -> str | None:
    """The ErrorInfo reason in a status's ``grpc-status-details-bin`` trailer, if any."""
    for key, value in trailing_metadata or ():
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return info.reason[:_MAX_REASON] or None
    return None


def _traced(behavior: Behavior, service: str, method: str, tracer: Tracer) -> Behavior:
    name = f"{service}/{method}"
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
    fields = frozenset(propagate.get_global_textmap().fields)

    async def handle(request: Any, context: Any) -> Any:
        with tracer.start_as_current_span(
            name,
            context=_parent(context, fields),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as current:
            code = grpc.StatusCode.OK
            try:
                response = await behavior(request, context)
                user_id = getattr(getattr(response, "user", None), "id", None)
                if isinstance(user_id, str) and user_id:
                    current.set_attribute("enduser.id", user_id)
                return response
            except grpc.aio.AbortError:
                code = _code(context)
                reason = error_reason(context.trailing_metadata())
                if reason is not None:
                    current.set_attribute("authsidecar.error.reason", reason)
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:  # the call guard answers everything; grpc would answer UNKNOWN
                code = grpc.StatusCode.UNKNOWN
                raise
            finally:
                current.set_attribute("rpc.grpc.status_code", code.value[0])
                current.set_attribute("authsidecar.request_id", request_id())
                if code in SERVER_FAULTS:
                    failed(current, code.name)

    return handle


def traced_handlers(service: str, handlers: dict[str, Any], tracer: Tracer) -> dict[str, Any]:
    """``handlers`` (grpc.RpcMethodHandler by method name) with each unary-unary behaviour inside a server span;
    streaming handlers as they are."""
    return {
        method: handler._replace(unary_unary=_traced(handler.unary_unary, service, method, tracer))
        if handler.unary_unary is not None
        else handler
        for method, handler in handlers.items()
    }
