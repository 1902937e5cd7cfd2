"""authsidecar.v1.TwoFactorService (transport only: checks the request's shape, calls the service)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from authsidecar.plugins.two_factor.service import TwoFactorService
from authsidecar.services.accounts import AuthResult
from authsidecar.services.sessions import SessionManager
from authsidecar.transport.grpc.convert import Converter
from authsidecar.transport.grpc.fields import MAX_PASSWORD, FieldChecker
from authsidecar_client.v1 import two_factor_service_pb2 as pb
from authsidecar_client.v1 import two_factor_service_pb2_grpc as pb_grpc

__all__ = ["TwoFactorServicer", "add_to_server", "service_name"]

Context = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R", pb.VerifyTotpResponse, pb.VerifyBackupCodeResponse)
MAX_CODE = 64  # TOTP codes are 6 digits, backup codes 11 characters
MAX_ISSUER = 128


def service_name() -> str:
    """The service's full name (reflection, health)."""
    return str(pb.DESCRIPTOR.services_by_name["TwoFactorService"].full_name)


# The generated registration function.
add_to_server: Callable[[Any, Any], None] = pb_grpc.add_TwoFactorServiceServicer_to_server


class TwoFactorServicer(pb_grpc.TwoFactorServiceServicer):
    """Thin handlers over TwoFactorService."""

    def __init__(self, service: TwoFactorService, convert: Converter, sessions: SessionManager) -> None:
        self._service = service
        self._convert = convert
        self._sessions = sessions

    def _signed_in(self, result: AuthResult, reply: R) -> R:
        reply.user.CopyFrom(self._convert.user(result.user))
        if result.session is not None and result.token:
            reply.session.CopyFrom(self._convert.session(result.session))
            reply.token = result.token
            if self._sessions.cookies is not None:  # the profile's own session cookie (Better Auth's signed one)
                cookie, dont_remember_cookie = self._sessions.cookies.values(result.session, result.token)
                reply.session_cookie, reply.dont_remember_cookie = cookie, dont_remember_cookie
        return reply

    async def EnableTwoFactor(self, request: pb.EnableTwoFactorRequest, context: Context) -> pb.EnableTwoFactorResponse:
        """Start enrolment."""
        check = FieldChecker()
        token = check.token("token", request.token)
        password = check.text("password", request.password, MAX_PASSWORD)
        issuer = check.text("issuer", request.issuer, MAX_ISSUER, required=False, plain=True)
        client = check.client("client", request.client.ip_address, request.client.user_agent)
        check.done()
        enrolment = await self._service.enable(token, password, issuer, client)
        return pb.EnableTwoFactorResponse(totp_uri=enrolment.totp_uri, backup_codes=enrolment.backup_codes)

    async def ConfirmTwoFactor(
        self, request: pb.ConfirmTwoFactorRequest, context: Context
    ) -> pb.ConfirmTwoFactorResponse:
        """Finish enrolment."""
        check = FieldChecker()
        token = check.token("token", request.token)
        code = check.text("code", request.code, MAX_CODE)
        check.done()
        user = await self._service.confirm(token, code)
        return pb.ConfirmTwoFactorResponse(user=self._convert.user(user))

    async def VerifyTotp(self, request: pb.VerifyTotpRequest, context: Context) -> pb.VerifyTotpResponse:
        """Complete a sign-in with a TOTP code."""
        check = FieldChecker()
        challenge = check.token("challenge", request.challenge)
        code = check.text("code", request.code, MAX_CODE)
        client = check.client("client", request.client.ip_address, request.client.user_agent)
        check.done()
        return self._signed_in(await self._service.verify_totp(challenge, code, client), pb.VerifyTotpResponse())

    async def VerifyBackupCode(
        self, request: pb.VerifyBackupCodeRequest, context: Context
    ) -> pb.VerifyBackupCodeResponse:
        """Complete a sign-in with a backup code."""
        check = FieldChecker()
        challenge = check.token("challenge", request.challenge)
        code = check.text("code", request.code, MAX_CODE)
        client = check.client("client", request.client.ip_address, request.client.user_agent)
        check.done()
        reply = pb.VerifyBackupCodeResponse()
        return self._signed_in(await self._service.verify_backup_code(challenge, code, client), reply)

    async def DisableTwoFactor(
        self, request: pb.DisableTwoFactorRequest, context: Context
    ) -> pb.DisableTwoFactorResponse:
        """Turn it off."""
        check = FieldChecker()
        token = check.token("token", request.token)
        password = check.text("password", request.password, MAX_PASSWORD)
        client = check.client("client", request.client.ip_address, request.client.user_agent)
        check.done()
        user = await self._service.disable(token, password, client)
        return pb.DisableTwoFactorResponse(user=self._convert.user(user))

    async def GenerateBackupCodes(
        self, request: pb.GenerateBackupCodesRequest, context: Context
    ) -> pb.GenerateBackupCodesResponse:
        """New backup codes."""
        check = FieldChecker()
        token = check.token("token", request.token)
        password = check.text("password", request.password, MAX_PASSWORD)
        client = check.client("client", request.client.ip_address, request.client.user_agent)
        check.done()
        codes = await self._service.new_backup_codes(token, password, client)
        return pb.GenerateBackupCodesResponse(backup_codes=codes)
