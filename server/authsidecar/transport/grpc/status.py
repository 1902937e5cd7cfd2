"""Domain exceptions -> gRPC status with google.rpc.ErrorInfo (+ BadRequest / RetryInfo). The only mapping."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from authsidecar import errors
from authsidecar.hooks.context import begin_call, tracking
from authsidecar.observability.logs import begin_request, request_id
from authsidecar.observability.metrics import RPC

__all__ = ["DOMAIN", "STARTED", "grpc_code", "rpc", "to_status"]

log = logging.getLogger("authsidecar.rpc")

DOMAIN = "authsidecar"

_CODES: dict[type[errors.AuthSidecarError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.TooManyRequests: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.BackendUnavailable: grpc.StatusCode.UNAVAILABLE,
}


def grpc_code(error: errors.AuthSidecarError) -> grpc.StatusCode:
    """The canonical code of a domain error (most specific class wins; a hook's rejection carries its own)."""
    if isinstance(error, errors.HookRejected):
        return grpc.StatusCode[error.status]
    for cls in type(error).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(max(int(seconds * 1e9), 1_000_000))
    return d


def to_status(error: errors.AuthSidecarError, metadata: dict[str, str] | None = None) -> grpc.Status:
    """The full status for a domain error."""
    code = grpc_code(error)
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=metadata or {}))]
    if isinstance(error, errors.InvalidArgument):
        violations = [
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ]
        details.append(_pack(error_details_pb2.BadRequest(field_violations=violations)))
    retry_after = getattr(error, "retry_after", None)
    if isinstance(retry_after, int | float):
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=_duration(retry_after))))
    status = status_pb2.Status(code=code.value[0], message=error.message, details=details)
    return rpc_status.to_status(status)


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Self = TypeVar("Self")
# grpc-stubs' aio ServicerContext lacks abort_with_status; the context is typed loosely here.
Handler = Callable[[Self, Req, Any], Awaitable[Resp]]


class _Started:
    """How many RPC handlers this process has started: the drain waits until it stops moving, i.e. until grpc core
    holds no received call that was not picked up (a plain counter in the wrapper every RPC has anyway: cheaper
    on the hot path than a server interceptor)."""

    count = 0


STARTED = _Started()


class _Malformed:
    """What a request deserializer returns for bytes that are not a message of its type."""


MALFORMED: Any = _Malformed()


def tolerant(deserializer: Callable[[bytes], Any], fallback: Callable[[], Any] | None = None) -> Callable[[bytes], Any]:
    """A request deserializer that returns MALFORMED (or ``fallback()``) instead of raising (grpc would answer
    UNKNOWN without details and log a traceback each time); the rpc wrapper then answers INVALID_ARGUMENT /
    MALFORMED_REQUEST."""

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return MALFORMED if fallback is None else fallback()

    return deserialize


def rpc(method: Handler[Self, Req, Resp]) -> Handler[Self, Req, Resp]:
    """Wrap a servicer method: the caller is checked (when callers are configured) and a malformed request
    refused; domain errors become their status; anything else becomes INTERNAL with a request id that is logged
    with the traceback (never sent to the client)."""

    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Self, request: Req, context: Any) -> Resp:
        STARTED.count += 1
        begin_request(name, context)
        started = time.perf_counter() if RPC.on else 0.0
        code = "OK"
        try:
            callers = getattr(self, "callers", None)
            if callers is not None:
                callers.authorize(name, context.invocation_metadata() or (), context.auth_context() or {})
            if request is MALFORMED:
                log.info("%s: refused a request that is not a valid %sRequest message", name, name)
                raise errors.MalformedRequest()
            if tracking.on:  # hooks read the call's context
                client = getattr(request, "client", None)
                begin_call(name, getattr(client, "ip_address", None), getattr(client, "user_agent", None))
            return await method(self, request, context)
        except grpc.aio.AbortError:
            code = "ABORTED"
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except errors.AuthSidecarError as exc:
            metadata = None
            code = grpc_code(exc).name
            if code == "INTERNAL":
                metadata = {"request_id": request_id()}
                log.error("internal error in %s (request_id=%s): %s", method.__name__, metadata["request_id"], exc)
            await context.abort_with_status(to_status(exc, metadata))
            raise  # pragma: no cover
        except Exception:
            code = "INTERNAL"
            rid = request_id()
            log.exception("unexpected error in %s (request_id=%s)", method.__name__, rid)
            internal = errors.AuthSidecarError("internal error; quote request_id " + rid)
            await context.abort_with_status(to_status(internal, {"request_id": rid}))
            raise  # pragma: no cover
        finally:
            if started:  # metrics on
                RPC.record(name, code, started)

    return wrapper
