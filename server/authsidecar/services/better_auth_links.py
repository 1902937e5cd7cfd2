"""Better Auth's verification tokens (compatibility profile): the formats are Better Auth's, so either side
consumes the other's tokens.

Reset tokens are 24 random alphanumeric characters stored as they are (``reset-password:<token>``, value: the
user id). Email verification and email change links carry Better Auth's stateless HS256 JWT (``{"email",
"userId", "updateTo"?, "requestType"?}``, signed with the app's current secret), which, as in Better Auth, is not
single-use: verifying twice is harmless.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from authsidecar.domain.models import User
from authsidecar.domain.ports import UnitOfWork
from authsidecar.errors import InvalidToken, TokenExpired
from authsidecar.security.ids import IdGenerator
from authsidecar.security.jwt import JwtError, JwtExpired, sign_hs256, verify_hs256
from authsidecar.security.tokens import alphanumeric
from authsidecar.services.clock import Clock, utc_now
from authsidecar.services.verification import APPROVE_EMAIL_CHANGE, CHANGE_EMAIL, LinkClaims, VerificationTokens

__all__ = ["BetterAuthLinks", "BetterAuthVerificationTokens"]

# Better Auth's requestType of an email change's links: to the new address, and to the current one for approval.
_REQUEST_TYPES = {CHANGE_EMAIL: "change-email-verification", APPROVE_EMAIL_CHANGE: "change-email-confirmation"}


class BetterAuthVerificationTokens(VerificationTokens):
    """Better Auth's formats in the verification table: the token itself is stored, and a token for the user id
    alone (password reset) is 24 alphanumeric characters with the bare user id as its value."""

    def identifier(self, purpose: str, token: str) -> str:
        """What is stored for a token: its purpose and the token itself."""
        return f"{purpose}:{token}"

    def new(self, payload: dict[str, Any]) -> tuple[str, str]:
        """A new token for ``payload`` and the value stored with it."""
        if len(payload) == 1:
            return alphanumeric(24), str(payload["userId"])
        return super().new(payload)


class BetterAuthLinks:
    """Email verification and email change links as Better Auth makes them: its HS256 JWT, signed with the app's
    current secret (``EmailLinks``); password reset tokens in Better Auth's format."""

    def __init__(self, secret: str, clock: Clock = utc_now, ids: IdGenerator | None = None) -> None:
        self._secret = secret
        self._clock = clock
        self.tokens: VerificationTokens = BetterAuthVerificationTokens(clock, ids)

    async def issue(
        self, tx: UnitOfWork, purpose: str, user: User, new_email: str | None, ttl: timedelta
    ) -> tuple[str, datetime]:
        """Better Auth's verification JWT (no database work)."""
        claims: dict[str, Any] = {"email": user.email}
        if new_email is None:
            claims["userId"] = user.id
        else:
            claims.update(updateTo=new_email, userId=user.id, requestType=_REQUEST_TYPES[purpose])
        now = self._clock()
        issued = int(now.timestamp())
        expires = issued + int(ttl.total_seconds())
        token = sign_hs256({**claims, "iat": issued, "exp": expires}, self._secret)
        return token, now + ttl

    def claims(self, token: str, now: datetime) -> LinkClaims | None:
        """The claims of a verification JWT (raises TokenExpired / InvalidToken when it does not verify); None:
        not a JWT, a token of the verification table."""
        if token.count(".") != 2:
            return None
        try:
            claims = verify_hs256(token, self._secret, now.timestamp())
        except JwtExpired:
            raise TokenExpired() from None
        except JwtError:
            raise InvalidToken("invalid verification token") from None
        email, user_id, update_to = claims.get("email"), claims.get("userId"), claims.get("updateTo")
        if not isinstance(email, str) or not isinstance(user_id, str | None) or not isinstance(update_to, str | None):
            raise InvalidToken("invalid verification token")
        if update_to is not None and user_id is None:
            raise InvalidToken("an email change token without a user")
        return LinkClaims(email, user_id, update_to, claims.get("requestType"))
