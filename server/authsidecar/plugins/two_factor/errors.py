"""The two_factor plugin's errors (reasons in the ErrorReason enum of proto/authsidecar/v1/error_reason.proto)."""

from __future__ import annotations

from authsidecar.errors import FailedPrecondition, TooManyRequests, Unauthenticated

__all__ = ["InvalidTwoFactorCode", "TwoFactorAlreadyEnabled", "TwoFactorLocked", "TwoFactorNotEnabled"]


class InvalidTwoFactorCode(Unauthenticated):
    """The TOTP or backup code is wrong."""

    reason = "INVALID_TWO_FACTOR_CODE"
    default_message = "invalid two-factor code"


class TwoFactorNotEnabled(FailedPrecondition):
    """Two-factor authentication is not on (or not enrolled) for this user."""

    reason = "TWO_FACTOR_NOT_ENABLED"
    default_message = "two-factor authentication is not enabled for this user"


class TwoFactorAlreadyEnabled(FailedPrecondition):
    """Two-factor authentication is already on."""

    reason = "TWO_FACTOR_ALREADY_ENABLED"
    default_message = "two-factor authentication is already enabled; disable it first"


class TwoFactorLocked(TooManyRequests):
    """Too many wrong codes in a row: two-factor sign-in is locked for ``retry_after`` seconds."""

    reason = "TWO_FACTOR_LOCKED"
    default_message = "too many wrong two-factor codes; try again later"
