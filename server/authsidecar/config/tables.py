"""The settings' tables: ``[rate_limits.<rpc>]``, ``[callers.<name>]``, ``[[hooks]]``, ``[plugins.<name>]``, and the
patterns and bounds the settings share.

Names are checked against the vocabulary of the parts they configure (the RPCs of transport, the hook event
patterns); those parts sit below the settings and never read them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from authsidecar.cache.ratelimit import Limit
from authsidecar.schema_config import ModelSchema

__all__ = [
    "COOKIE_NAME",
    "DAY",
    "HEADER_NAME",
    "MAX_BEFORE_TIMEOUT",
    "RESERVED_HEADERS",
    "CallerSettings",
    "HookSettings",
    "PluginSettings",
    "RpcLimitSettings",
]

DAY = 86_400
HEADER_NAME = r"^[A-Za-z0-9][A-Za-z0-9-]{0,127}$"  # an HTTP header name (field-name token, no pseudo-headers)
COOKIE_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$"  # an RFC 6265 cookie-name (a token)


# Headers a gateway reads (the credential) or that HTTP and proxies manage: never identity headers.
RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "cookie",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "keep-alive",
        "proxy-authorization",
        "set-cookie",
        "www-authenticate",
        "x-forwarded-for",
    }
)


class RpcLimitSettings(BaseModel):
    """One RPC's limits: ``"<count>/<period>"`` (``"3/10s"``, ``"5/15m"``) or ``"off"``; unset keeps the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ip: str | None = None
    identifier: str | None = None

    @field_validator("ip", "identifier")
    @classmethod
    def _check(cls, value: str | None) -> str | None:
        if value is not None and value != "off":
            Limit.parse(value)
        return value


class CallerSettings(BaseModel):
    """A calling service: recognised by a service key (its SHA-256 here, hex) or by its mTLS client certificate
    (subject CN or SAN), allowed the listed RPCs (``"*"``: all)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_sha256: str | None = Field(None, pattern="^[0-9a-f]{64}$")
    certificate_names: list[str] = Field(default_factory=list)
    allow: list[str] = Field(min_length=1)

    @field_validator("allow")
    @classmethod
    def _check_allow(cls, value: list[str]) -> list[str]:
        # The shape only: which RPCs exist is known once the plugins' services are registered, and checked then
        # (assembly.check_allow_lists).
        bad = [name for name in value if name != "*" and not name.isidentifier()]
        if bad:
            raise ValueError(f"not an RPC name: {bad[0]!r} (a method name such as ValidateSession, or *)")
        return value


MAX_BEFORE_TIMEOUT = 10.0  # before hooks run inside a transaction, which Postgres ends after 15 s idle


class HookSettings(BaseModel):
    """One hook (``[[hooks]]``): a Python callable (``call``) or a webhook (``url``), run before or after the
    changes its ``events`` name ("user.create", "session.*", "*.delete", "*")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    events: list[str] = Field(min_length=1)
    when: Literal["before", "after"]
    call: str | None = Field(None, description='"package.module:function", async or sync')
    url: str | None = Field(None, description="webhook URL (http or https)")
    secret: SecretStr | None = Field(None, description="webhook HMAC key (default: AUTHSIDECAR_WEBHOOK_SECRET)")
    timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    on_failure: Literal["reject", "continue"] = Field(
        "reject", description="before hooks that cannot be run: refuse the change (reject) or go on"
    )

    @field_validator("events")
    @classmethod
    def _check_events(cls, value: list[str]) -> list[str]:
        from authsidecar.hooks.runner import check_pattern

        return [check_pattern(pattern) for pattern in value]

    @model_validator(mode="after")
    def _check_kind(self) -> HookSettings:
        if (self.call is None) == (self.url is None):
            raise ValueError("set exactly one of call (a Python function) and url (a webhook)")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("url must be http:// or https://")
        if self.when == "before" and self.timeout > MAX_BEFORE_TIMEOUT:
            raise ValueError(
                f"timeout: at most {MAX_BEFORE_TIMEOUT:g} s for a before hook (it runs inside the change's transaction)"
            )
        if self.call is not None:
            from authsidecar.hooks.runner import import_callable

            import_callable(self.call)  # every command refuses a hook that cannot be imported
        return self


class PluginSettings(BaseModel):
    """``[plugins.<name>]``: a plugin is on when its table is present (``enabled = false`` turns it off); its
    ``[plugins.<name>.schema.<model>]`` tables rename its tables and columns like ``[schema.<model>]``; every
    other key is the plugin's own option."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    enabled: bool = True
    plugin_schema: dict[str, ModelSchema] = Field(default_factory=dict, alias="schema")

    def options(self) -> dict[str, Any]:
        """The plugin's own options."""
        return dict(self.model_extra or {})
