"""A small typed async wrapper over the generated stubs: one method per RPC, errors with their machine reason.

async with AuthClient("127.0.0.1:50051") as auth:
    signed_up = await auth.sign_up("ada@example.com", "correct horse", name="Ada")
    current = await auth.validate_session(signed_up.token)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf.json_format import MessageToDict
from google.rpc import error_details_pb2, status_pb2

from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import auth_service_pb2_grpc as auth_grpc
from authsidecar_client.v1 import resources_pb2
from authsidecar_client.v1 import session_service_pb2 as session_pb
from authsidecar_client.v1 import session_service_pb2_grpc as session_grpc
from authsidecar_client.v1 import two_factor_service_pb2 as tf_pb
from authsidecar_client.v1 import two_factor_service_pb2_grpc as tf_grpc

__all__ = ["AuthClient", "AuthSidecarError", "fields_of"]


def fields_of(record: resources_pb2.User | resources_pb2.Session) -> dict[str, Any]:
    """A user's or session's additional fields as plain Python values (JSON numbers are floats)."""
    values: dict[str, Any] = MessageToDict(record.additional_fields)
    return values


_Reply = TypeVar("_Reply")


def _client(ip_address: str) -> resources_pb2.ClientContext:
    """The end user's client: pass its IP, it keys the server's per-IP rate limits."""
    return resources_pb2.ClientContext(ip_address=ip_address)


class AuthSidecarError(Exception):
    """A failed call: gRPC code, ErrorInfo reason (e.g. "INVALID_TOKEN"), metadata and field violations."""

    def __init__(self, rpc_error: grpc.aio.AioRpcError) -> None:
        self.code = rpc_error.code()
        self.message = rpc_error.details() or ""
        self.reason = ""
        self.metadata: dict[str, str] = {}
        self.field_violations: list[tuple[str, str]] = []
        metadata: Any = rpc_error.trailing_metadata() or ()
        raw = dict(metadata).get("grpc-status-details-bin")
        if isinstance(raw, bytes):
            for detail in status_pb2.Status.FromString(raw).details:
                info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
                if detail.Unpack(info):
                    self.reason, self.metadata = info.reason, dict(info.metadata)
                elif detail.Unpack(bad):
                    self.field_violations = [(v.field, v.description) for v in bad.field_violations]
        super().__init__(f"{self.code.name} {self.reason}: {self.message}")


class AuthClient:
    """Async client for AuthService, SessionService and (with the two_factor plugin) TwoFactorService over one
    channel."""

    def __init__(
        self,
        target: str,
        channel: grpc.aio.Channel | None = None,
        timeout: float = 5.0,
        credentials: grpc.ChannelCredentials | None = None,
        service_key: str | None = None,
    ) -> None:
        """``credentials``: TLS / mTLS (``grpc.ssl_channel_credentials(...)``), else plaintext; ``service_key``:
        sent as ``authorization: Bearer <key>`` when the server authenticates its callers."""
        if channel is None:
            channel = grpc.aio.secure_channel(target, credentials) if credentials else grpc.aio.insecure_channel(target)
        self._channel = channel
        self._metadata = (("authorization", f"Bearer {service_key}"),) if service_key else None
        self._auth = auth_grpc.AuthServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._sessions = session_grpc.SessionServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._two_factor = tf_grpc.TwoFactorServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._timeout = timeout

    async def __aenter__(self) -> AuthClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close(None)

    async def _call(self, method: Any, request: Any, reply: type[_Reply]) -> _Reply:
        try:
            result = await method(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise AuthSidecarError(exc) from None
        if not isinstance(result, reply):
            raise TypeError(f"unexpected reply type {type(result).__name__}")
        return result

    async def sign_up(
        self,
        email: str,
        password: str,
        name: str,
        image: str = "",
        remember_me: bool = True,
        ip_address: str = "",
        user_agent: str = "",
        additional_fields: Mapping[str, Any] | None = None,
    ) -> auth_pb.SignUpResponse:
        """Create a user (and a session unless auto sign-in is off). ``additional_fields``: values of the
        server's configured additional user fields (read them back with ``fields_of(reply.user)``)."""
        client = resources_pb2.ClientContext(ip_address=ip_address, user_agent=user_agent)
        request = auth_pb.SignUpRequest(
            email=email, password=password, name=name, image=image, client=client, remember_me=remember_me
        )
        if additional_fields:
            request.additional_fields.update(dict(additional_fields))
        return await self._call(self._auth.SignUp, request, auth_pb.SignUpResponse)

    async def sign_in(
        self, email: str, password: str, remember_me: bool = True, ip_address: str = "", user_agent: str = ""
    ) -> auth_pb.SignInResponse:
        """Check a password; returns user, session and token, or (two_factor plugin) ``reply.challenge`` to
        complete with ``verify_totp`` / ``verify_backup_code``."""
        client = resources_pb2.ClientContext(ip_address=ip_address, user_agent=user_agent)
        request = auth_pb.SignInRequest(email=email, password=password, client=client, remember_me=remember_me)
        return await self._call(self._auth.SignIn, request, auth_pb.SignInResponse)

    async def sign_out(self, token: str) -> None:
        """End a session."""
        await self._call(self._auth.SignOut, auth_pb.SignOutRequest(token=token), auth_pb.SignOutResponse)

    async def validate_session(self, token: str = "", *, cookie: str = "") -> session_pb.ValidateSessionResponse:
        """Token -> session + user; raises AuthSidecarError (reason INVALID_TOKEN / SESSION_EXPIRED). In the Better
        Auth profile ``token`` may also be the session cookie's signed value, or pass a Cookie header as ``cookie``."""
        request = session_pb.ValidateSessionRequest(token=token, cookie=cookie)
        return await self._call(self._sessions.ValidateSession, request, session_pb.ValidateSessionResponse)

    async def list_sessions(self, token: str) -> list[resources_pb2.Session]:
        """The user's active sessions (``current_session`` tells which one is the caller's)."""
        request = session_pb.ListSessionsRequest(token=token)
        reply = await self._call(self._sessions.ListSessions, request, session_pb.ListSessionsResponse)
        return list(reply.sessions)

    async def current_session(self, token: str) -> tuple[str, list[resources_pb2.Session]]:
        """The id of the token's own session, and the user's active sessions."""
        request = session_pb.ListSessionsRequest(token=token)
        reply = await self._call(self._sessions.ListSessions, request, session_pb.ListSessionsResponse)
        return reply.current_session_id, list(reply.sessions)

    async def revoke_session(self, token: str, session_id: str) -> None:
        """Revoke one of the user's sessions."""
        request = session_pb.RevokeSessionRequest(token=token, session_id=session_id)
        await self._call(self._sessions.RevokeSession, request, session_pb.RevokeSessionResponse)

    async def revoke_other_sessions(self, token: str) -> int:
        """Revoke all but this session; returns how many."""
        request = session_pb.RevokeOtherSessionsRequest(token=token)
        reply = await self._call(self._sessions.RevokeOtherSessions, request, session_pb.RevokeOtherSessionsResponse)
        return reply.revoked_count

    async def revoke_sessions(self, token: str) -> int:
        """Revoke all of the user's sessions; returns how many."""
        request = session_pb.RevokeSessionsRequest(token=token)
        reply = await self._call(self._sessions.RevokeSessions, request, session_pb.RevokeSessionsResponse)
        return reply.revoked_count

    async def send_verification_email(self, email: str, ip_address: str = "") -> None:
        """Queue a verification message (same answer whether or not the address exists)."""
        request = auth_pb.SendVerificationEmailRequest(email=email, client=_client(ip_address))
        await self._call(self._auth.SendVerificationEmail, request, auth_pb.SendVerificationEmailResponse)

    async def verify_email(self, token: str, ip_address: str = "") -> auth_pb.VerifyEmailResponse:
        """Consume a verification (or email change) token."""
        request = auth_pb.VerifyEmailRequest(token=token, client=_client(ip_address))
        return await self._call(self._auth.VerifyEmail, request, auth_pb.VerifyEmailResponse)

    async def request_password_reset(self, email: str, ip_address: str = "") -> None:
        """Queue a reset message (same answer whether or not the address exists)."""
        request = auth_pb.RequestPasswordResetRequest(email=email, client=_client(ip_address))
        await self._call(self._auth.RequestPasswordReset, request, auth_pb.RequestPasswordResetResponse)

    async def reset_password(self, token: str, new_password: str, ip_address: str = "") -> None:
        """Set a new password with a reset token."""
        request = auth_pb.ResetPasswordRequest(token=token, new_password=new_password, client=_client(ip_address))
        await self._call(self._auth.ResetPassword, request, auth_pb.ResetPasswordResponse)

    async def change_password(
        self,
        token: str,
        current_password: str,
        new_password: str,
        revoke_other_sessions: bool = False,
        ip_address: str = "",
    ) -> auth_pb.ChangePasswordResponse:
        """Change the password; with revoke_other_sessions, the reply carries the replacement session token."""
        request = auth_pb.ChangePasswordRequest(
            token=token,
            current_password=current_password,
            new_password=new_password,
            revoke_other_sessions=revoke_other_sessions,
            client=_client(ip_address),
        )
        return await self._call(self._auth.ChangePassword, request, auth_pb.ChangePasswordResponse)

    async def change_email(self, token: str, new_email: str, current_password: str = "", ip_address: str = "") -> None:
        """Start an email change: an approval link to a verified current address first (or give the current
        password), then a confirmation to the new address; the change applies when it is confirmed."""
        request = auth_pb.ChangeEmailRequest(
            token=token, new_email=new_email, current_password=current_password, client=_client(ip_address)
        )
        await self._call(self._auth.ChangeEmail, request, auth_pb.ChangeEmailResponse)

    async def update_user(
        self,
        token: str,
        name: str | None = None,
        image: str | None = None,
        additional_fields: Mapping[str, Any] | None = None,
    ) -> auth_pb.UpdateUserResponse:
        """Set the fields given (image "" clears it; an additional field set to None clears it)."""
        request = auth_pb.UpdateUserRequest(token=token)
        if name is not None:
            request.name = name
        if image is not None:
            request.image = image
        if additional_fields:
            request.additional_fields.update(dict(additional_fields))
        return await self._call(self._auth.UpdateUser, request, auth_pb.UpdateUserResponse)

    async def delete_user(self, token: str, password: str = "", ip_address: str = "") -> None:
        """Delete the account (password, or a fresh session)."""
        request = auth_pb.DeleteUserRequest(token=token, password=password, client=_client(ip_address))
        await self._call(self._auth.DeleteUser, request, auth_pb.DeleteUserResponse)

    # -- two_factor plugin -----------------------------------------------------------------------------------

    async def enable_two_factor(
        self, token: str, password: str, issuer: str = "", ip_address: str = ""
    ) -> tf_pb.EnableTwoFactorResponse:
        """Start enrolment: ``reply.totp_uri`` (show it as a QR code) and ``reply.backup_codes`` (show once)."""
        request = tf_pb.EnableTwoFactorRequest(
            token=token, password=password, issuer=issuer, client=_client(ip_address)
        )
        return await self._call(self._two_factor.EnableTwoFactor, request, tf_pb.EnableTwoFactorResponse)

    async def confirm_two_factor(self, token: str, code: str) -> resources_pb2.User:
        """Finish enrolment with a code from the authenticator app; two-factor authentication is then on."""
        request = tf_pb.ConfirmTwoFactorRequest(token=token, code=code)
        reply = await self._call(self._two_factor.ConfirmTwoFactor, request, tf_pb.ConfirmTwoFactorResponse)
        return reply.user

    async def verify_totp(self, challenge: str, code: str, ip_address: str = "") -> tf_pb.VerifyTotpResponse:
        """Complete a sign-in challenge with a TOTP code; returns user, session and token."""
        request = tf_pb.VerifyTotpRequest(challenge=challenge, code=code, client=_client(ip_address))
        return await self._call(self._two_factor.VerifyTotp, request, tf_pb.VerifyTotpResponse)

    async def verify_backup_code(
        self, challenge: str, code: str, ip_address: str = ""
    ) -> tf_pb.VerifyBackupCodeResponse:
        """Complete a sign-in challenge with a backup code (each works once)."""
        request = tf_pb.VerifyBackupCodeRequest(challenge=challenge, code=code, client=_client(ip_address))
        return await self._call(self._two_factor.VerifyBackupCode, request, tf_pb.VerifyBackupCodeResponse)

    async def disable_two_factor(self, token: str, password: str, ip_address: str = "") -> resources_pb2.User:
        """Turn two-factor authentication off."""
        request = tf_pb.DisableTwoFactorRequest(token=token, password=password, client=_client(ip_address))
        reply = await self._call(self._two_factor.DisableTwoFactor, request, tf_pb.DisableTwoFactorResponse)
        return reply.user

    async def generate_backup_codes(self, token: str, password: str, ip_address: str = "") -> list[str]:
        """Replace the backup codes; returns the new ones."""
        request = tf_pb.GenerateBackupCodesRequest(token=token, password=password, client=_client(ip_address))
        reply = await self._call(self._two_factor.GenerateBackupCodes, request, tf_pb.GenerateBackupCodesResponse)
        return list(reply.backup_codes)
