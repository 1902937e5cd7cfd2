from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_EMAIL_OR_PASSWORD: _ClassVar[ErrorReason]
    ERROR_REASON_USER_ALREADY_EXISTS: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_EMAIL: _ClassVar[ErrorReason]
    ERROR_REASON_PASSWORD_TOO_SHORT: _ClassVar[ErrorReason]
    ERROR_REASON_PASSWORD_TOO_LONG: _ClassVar[ErrorReason]
    ERROR_REASON_MISSING_FIELD: _ClassVar[ErrorReason]
    ERROR_REASON_FIELD_NOT_ALLOWED: _ClassVar[ErrorReason]
    ERROR_REASON_VALIDATION_ERROR: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_TOKEN: _ClassVar[ErrorReason]
    ERROR_REASON_TOKEN_EXPIRED: _ClassVar[ErrorReason]
    ERROR_REASON_SESSION_EXPIRED: _ClassVar[ErrorReason]
    ERROR_REASON_EMAIL_NOT_VERIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_SESSION_NOT_FRESH: _ClassVar[ErrorReason]
    ERROR_REASON_TOO_MANY_REQUESTS: _ClassVar[ErrorReason]
    ERROR_REASON_BACKEND_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_INTERNAL: _ClassVar[ErrorReason]
    ERROR_REASON_SESSION_NOT_FOUND: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_INVALID_EMAIL_OR_PASSWORD: ErrorReason
ERROR_REASON_USER_ALREADY_EXISTS: ErrorReason
ERROR_REASON_INVALID_EMAIL: ErrorReason
ERROR_REASON_PASSWORD_TOO_SHORT: ErrorReason
ERROR_REASON_PASSWORD_TOO_LONG: ErrorReason
ERROR_REASON_MISSING_FIELD: ErrorReason
ERROR_REASON_FIELD_NOT_ALLOWED: ErrorReason
ERROR_REASON_VALIDATION_ERROR: ErrorReason
ERROR_REASON_INVALID_TOKEN: ErrorReason
ERROR_REASON_TOKEN_EXPIRED: ErrorReason
ERROR_REASON_SESSION_EXPIRED: ErrorReason
ERROR_REASON_EMAIL_NOT_VERIFIED: ErrorReason
ERROR_REASON_SESSION_NOT_FRESH: ErrorReason
ERROR_REASON_TOO_MANY_REQUESTS: ErrorReason
ERROR_REASON_BACKEND_UNAVAILABLE: ErrorReason
ERROR_REASON_INTERNAL: ErrorReason
ERROR_REASON_SESSION_NOT_FOUND: ErrorReason
