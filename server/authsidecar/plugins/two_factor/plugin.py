"""The ``two_factor`` plugin: Better Auth's twoFactor schema, TOTP and backup codes, a sign-in challenge.

```toml
[plugins.two_factor]
issuer = "Acme"                      # shown by authenticator apps
# challenge_ttl = 600                # seconds a sign-in challenge lives
# challenge_attempts = 5             # codes tried per challenge
# max_failures = 10                  # wrong codes in a row before two-factor sign-in locks
# lock_seconds = 900
# backup_codes_storage = "encrypted" # or "plain" (Better Auth's storeBackupCodes)
# digits = 6                         # TOTP digits and period (Better Auth's totpOptions): match the app's
# period = 30
[plugins.two_factor.schema.two_factor]
model_name = "two_factors"           # the table (Better Auth: "twoFactor")
fields = { backup_codes = "recovery_codes" }
[plugins.two_factor.schema.user]
fields = { twoFactorEnabled = "two_factor_enabled" }
```

Secrets and backup codes are encrypted with Better Auth's symmetricEncrypt (XChaCha20-Poly1305): keyed by the
Better Auth secret in the compatibility profile (so either side reads what the other wrote), else by a key derived
from AUTHSIDECAR_SECRET (required then).
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from authsidecar.cache.integrity import derive_key
from authsidecar.domain.fields import FieldDef, ModelDef
from authsidecar.plugins.base import GrpcService, PluginHost, PluginParts, PluginSchema
from authsidecar.plugins.two_factor import formats
from authsidecar.plugins.two_factor.service import ENABLED_FIELD, TwoFactorOptions, TwoFactorService
from authsidecar.plugins.two_factor.store import MODEL, TwoFactorStore

__all__ = ["TwoFactorPlugin"]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field("authsidecar", min_length=1, max_length=128)
    challenge_ttl: int = Field(600, ge=60, le=3600)
    challenge_attempts: int = Field(5, ge=1, le=20)
    max_failures: int = Field(10, ge=3, le=100)
    lock_seconds: int = Field(900, ge=60, le=86_400)
    backup_codes_storage: Literal["encrypted", "plain"] = "encrypted"
    digits: Literal[6, 8] = 6
    period: int = Field(30, ge=15, le=120)


def _schema() -> PluginSchema:
    """Better Auth 1.7's: ``user.twoFactorEnabled`` and ``twoFactor``."""
    enabled = FieldDef(
        ENABLED_FIELD, "boolean", required=False, default=False, input=False, builtin=False, db_default="false"
    )
    table = ModelDef(
        MODEL,
        "twoFactor",
        (
            FieldDef("id", "string", primary_key=True),
            FieldDef("secret", "string"),
            FieldDef("backup_codes", "string"),
            FieldDef("user_id", "string", references=("user", "id")),
            FieldDef("verified", "boolean", required=False),
            FieldDef("failed_verification_count", "number", required=False),
            FieldDef("locked_until", "date", required=False),
        ),
        (("secret",), ("user_id",)),
    )
    return PluginSchema(fields={"user": (enabled,)}, models=(table,))


class TwoFactorPlugin:
    """Entry point ``two_factor``."""

    name = "two_factor"

    def __init__(self, options: dict[str, Any]) -> None:
        try:
            parsed = _Options(**options)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            message = "unknown option" if first["type"] == "extra_forbidden" else first["msg"]
            raise ValueError(f"{where}: {message}") from None
        self.options = TwoFactorOptions(**parsed.model_dump())

    def schema(self) -> PluginSchema:
        """The fields and the table."""
        return _schema()

    def setup(self, host: PluginHost) -> PluginParts:
        """The service, its gRPC servicer, and the sign-in gate."""
        from authsidecar.plugins.two_factor.servicer import TwoFactorServicer, add_to_server, service_name

        service = TwoFactorService(
            host.store,
            TwoFactorStore(host.database),
            host.sessions,
            host.hasher,
            host.guard,
            _key(host),
            self.options,
        )
        servicer = TwoFactorServicer(service, host.convert, host.sessions)
        return PluginParts([GrpcService(service_name(), add_to_server, servicer)], sign_in_gate=service)


def _key(host: PluginHost) -> formats.Secret:
    """Better Auth's secret (or key set) in the compatibility profile; else a key derived from our secret."""
    secrets = host.secrets
    if secrets.better_auth:
        versions = secrets.better_auth_secret_versions()
        if not versions:
            return secrets.better_auth_current_secret()
        keys: dict[int, str] = {}
        for version, value in versions:
            keys.setdefault(version, value)
        current = versions[0][0]
        legacy = os.environ.get("BETTER_AUTH_SECRET") or (
            secrets.better_auth_secret.get_secret_value() if secrets.better_auth_secret else None
        )
        return formats.SecretKeyring(keys, current, legacy or None)
    if secrets.secret is None:
        raise ValueError(
            "needs AUTHSIDECAR_SECRET (32+ characters): TOTP secrets and backup codes are encrypted with a key from it"
        )
    return derive_key(secrets.secret.get_secret_value(), "two-factor").hex()
