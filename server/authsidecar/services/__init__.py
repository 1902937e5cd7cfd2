"""Business rules: no gRPC, no SQL."""

from authsidecar.services.accounts import AccountService, AuthResult
from authsidecar.services.rules import CredentialRules
from authsidecar.services.sessions import ClientInfo, SessionManager, SessionPolicy

__all__ = ["AccountService", "AuthResult", "ClientInfo", "CredentialRules", "SessionManager", "SessionPolicy"]
