"""Domain exceptions -> gRPC status with google.rpc.ErrorInfo (+ BadRequest / RetryInfo). The only mapping."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from authsidecar import errors

__all__ = ["DOMAIN", "grpc_code", "to_status"]

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
