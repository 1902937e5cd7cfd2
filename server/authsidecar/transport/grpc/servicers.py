"""Thin servicers: check the request's shape, call one service method, build the response."""

from __future__ import annotations

from typing import Any

import grpc

from authsidecar.cache.memo import BoundedMemo, IdentityMemo
from authsidecar.domain.models import Session, SessionWithUser, User
from authsidecar.errors import InvalidArgument
from authsidecar.services.accounts import AccountService, AuthResult
from authsidecar.services.profile import ProfileService
from authsidecar.services.sessions import SessionManager
from authsidecar.services.verification import AccountFlows
from authsidecar.transport.grpc.convert import Converter, struct_to_dict
from authsidecar.transport.grpc.fields import (
    MAX_COOKIE_HEADER,
    MAX_EMAIL,
    MAX_ID,
    MAX_IMAGE,
    MAX_NAME,
    MAX_PASSWORD,
    MAX_VERIFICATION_TOKEN,
    FieldChecker,
)
from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import auth_service_pb2_grpc as auth_grpc
from authsidecar_client.v1 import session_service_pb2 as session_pb
from authsidecar_client.v1 import session_service_pb2_grpc as session_grpc

__all__ = ["AuthServicer", "SessionServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


def _auth_parts(convert: Converter, sessions: SessionManager, result: AuthResult) -> dict[str, Any]:
    parts: dict[str, Any] = {"user": convert.user(result.user)}
    if result.session is not None and result.token:
        parts["session"] = convert.session(result.session)
        parts["token"] = result.token
        if sessions.cookies is not None:  # the profile's own session cookie (Better Auth's signed one)
            parts["session_cookie"], dont_remember_cookie = sessions.cookies.values(result.session, result.token)
            if dont_remember_cookie:  # remember_me false (SignUp, SignIn)
                parts["dont_remember_cookie"] = dont_remember_cookie
    return parts


def _token(request: Any) -> str:
    check = FieldChecker()
    token = check.token("token", request.token)
    check.done()
    return token


class AuthServicer(auth_grpc.AuthServiceServicer):
    """authsidecar.v1.AuthService."""

    def __init__(
        self,
        accounts: AccountService,
        sessions: SessionManager,
        flows: AccountFlows,
        profile: ProfileService,
        convert: Converter | None = None,
    ) -> None:
        self._accounts = accounts
        self._sessions = sessions
        self._flows = flows
        self._profile = profile
        self._convert = convert or Converter()

    async def SignUp(self, request: auth_pb.SignUpRequest, context: Context) -> auth_pb.SignUpResponse:
        """Create a user (and a session)."""
        check = FieldChecker()
        email = check.text("email", request.email, MAX_EMAIL)
        password = check.text("password", request.password, MAX_PASSWORD)
        name = check.text("name", request.name, MAX_NAME, plain=True)
        image = check.text("image", request.image, MAX_IMAGE, required=False, plain=True)
        client = check.client("client", request.client.ip_address, request.client.user_agent)
        check.done()
        remember = request.remember_me if request.HasField("remember_me") else True
        extra = struct_to_dict(request.additional_fields)
        result = await self._accounts.sign_up(email, password, name, image or None, client, remember, extra)
        return auth_pb.SignUpResponse(**_auth_parts(self._convert, self._sessions, result))

    async def SignIn(self, request: auth_pb.SignInRequest, context: Context) -> auth_pb.SignInResponse:
        """Check a password and create a session."""
        check = FieldChecker()
        email = check.text("email", request.email, MAX_EMAIL)
        password = check.text("password", request.password, MAX_PASSWORD)
        client = check.client("client", request.client.ip_address, request.client.user_agent)
        check.done()
        remember = request.remember_me if request.HasField("remember_me") else True
        result = await self._accounts.sign_in(email, password, client, remember)
        if result.challenge is not None:  # a second factor is needed: no user, no session yet
            c = result.challenge
            challenge = auth_pb.SignInChallenge(kind=c.kind, token=c.token, methods=list(c.methods))
            challenge.expires_at.FromDatetime(c.expires_at)
            return auth_pb.SignInResponse(challenge=challenge)
        return auth_pb.SignInResponse(**_auth_parts(self._convert, self._sessions, result))

    async def SignOut(self, request: auth_pb.SignOutRequest, context: Context) -> auth_pb.SignOutResponse:
        """End a session."""
        await self._sessions.sign_out(_token(request))
        return auth_pb.SignOutResponse()

    async def SendVerificationEmail(
        self, request: auth_pb.SendVerificationEmailRequest, context: Context
    ) -> auth_pb.SendVerificationEmailResponse:
        """Queue a verification message (no enumeration)."""
        check = FieldChecker()
        email = check.text("email", request.email, MAX_EMAIL)
        client = check.client("client", request.client.ip_address, request.client.user_agent)
        check.done()
        await self._flows.send_verification_email(email, client)
        return auth_pb.SendVerificationEmailResponse()

    async def VerifyEmail(self, request: auth_pb.VerifyEmailRequest, context: Context) -> auth_pb.VerifyEmailResponse:
        """Consume a verification token."""
        check = FieldChecker()
        token = check.text("token", request.token, MAX_VERIFICATION_TOKEN)  # Better Auth's are JWTs
        client = check.client("client", request.client.ip_address, request.client.user_agent)
        check.done()
        result = await self._flows.verify_email(token, client)
        return auth_pb.VerifyEmailResponse(**_auth_parts(self._convert, self._sessions, result))

    async def RequestPasswordReset(
        self, request: auth_pb.RequestPasswordResetRequest, context: Context
    ) -> auth_pb.RequestPasswordResetResponse:
        """Queue a reset message (no enumeration)."""
        check = FieldChecker()
        email = check.text("email", request.email, MAX_EMAIL)
        client = check.client("client", request.client.ip_address, request.client.user_agent)
        check.done()
        await self._flows.request_password_reset(email, client)
        return auth_pb.RequestPasswordResetResponse()

    async def ResetPassword(
        self, request: auth_pb.ResetPasswordRequest, context: Context
    ) -> auth_pb.ResetPasswordResponse:
        """Consume a reset token and set a new password."""
        check = FieldChecker()
        token = check.token("token", request.token)
        password = check.text("new_password", request.new_password, MAX_PASSWORD)
        client = check.client("client", request.client.ip_address, request.client.user_agent)
        check.done()
        await self._flows.reset_password(token, password, client)
        return auth_pb.ResetPasswordResponse()

    async def ChangePassword(
        self, request: auth_pb.ChangePasswordRequest, context: Context
    ) -> auth_pb.ChangePasswordResponse:
        """Change the caller's password."""
        check = FieldChecker()
        token = check.token("token", request.token)
        current = check.text("current_password", request.current_password, MAX_PASSWORD)
        new = check.text("new_password", request.new_password, MAX_PASSWORD)
        client = check.client("client", request.client.ip_address, request.client.user_agent)
        check.done()
        result = await self._profile.change_password(token, current, new, request.revoke_other_sessions, client)
        reply = auth_pb.ChangePasswordResponse()
        if result.session is not None:
            reply.session.CopyFrom(self._convert.session(result.session))
            reply.token = result.token or ""
            if self._sessions.cookies is not None:
                reply.session_cookie = self._sessions.cookies.values(result.session, result.token or "")[0]
        return reply

    async def ChangeEmail(self, request: auth_pb.ChangeEmailRequest, context: Context) -> auth_pb.ChangeEmailResponse:
        """Start an email change."""
        check = FieldChecker()
        token = check.token("token", request.token)
        new_email = check.text("new_email", request.new_email, MAX_EMAIL)
        client = check.client("client", request.client.ip_address, request.client.user_agent)
        password = check.text("current_password", request.current_password, MAX_PASSWORD, required=False)
        check.done()
        await self._flows.change_email(token, new_email, client, password)
        return auth_pb.ChangeEmailResponse()

    async def UpdateUser(self, request: auth_pb.UpdateUserRequest, context: Context) -> auth_pb.UpdateUserResponse:
        """Update name, image and/or additional fields."""
        check = FieldChecker()
        token = check.token("token", request.token)
        changes: dict[str, Any] = {}
        if request.HasField("name"):
            changes["name"] = check.text("name", request.name, MAX_NAME, plain=True)
        if request.HasField("image"):
            changes["image"] = check.text("image", request.image, MAX_IMAGE, required=False, plain=True) or None
        check.done()
        user = await self._profile.update_user(token, changes, struct_to_dict(request.additional_fields))
        return auth_pb.UpdateUserResponse(user=self._convert.user(user))

    async def DeleteUser(self, request: auth_pb.DeleteUserRequest, context: Context) -> auth_pb.DeleteUserResponse:
        """Delete the caller's account."""
        check = FieldChecker()
        token = check.token("token", request.token)
        password = check.text("password", request.password, MAX_PASSWORD, required=False)
        client = check.client("client", request.client.ip_address, request.client.user_agent)
        check.done()
        await self._profile.delete_user(token, password, client)
        return auth_pb.DeleteUserResponse()


class SessionServicer(session_grpc.SessionServiceServicer):
    """authsidecar.v1.SessionService."""

    def __init__(self, sessions: SessionManager, convert: Converter | None = None) -> None:
        self._sessions = sessions
        self._convert = convert or Converter()
        # Replies of unchanged sessions are reused. Looked up by the entry's identity first (the in-process tiers
        # hand out the same object: no hashing of its fields), then by its session and user (a snapshot decoded
        # from Redis or read from SQL again: equal values in new objects, with another check time).
        self._replies_by_id: IdentityMemo[SessionWithUser, session_pb.ValidateSessionResponse] = IdentityMemo(4096)
        self._replies: BoundedMemo[tuple[Session, User], session_pb.ValidateSessionResponse] = BoundedMemo(4096)

    async def ValidateSession(
        self, request: session_pb.ValidateSessionRequest, context: Context
    ) -> session_pb.ValidateSessionResponse:
        """The hot path: token -> session + user."""
        token = request.token
        if request.cookie:
            header = self._cookie_header(token, request.cookie)
            if self._sessions.cookies is None:
                raise InvalidArgument.field("cookie", "is only read with AUTHSIDECAR_COMPAT=better-auth; pass token")
            entry = await self._sessions.cookies.validate(header)
        else:
            if not token or len(token) > 256 or "\x00" in token:
                token = _token(request)  # raises the precise INVALID_ARGUMENT
            entry = await self._sessions.validate(token)
        reply = self._replies_by_id.get(entry)
        if reply is None:
            values = (entry.session, entry.user)
            reply = self._replies.get(values)
            if reply is None:
                reply = session_pb.ValidateSessionResponse(
                    session=self._convert.session(entry.session), user=self._convert.user(entry.user)
                )
                self._replies.put(values, reply)
            self._replies_by_id.put(entry, reply)
        return reply

    @staticmethod
    def _cookie_header(token: str, cookie: str) -> str:
        check = FieldChecker()
        check.text("cookie", cookie, MAX_COOKIE_HEADER)
        check.done()
        if token:
            raise InvalidArgument.field("cookie", "set token or cookie, not both")
        return cookie

    async def ListSessions(
        self, request: session_pb.ListSessionsRequest, context: Context
    ) -> session_pb.ListSessionsResponse:
        """The user's active sessions."""
        current, sessions = await self._sessions.sessions_of(_token(request))
        return session_pb.ListSessionsResponse(
            sessions=[self._convert.session(s) for s in sessions], current_session_id=current.id
        )

    async def RevokeSession(
        self, request: session_pb.RevokeSessionRequest, context: Context
    ) -> session_pb.RevokeSessionResponse:
        """Revoke one session by id."""
        check = FieldChecker()
        token = check.token("token", request.token)
        session_id = check.text("session_id", request.session_id, MAX_ID)
        check.done()
        await self._sessions.revoke(token, session_id)
        return session_pb.RevokeSessionResponse()

    async def RevokeOtherSessions(
        self, request: session_pb.RevokeOtherSessionsRequest, context: Context
    ) -> session_pb.RevokeOtherSessionsResponse:
        """Revoke all but the caller's session."""
        count = await self._sessions.revoke_others(_token(request))
        return session_pb.RevokeOtherSessionsResponse(revoked_count=count)

    async def RevokeSessions(
        self, request: session_pb.RevokeSessionsRequest, context: Context
    ) -> session_pb.RevokeSessionsResponse:
        """Revoke all sessions of the user."""
        count = await self._sessions.revoke_all(_token(request))
        return session_pb.RevokeSessionsResponse(revoked_count=count)
