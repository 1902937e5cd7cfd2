"""The ``admin`` plugin: Better Auth's ban fields on user, and a sign-in gate that refuses banned users.

```toml
[plugins.admin]
# banned_user_message = "..."        # the message of BANNED_USER (Better Auth's bannedUserMessage)
[plugins.admin.schema.user]
fields = { banned = "is_banned", banReason = "ban_reason", banExpires = "ban_expires" }
```

The fields are Better Auth's (``user.banned``, ``user.banReason``, ``user.banExpires``), set by the server only
(``input = false``) and returned with the user. Users are banned and unbanned with ``authsidecar users disable``
and ``authsidecar users enable``; with a Better Auth app on the same database, a ban made by either side holds on
both (the app's admin plugin reads the same columns). Run ``authsidecar migrate`` after enabling it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from authsidecar.domain.fields import FieldDef
from authsidecar.plugins.admin.bans import BAN_EXPIRES, BAN_REASON, BANNED, PLUGIN, BanGate
from authsidecar.plugins.admin.errors import BannedUser
from authsidecar.plugins.base import PluginHost, PluginParts, PluginSchema

__all__ = ["AdminPlugin"]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    banned_user_message: str = Field(BannedUser.default_message, min_length=1, max_length=500)


def _schema() -> PluginSchema:
    """Better Auth 1.7's ban fields (its admin plugin's ``role`` and ``session.impersonatedBy`` are not used)."""
    fields = (
        FieldDef(BANNED, "boolean", required=False, default=False, input=False, builtin=False, db_default="false"),
        FieldDef(BAN_REASON, "string", required=False, input=False, builtin=False),
        FieldDef(BAN_EXPIRES, "date", required=False, input=False, builtin=False),
    )
    return PluginSchema(fields={"user": fields})


class AdminPlugin:
    """Entry point ``admin``."""

    name = PLUGIN

    def __init__(self, options: dict[str, Any]) -> None:
        try:
            parsed = _Options(**options)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            message = "unknown option" if first["type"] == "extra_forbidden" else first["msg"]
            raise ValueError(f"{where}: {message}") from None
        self.banned_user_message = parsed.banned_user_message

    def schema(self) -> PluginSchema:
        """The three user fields."""
        return _schema()

    def setup(self, host: PluginHost) -> PluginParts:
        """The sign-in gate."""
        return PluginParts(sign_in_gate=BanGate(host.store, self.banned_user_message))
