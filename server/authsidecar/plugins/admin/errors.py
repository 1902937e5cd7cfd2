"""The admin plugin's errors (reasons in the ErrorReason enum of proto/authsidecar/v1/error_reason.proto)."""

from __future__ import annotations

from authsidecar.errors import PermissionDenied

__all__ = ["BannedUser"]


class BannedUser(PermissionDenied):
    """The user is banned: no session (Better Auth's BANNED_USER; its message is the plugin's option)."""

    reason = "BANNED_USER"
    default_message = (
        "You have been banned from this application. Please contact support if you believe this is an error."
    )
