"""Business rules: no gRPC, no SQL."""

from authsidecar.services.accounts import AccountService, AuthResult, VerificationPolicy
from authsidecar.services.profile import PasswordChanged, ProfileService
from authsidecar.services.rules import CredentialRules
from authsidecar.services.sessions import ClientInfo, SessionManager, SessionPolicy
from authsidecar.services.verification import AccountFlows, FlowSettings, VerificationTokens

__all__ = [
    "AccountFlows",
    "AccountService",
    "AuthResult",
    "ClientInfo",
    "CredentialRules",
    "FlowSettings",
    "PasswordChanged",
    "ProfileService",
    "SessionManager",
    "SessionPolicy",
    "VerificationPolicy",
    "VerificationTokens",
]
