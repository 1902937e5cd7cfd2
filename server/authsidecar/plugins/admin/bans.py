"""Bans (no gRPC, no SQL): banning and unbanning a user, and the sign-in gate that refuses a banned one.

Better Auth's admin plugin keeps a ban on the user row: ``banned``, ``banReason`` and ``banExpires`` (a ban
without expiry lasts until lifted; one whose expiry passed no longer counts). Banning, as in Better Auth, revokes
every session of the user in the same transaction as the change (declared to the unit of work, so every instance
stops validating them within the invalidation bound); it also ends every link or challenge the user has in flight
(a two-factor sign-in challenge, a reset or verification link), so nothing opens a session afterwards. Sessions
then cannot come back: sign-in asks the gate, which reads the user afresh once the password is verified (a ban
made while the password was being hashed counts), and links never sign a banned user in. As in Better Auth, whose
check is the same read before the session is written, a sign-in whose check ran in the instant before the ban
committed can still end with a session (``authsidecar sessions revoke --all`` ends it).
"""

from __future__ import annotations

from datetime import datetime

from authsidecar.domain.fields import ModelDef
from authsidecar.domain.models import User
from authsidecar.domain.ports import Database
from authsidecar.errors import InvalidArgument, UserNotFound
from authsidecar.plugins.admin.errors import BannedUser
from authsidecar.services.accounts import Challenge
from authsidecar.services.clock import Clock, utc_now
from authsidecar.services.sessions import ClientInfo

__all__ = ["BANNED", "BAN_EXPIRES", "BAN_REASON", "PLUGIN", "BanGate", "Bans", "has_ban_fields", "is_banned"]

PLUGIN = "admin"
BANNED, BAN_REASON, BAN_EXPIRES = "banned", "banReason", "banExpires"  # the fields the plugin adds to user


def has_ban_fields(user_model: ModelDef) -> bool:
    """Whether the configured user model has the plugin's fields (the plugin is enabled)."""
    return BANNED in user_model and user_model[BANNED].plugin == PLUGIN


def is_banned(user: User, now: datetime) -> bool:
    """Whether a ban holds at ``now``: ``banned`` set, and no expiry or one still to come."""
    if not user.additional.get(BANNED):
        return False
    expires = user.additional.get(BAN_EXPIRES)
    return not isinstance(expires, datetime) or expires > now


class Bans:
    """Ban and unban users."""

    def __init__(self, db: Database, clock: Clock = utc_now) -> None:
        self._db = db
        self._clock = clock

    async def ban(self, user_id: str, reason: str | None = None, until: datetime | None = None) -> tuple[User, int]:
        """Ban the user (until ``until``, or until lifted), revoke every session and end every link and challenge
        in flight, in one transaction; returns the user and how many sessions were revoked."""
        now = self._clock()
        if until is not None and until <= now:
            raise InvalidArgument.field("until", "must be in the future")
        async with self._db.transaction() as tx:  # user.update and session.delete: hooks, outbox, invalidations
            user = await tx.update_user(user_id, {BANNED: True, BAN_REASON: reason or None, BAN_EXPIRES: until}, now)
            if user is None:
                raise UserNotFound()
            await tx.delete_user_verifications(user_id)
            revoked = await tx.delete_user_sessions(user_id)
        return user, len(revoked)

    async def unban(self, user_id: str) -> User:
        """Lift the user's ban (its reason and expiry go too)."""
        async with self._db.transaction() as tx:
            user = await tx.update_user(user_id, {BANNED: False, BAN_REASON: None, BAN_EXPIRES: None}, self._clock())
        if user is None:
            raise UserNotFound()
        return user


class BanGate:
    """The sign-in gate: a banned user gets BANNED_USER (PERMISSION_DENIED), never a session or a challenge."""

    def __init__(self, db: Database, message: str | None = None, clock: Clock = utc_now) -> None:
        self._db = db
        self._message = message
        self._clock = clock

    def guards(self, user: User) -> bool:
        """A banned user's sessions need the gate: links do not sign them in."""
        return is_banned(user, self._clock())

    async def challenge(self, user: User, client: ClientInfo, remember_me: bool) -> Challenge | None:
        """Refuse a banned user; the user is read now, not taken from before the password was hashed."""
        async with self._db.transaction(autocommit=True) as tx:
            current = await tx.get_user_by_id(user.id)
        if current is not None and is_banned(current, self._clock()):
            raise BannedUser(self._message)
        return None
