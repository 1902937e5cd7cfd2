"""Domain errors -> gRPC status (ErrorInfo / BadRequest / RetryInfo), request field checks, reason consistency."""

from __future__ import annotations

import inspect

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from authsidecar import errors
from authsidecar.errors import FieldViolation
from authsidecar.plugins.admin import errors as admin_errors
from authsidecar.plugins.two_factor import errors as two_factor_errors
from authsidecar.security.tokens import MAX_TOKEN_LENGTH
from authsidecar.services.sessions import ClientInfo
from authsidecar.transport.grpc.fields import FieldChecker
from authsidecar.transport.grpc.status import DOMAIN, grpc_code, to_status
from authsidecar_client.v1 import error_reason_pb2

Code = grpc.StatusCode


def unpack(status: grpc.Status) -> status_pb2.Status:
    """The google.rpc.Status carried in the trailing metadata."""
    trailers = dict(status.trailing_metadata)
    assert set(trailers) == {"grpc-status-details-bin"}
    raw = trailers["grpc-status-details-bin"]
    assert isinstance(raw, bytes)
    return status_pb2.Status.FromString(raw)


def details_of(status: grpc.Status) -> dict[str, any_pb2.Any]:
    """Packed details keyed by message type name; each type at most once."""
    packed = list(unpack(status).details)
    names = [d.TypeName() for d in packed]
    assert len(names) == len(set(names)), names
    return dict(zip(names, packed, strict=True))


def error_info(status: grpc.Status) -> error_details_pb2.ErrorInfo:
    info = error_details_pb2.ErrorInfo()
    assert details_of(status)["google.rpc.ErrorInfo"].Unpack(info)
    return info


VIOLATION = [FieldViolation("email", "is not a valid email address")]

# (error, gRPC code, ErrorInfo.reason)
CASES: list[tuple[errors.AuthSidecarError, grpc.StatusCode, str]] = [
    (errors.AuthSidecarError(), Code.INTERNAL, "INTERNAL"),
    (errors.InvalidArgument(VIOLATION), Code.INVALID_ARGUMENT, "VALIDATION_ERROR"),
    (errors.MissingField.field("name", "is required"), Code.INVALID_ARGUMENT, "MISSING_FIELD"),
    (
        errors.FieldNotAllowed.field("additional_fields.role", "may not be set"),
        Code.INVALID_ARGUMENT,
        "FIELD_NOT_ALLOWED",
    ),
    (errors.InvalidEmail(VIOLATION), Code.INVALID_ARGUMENT, "INVALID_EMAIL"),
    (errors.PasswordTooShort.field("password", "too short"), Code.INVALID_ARGUMENT, "PASSWORD_TOO_SHORT"),
    (errors.PasswordTooLong.field("password", "too long"), Code.INVALID_ARGUMENT, "PASSWORD_TOO_LONG"),
    (errors.Unauthenticated(), Code.UNAUTHENTICATED, "INVALID_TOKEN"),
    (errors.InvalidCredentials(), Code.UNAUTHENTICATED, "INVALID_EMAIL_OR_PASSWORD"),
    (errors.InvalidToken(), Code.UNAUTHENTICATED, "INVALID_TOKEN"),
    (errors.SessionExpired(), Code.UNAUTHENTICATED, "SESSION_EXPIRED"),
    (errors.AlreadyExists(), Code.ALREADY_EXISTS, "ALREADY_EXISTS"),
    (errors.UserAlreadyExists(), Code.ALREADY_EXISTS, "USER_ALREADY_EXISTS"),
    (errors.NotFound(), Code.NOT_FOUND, "NOT_FOUND"),
    (errors.SessionNotFound(), Code.NOT_FOUND, "SESSION_NOT_FOUND"),
    (errors.TooManyRequests(retry_after=0.25), Code.RESOURCE_EXHAUSTED, "TOO_MANY_REQUESTS"),
    (errors.BackendUnavailable(), Code.UNAVAILABLE, "BACKEND_UNAVAILABLE"),
    (errors.Conflict("user_email_key"), Code.INTERNAL, "INTERNAL"),
    (errors.InvalidPassword(), Code.UNAUTHENTICATED, "INVALID_PASSWORD"),
    (errors.TokenExpired(), Code.UNAUTHENTICATED, "TOKEN_EXPIRED"),
    (errors.FailedPrecondition(), Code.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
    (errors.EmailNotVerified(), Code.FAILED_PRECONDITION, "EMAIL_NOT_VERIFIED"),
    (errors.SessionNotFresh(), Code.FAILED_PRECONDITION, "SESSION_NOT_FRESH"),
    (errors.CredentialAccountNotFound(), Code.FAILED_PRECONDITION, "CREDENTIAL_ACCOUNT_NOT_FOUND"),
    (errors.UserNotFound(), Code.NOT_FOUND, "USER_NOT_FOUND"),
    (errors.RateLimited(retry_after=2.5), Code.RESOURCE_EXHAUSTED, "RATE_LIMITED"),
    (errors.MalformedRequest(), Code.INVALID_ARGUMENT, "MALFORMED_REQUEST"),
    (errors.CallerNotAuthenticated(), Code.UNAUTHENTICATED, "CALLER_NOT_AUTHENTICATED"),
    (errors.PermissionDenied(), Code.PERMISSION_DENIED, "PERMISSION_DENIED"),
    (errors.CallerNotAllowed(), Code.PERMISSION_DENIED, "CALLER_NOT_ALLOWED"),
    (errors.HookRejected("not from this domain", "INVALID_ARGUMENT"), Code.INVALID_ARGUMENT, "HOOK_REJECTED"),
    (errors.HookFailed(), Code.UNAVAILABLE, "HOOK_FAILED"),
]


def _error_classes() -> list[type[errors.AuthSidecarError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.AuthSidecarError) and cls.__module__ == errors.__name__
    ]


def test_every_error_class_has_a_case() -> None:
    assert {type(error) for error, _, _ in CASES} == set(_error_classes())


@pytest.mark.parametrize(("error", "code", "reason"), CASES, ids=[type(c[0]).__name__ for c in CASES])
class TestToStatus:
    def test_code(self, error: errors.AuthSidecarError, code: grpc.StatusCode, reason: str) -> None:
        assert grpc_code(error) is code
        status = to_status(error)
        assert status.code is code
        assert unpack(status).code == code.value[0]

    def test_message(self, error: errors.AuthSidecarError, code: grpc.StatusCode, reason: str) -> None:
        status = to_status(error)
        assert status.details == error.message
        assert unpack(status).message == error.message

    def test_error_info(self, error: errors.AuthSidecarError, code: grpc.StatusCode, reason: str) -> None:
        info = error_info(to_status(error))
        assert info.domain == DOMAIN == "authsidecar"
        assert info.reason == reason == error.reason
        assert dict(info.metadata) == {}

    def test_detail_types(self, error: errors.AuthSidecarError, code: grpc.StatusCode, reason: str) -> None:
        expected = {"google.rpc.ErrorInfo"}
        if isinstance(error, errors.InvalidArgument):
            expected.add("google.rpc.BadRequest")
        if isinstance(error, errors.TooManyRequests | errors.BackendUnavailable):
            expected.add("google.rpc.RetryInfo")
        assert set(details_of(to_status(error))) == expected


def test_bad_request_carries_every_violation() -> None:
    error = errors.InvalidArgument(
        [FieldViolation("email", "is required"), FieldViolation("client.ip_address", "is not an IP address")]
    )
    bad_request = error_details_pb2.BadRequest()
    assert details_of(to_status(error))["google.rpc.BadRequest"].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("email", "is required"),
        ("client.ip_address", "is not an IP address"),
    ]
    assert to_status(error).details == "email: is required; client.ip_address: is not an IP address"


@pytest.mark.parametrize(
    ("error", "nanos"),
    [
        (errors.TooManyRequests(retry_after=0.25), 250_000_000),
        (errors.TooManyRequests(retry_after=2), 2_000_000_000),
        (errors.TooManyRequests(retry_after=0), 1_000_000),  # never a zero delay
        (errors.BackendUnavailable(), 1_000_000_000),
        (errors.BackendUnavailable("busy", retry_after=0.1), 100_000_000),
    ],
)
def test_retry_info(error: errors.AuthSidecarError, nanos: int) -> None:
    retry = error_details_pb2.RetryInfo()
    assert details_of(to_status(error))["google.rpc.RetryInfo"].Unpack(retry)
    assert retry.retry_delay.ToNanoseconds() == nanos


def test_metadata_goes_into_error_info() -> None:
    info = error_info(to_status(errors.AuthSidecarError("boom"), {"request_id": "abc123"}))
    assert info.reason == "INTERNAL"
    assert dict(info.metadata) == {"request_id": "abc123"}


def test_most_specific_class_wins() -> None:
    class Custom(errors.SessionNotFound):
        reason = "SESSION_NOT_FOUND"

    assert grpc_code(Custom()) is Code.NOT_FOUND

    class Unmapped(errors.AuthSidecarError):
        pass

    assert grpc_code(Unmapped()) is Code.INTERNAL


# -------------------------------------------------------------------------------------------------- field checks


class TestFieldChecker:
    def test_all_good(self) -> None:
        check = FieldChecker()
        assert check.text("name", "Ada", 10) == "Ada"
        assert check.token("token", "t" * MAX_TOKEN_LENGTH) == "t" * MAX_TOKEN_LENGTH
        assert check.client("client", "2001:db8::1", "curl/8") == ClientInfo("2001:db8::1", "curl/8")
        check.done()

    def test_optional_empty_is_fine(self) -> None:
        check = FieldChecker()
        assert check.text("image", "", 10, required=False) == ""
        assert check.client("client", "", "") == ClientInfo(None, None)
        check.done()

    def test_missing_only_raises_missing_field(self) -> None:
        check = FieldChecker()
        check.text("email", "", 10)
        check.token("token", "")
        with pytest.raises(errors.MissingField) as info:
            check.done()
        assert info.value.reason == "MISSING_FIELD"
        assert [(v.field, v.description) for v in info.value.violations] == [
            ("email", "is required"),
            ("token", "is required"),
        ]

    def test_invalid_raises_validation_error_with_missing_included(self) -> None:
        check = FieldChecker()
        check.text("email", "", 10)
        check.text("name", "x" * 11, 10)
        with pytest.raises(errors.InvalidArgument) as info:
            check.done()
        assert type(info.value) is errors.InvalidArgument
        assert info.value.reason == "VALIDATION_ERROR"
        assert [v.field for v in info.value.violations] == ["email", "name"]

    def test_length_limit_is_inclusive(self) -> None:
        check = FieldChecker()
        check.text("name", "x" * 10, 10)
        check.done()
        check.text("name", "x" * 11, 10)
        with pytest.raises(errors.InvalidArgument, match="at most 10 characters"):
            check.done()

    def test_over_long_token(self) -> None:
        check = FieldChecker()
        check.token("token", "t" * (MAX_TOKEN_LENGTH + 1))
        with pytest.raises(errors.InvalidArgument, match=f"token: must be at most {MAX_TOKEN_LENGTH}"):
            check.done()

    @pytest.mark.parametrize("value", ["\x00", "a\x00b", "abc\x00"])
    def test_nul_bytes(self, value: str) -> None:
        check = FieldChecker()
        check.text("name", value, 10)
        with pytest.raises(errors.InvalidArgument) as info:
            check.done()
        assert info.value.violations == [FieldViolation("name", "must not contain NUL characters")]

    def test_nul_in_optional_field(self) -> None:
        check = FieldChecker()
        check.client("client", "", "agent\x00")
        with pytest.raises(errors.InvalidArgument) as info:
            check.done()
        assert [v.field for v in info.value.violations] == ["client.user_agent"]

    @pytest.mark.parametrize("ip", ["127.0.0.1", "203.0.113.255", "::1", "2001:db8::8a2e:370:7334", "::ffff:10.0.0.1"])
    def test_good_ip(self, ip: str) -> None:
        check = FieldChecker()
        assert check.client("client", ip, "").ip_address == ip
        check.done()

    @pytest.mark.parametrize("ip", ["localhost", "256.1.1.1", "1.2.3", "10.0.0.1/8", "::g", " 10.0.0.1", "1.2.3.4:80"])
    def test_bad_ip(self, ip: str) -> None:
        check = FieldChecker()
        check.client("client", ip, "")
        with pytest.raises(errors.InvalidArgument) as info:
            check.done()
        assert FieldViolation("client.ip_address", "is not an IP address") in info.value.violations
        assert {v.field for v in info.value.violations} == {"client.ip_address"}


# ---------------------------------------------------------------------------------------------------- consistency

# Categories, not errors: their reason is the bare gRPC code name, which says nothing the code does not.
# AlreadyExists and NotFound are never raised themselves; Conflict is storage-internal and translated by services.
GENERIC: set[type[errors.AuthSidecarError]] = {
    errors.AlreadyExists,
    errors.NotFound,
    errors.FailedPrecondition,
    errors.PermissionDenied,
    errors.Conflict,
}
PREFIX = "ERROR_REASON_"


def proto_reasons() -> set[str]:
    names = error_reason_pb2.ErrorReason.keys()
    assert all(name.startswith(PREFIX) for name in names)
    return {name.removeprefix(PREFIX) for name in names}


def test_generic_classes_are_really_generic() -> None:
    for cls in GENERIC:
        error = errors.Conflict() if cls is errors.Conflict else cls()
        assert cls.reason == grpc_code(error).name, cls


SPECIFIC = [cls for cls in _error_classes() if cls not in GENERIC]


@pytest.mark.parametrize("cls", SPECIFIC, ids=[cls.__name__ for cls in SPECIFIC])
def test_reason_is_in_the_proto_enum(cls: type[errors.AuthSidecarError]) -> None:
    assert cls.reason in proto_reasons(), f"{cls.__name__}.reason {cls.reason!r} is not an ErrorReason value"


def test_only_generic_reasons_may_be_missing_from_the_proto() -> None:
    used = {cls.reason for cls in _error_classes()}
    assert used - proto_reasons() <= {"ALREADY_EXISTS", "NOT_FOUND", "FAILED_PRECONDITION", "PERMISSION_DENIED"}


def test_proto_enum_sanity() -> None:
    assert error_reason_pb2.ErrorReason.Value("ERROR_REASON_UNSPECIFIED") == 0
    values = error_reason_pb2.ErrorReason.values()
    assert len(values) == len(set(values))


# Plugins' errors live in their packages (authsidecar.plugins.<name>.errors): same mapping, reasons in the same enum.
PLUGIN_CASES: list[tuple[errors.AuthSidecarError, grpc.StatusCode, str]] = [
    (admin_errors.BannedUser(), Code.PERMISSION_DENIED, "BANNED_USER"),
    (two_factor_errors.InvalidTwoFactorCode(), Code.UNAUTHENTICATED, "INVALID_TWO_FACTOR_CODE"),
    (two_factor_errors.TwoFactorNotEnabled(), Code.FAILED_PRECONDITION, "TWO_FACTOR_NOT_ENABLED"),
    (two_factor_errors.TwoFactorAlreadyEnabled(), Code.FAILED_PRECONDITION, "TWO_FACTOR_ALREADY_ENABLED"),
    (two_factor_errors.TwoFactorLocked(retry_after=900), Code.RESOURCE_EXHAUSTED, "TWO_FACTOR_LOCKED"),
]


def test_every_plugin_error_class_has_a_case() -> None:
    classes = {
        cls
        for module in (admin_errors, two_factor_errors)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, errors.AuthSidecarError) and cls.__module__ == module.__name__
    }
    assert {type(error) for error, _, _ in PLUGIN_CASES} == classes


@pytest.mark.parametrize(("error", "code", "reason"), PLUGIN_CASES, ids=[type(c[0]).__name__ for c in PLUGIN_CASES])
def test_plugin_errors_map_like_core_errors(error: errors.AuthSidecarError, code: grpc.StatusCode, reason: str) -> None:
    assert reason in proto_reasons()
    assert grpc_code(error) is code
    info = error_info(to_status(error))
    assert (info.domain, info.reason) == (DOMAIN, reason)
