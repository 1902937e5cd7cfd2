"""Domain exceptions. Services raise only these; the transport maps each class to a gRPC status in one place.

Every class has a stable machine ``reason`` (the ErrorInfo.reason clients switch on)::

    AuthSidecarError                    INTERNAL
    ├── InvalidArgument                 VALIDATION_ERROR       (carries field violations)
    │   ├── MissingField                MISSING_FIELD
    │   ├── FieldNotAllowed             FIELD_NOT_ALLOWED
    │   ├── InvalidEmail                INVALID_EMAIL
    │   ├── PasswordTooShort            PASSWORD_TOO_SHORT
    │   └── PasswordTooLong             PASSWORD_TOO_LONG
    ├── Unauthenticated
    │   ├── InvalidCredentials          INVALID_EMAIL_OR_PASSWORD
    │   ├── InvalidPassword             INVALID_PASSWORD
    │   ├── InvalidToken                INVALID_TOKEN
    │   ├── TokenExpired                TOKEN_EXPIRED
    │   └── SessionExpired              SESSION_EXPIRED
    ├── FailedPrecondition
    │   ├── EmailNotVerified            EMAIL_NOT_VERIFIED
    │   ├── SessionNotFresh             SESSION_NOT_FRESH
    │   └── CredentialAccountNotFound   CREDENTIAL_ACCOUNT_NOT_FOUND
    ├── AlreadyExists
    │   └── UserAlreadyExists           USER_ALREADY_EXISTS
    ├── NotFound
    │   ├── SessionNotFound             SESSION_NOT_FOUND
    │   └── UserNotFound                USER_NOT_FOUND
    ├── TooManyRequests                 TOO_MANY_REQUESTS      (carries retry_after)
    ├── BackendUnavailable              BACKEND_UNAVAILABLE    (carries retry_after)
    │   └── HookFailed                  HOOK_FAILED
    ├── HookRejected                    HOOK_REJECTED          (its gRPC status is the hook's choice)
    └── Conflict                        INTERNAL (storage: unique constraint violated; services translate it,
                                                  so one reaching a client is a bug)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "HOOK_STATUSES",
    "AlreadyExists",
    "AuthSidecarError",
    "BackendUnavailable",
    "CallerNotAllowed",
    "CallerNotAuthenticated",
    "Conflict",
    "CredentialAccountNotFound",
    "EmailNotVerified",
    "FailedPrecondition",
    "FieldNotAllowed",
    "FieldViolation",
    "HookFailed",
    "HookRejected",
    "InvalidArgument",
    "InvalidCredentials",
    "InvalidEmail",
    "InvalidPassword",
    "InvalidToken",
    "MalformedRequest",
    "MissingField",
    "NotFound",
    "PasswordTooLong",
    "PasswordTooShort",
    "PermissionDenied",
    "RateLimited",
    "SessionExpired",
    "SessionNotFound",
    "SessionNotFresh",
    "TokenExpired",
    "TooManyRequests",
    "Unauthenticated",
    "UserAlreadyExists",
    "UserNotFound",
]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field: its name (snake_case, as in the proto) and what is wrong with it."""

    field: str
    description: str


class AuthSidecarError(Exception):
    """Base of every error the server reports to clients. ``message`` is safe to show to a caller."""

    reason = "INTERNAL"
    default_message = "internal error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class InvalidArgument(AuthSidecarError):
    """The request is malformed; ``violations`` names each bad field."""

    reason = "VALIDATION_ERROR"
    default_message = "invalid request"

    def __init__(self, violations: list[FieldViolation], message: str | None = None) -> None:
        self.violations = violations
        super().__init__(message or "; ".join(f"{v.field}: {v.description}" for v in violations))

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        """One violation of this class's reason."""
        return cls([FieldViolation(field, description)])


class MissingField(InvalidArgument):
    """A required field is empty."""

    reason = "MISSING_FIELD"


class FieldNotAllowed(InvalidArgument):
    """A field the client may not set (unknown, or configured with ``input = false``)."""

    reason = "FIELD_NOT_ALLOWED"


class InvalidEmail(InvalidArgument):
    """The email address is malformed."""

    reason = "INVALID_EMAIL"


class PasswordTooShort(InvalidArgument):
    """The password is shorter than the configured minimum."""

    reason = "PASSWORD_TOO_SHORT"


class PasswordTooLong(InvalidArgument):
    """The password is longer than the configured maximum."""

    reason = "PASSWORD_TOO_LONG"


class Unauthenticated(AuthSidecarError):
    """The caller's credentials or token do not hold."""

    reason = "INVALID_TOKEN"


class InvalidCredentials(Unauthenticated):
    """Unknown email or wrong password; deliberately indistinguishable."""

    reason = "INVALID_EMAIL_OR_PASSWORD"
    default_message = "invalid email or password"


class InvalidToken(Unauthenticated):
    """The token is unknown, revoked or malformed."""

    reason = "INVALID_TOKEN"
    default_message = "invalid session token"


class SessionExpired(Unauthenticated):
    """The session has expired."""

    reason = "SESSION_EXPIRED"
    default_message = "session expired"


class InvalidPassword(Unauthenticated):
    """The current password given for a sensitive operation is wrong."""

    reason = "INVALID_PASSWORD"
    default_message = "invalid password"


class TokenExpired(Unauthenticated):
    """The verification or reset token has expired."""

    reason = "TOKEN_EXPIRED"
    default_message = "token expired"


class FailedPrecondition(AuthSidecarError):
    """The operation is not allowed in the current state."""

    reason = "FAILED_PRECONDITION"


class EmailNotVerified(FailedPrecondition):
    """Sign-in needs a verified email address."""

    reason = "EMAIL_NOT_VERIFIED"
    default_message = "email not verified"


class SessionNotFresh(FailedPrecondition):
    """The operation needs a recently created session; sign in again."""

    reason = "SESSION_NOT_FRESH"
    default_message = "session is not fresh enough, sign in again"


class CredentialAccountNotFound(FailedPrecondition):
    """The user has no email/password credential."""

    reason = "CREDENTIAL_ACCOUNT_NOT_FOUND"
    default_message = "the user has no password"


class AlreadyExists(AuthSidecarError):
    """The resource already exists."""

    reason = "ALREADY_EXISTS"


class UserAlreadyExists(AlreadyExists):
    """A user with that email already exists."""

    reason = "USER_ALREADY_EXISTS"
    default_message = "a user with this email already exists"


class NotFound(AuthSidecarError):
    """The referenced resource does not exist (or is not the caller's)."""

    reason = "NOT_FOUND"


class SessionNotFound(NotFound):
    """No session of the caller's user has that id."""

    reason = "SESSION_NOT_FOUND"
    default_message = "session not found"


class UserNotFound(NotFound):
    """The user no longer exists."""

    reason = "USER_NOT_FOUND"
    default_message = "user not found"


class TooManyRequests(AuthSidecarError):
    """Load shedding: the work was refused rather than queued; retry after ``retry_after`` seconds."""

    reason = "TOO_MANY_REQUESTS"
    default_message = "too many requests, retry later"

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class RateLimited(TooManyRequests):
    """A rate limit of the caller's client IP or of the identifier (email, user) is spent; retry after
    ``retry_after`` seconds."""

    reason = "RATE_LIMITED"
    default_message = "too many requests for this client or account, retry later"


class MalformedRequest(InvalidArgument):
    """The request bytes are not a valid message of the RPC's request type."""

    reason = "MALFORMED_REQUEST"
    default_message = "the request is not a valid protobuf message of this RPC's type"

    def __init__(self) -> None:
        super().__init__([], self.default_message)


class CallerNotAuthenticated(Unauthenticated):
    """Caller authentication is on and the calling service presented no known key or certificate."""

    reason = "CALLER_NOT_AUTHENTICATED"
    default_message = "unknown calling service: send authorization: Bearer <service key> or a client certificate"


class PermissionDenied(AuthSidecarError):
    """The caller may not do this."""

    reason = "PERMISSION_DENIED"
    default_message = "permission denied"


class CallerNotAllowed(PermissionDenied):
    """The calling service is known but not allowed to call this RPC."""

    reason = "CALLER_NOT_ALLOWED"
    default_message = "this calling service may not call this RPC"


class BackendUnavailable(AuthSidecarError):
    """The database is unreachable; retry after ``retry_after`` seconds."""

    reason = "BACKEND_UNAVAILABLE"
    default_message = "storage backend unavailable, retry later"

    def __init__(self, message: str | None = None, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class Conflict(AuthSidecarError):
    """A unique constraint was violated. Raised by storage; services translate it to a specific error."""

    reason = "INTERNAL"
    default_message = "conflicting write"

    def __init__(self, constraint: str | None = None) -> None:
        self.constraint = constraint
        super().__init__(f"unique constraint violated: {constraint or 'unknown'}")


# The statuses a hook may answer with: those a client can act on (never OK, INTERNAL, UNKNOWN, ...).
HOOK_STATUSES = frozenset(
    {
        "INVALID_ARGUMENT",
        "FAILED_PRECONDITION",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "RESOURCE_EXHAUSTED",
        "ABORTED",
        "UNAVAILABLE",
    }
)


class HookRejected(AuthSidecarError):
    """A before hook refused the change; ``status`` is the gRPC status name it chose (one of HOOK_STATUSES)."""

    reason = "HOOK_REJECTED"
    default_message = "rejected by a hook"

    def __init__(self, message: str | None = None, status: str = "PERMISSION_DENIED") -> None:
        self.status = status if status in HOOK_STATUSES else "PERMISSION_DENIED"
        super().__init__(message)


class HookFailed(BackendUnavailable):
    """A before hook could not be run and hooks fail closed; retry later."""

    reason = "HOOK_FAILED"
    default_message = "a hook could not be run; nothing was changed, retry later"
