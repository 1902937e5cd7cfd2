"""``Settings``: every tunable of the server, validated (types, ranges, names) and frozen.

Sources, highest priority first: init keywords, environment variables (``DATABASE_URL``, ``REDIS_URL``,
``AUTHSIDECAR_*``), then the TOML file named by ``AUTHSIDECAR_CONFIG``. Plain option data: the composition root
builds the parts from it and loads the plugins it enables (assembly.py, plugins/loader.py).
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from authsidecar.cache.ratelimit import Limit
from authsidecar.config.tables import (
    COOKIE_NAME,
    DAY,
    HEADER_NAME,
    RESERVED_HEADERS,
    CallerSettings,
    HookSettings,
    PluginSettings,
    RpcLimitSettings,
)
from authsidecar.config_error import ConfigError
from authsidecar.schema_config import SchemaSettings

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Every tunable of the server. Field docs double as the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="AUTHSIDECAR_",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        case_sensitive=False,
    )

    listen: str = Field("127.0.0.1:50051", min_length=1, description="host:port, or unix:///path for a socket")
    database_url: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "AUTHSIDECAR_DATABASE_URL", "database_url"),
        description="postgresql://... (or sqlite:///path); unset means the embedded SQLite file",
    )
    sqlite_path: str = Field("authsidecar.db", min_length=1, description="embedded SQLite file when no DATABASE_URL")
    redis_url: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "AUTHSIDECAR_REDIS_URL", "redis_url"),
        description="redis://host:6379/0, redis+sentinel://host:26379,host2:26379/<service>[/db] or"
        " redis+cluster://host:7000,host2:7001 (README: Running on Postgres and Redis); unset means the in-process"
        " secondary storage",
    )
    redis_key_prefix: str = Field(
        "authsidecar:", max_length=64, description='prefix of every Redis key ("better-auth:" in the compat profile)'
    )
    secret: SecretStr | None = Field(
        None, description="server secret (32+ characters); required with REDIS_URL: authenticates cached documents"
    )
    compat: Literal["none", "better-auth"] = Field(
        "none",
        description='"better-auth": share the database, Redis, sessions, cookies and passwords with a Better Auth app',
    )
    better_auth_secret: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("BETTER_AUTH_SECRET", "AUTH_SECRET", "better_auth_secret"),
        description="the Better Auth app's secret (compat profile), when BETTER_AUTH_SECRETS is not set",
    )
    better_auth_secrets: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("BETTER_AUTH_SECRETS", "better_auth_secrets"),
        description='the app\'s rotating secrets, "<version>:<secret>,...", current first (compat profile)',
    )
    cookie_prefix: str = Field(
        "better-auth", min_length=1, max_length=64, description="Better Auth's advanced.cookiePrefix (compat profile)"
    )
    secure_cookies: bool | None = Field(
        None,
        description="compat profile: read only __Secure-<prefix>.session_token (true) or only <prefix>.session_token"
        " (false), as the app does (https baseURL: true); unset accepts either, the __Secure- one first",
    )
    cookie_cache: Literal["off", "compact", "jwt"] = Field(
        "off",
        description="compat profile: trust the app's session_data cookie (session.cookieCache, its strategy) until it"
        " expires, without asking Redis or SQL; a revoked session then stays valid up to the cookie's maxAge",
    )
    cookie_cache_version: str = Field("1", max_length=128, description="the app's session.cookieCache.version")
    store_session_in_database: bool = Field(
        False,
        description="Better Auth's session.storeSessionInDatabase (compat profile with Redis; must match the app)",
    )
    preserve_session_in_database: bool = Field(
        False,
        description="Better Auth's session.preserveSessionInDatabase (compat profile): rows are kept after sessions"
        " end, so only Redis says whether a session is live (no SQL fallback)",
    )
    store_verification_in_database: bool = Field(
        False, description="Better Auth's verification.storeInDatabase (compat profile with Redis; must match the app)"
    )
    password_hash: Literal["argon2id", "scrypt"] | None = Field(
        None, description="scheme of new password hashes (default: scrypt in the compat profile, else argon2id)"
    )
    rate_limit_enabled: bool = Field(True, description="rate limits and brute-force protection (false: none at all)")
    rate_limits: dict[str, RpcLimitSettings] = Field(
        default_factory=dict,
        description='per-RPC limits over the defaults ([rate_limits.SignIn] ip = "3/10s", identifier = "off")',
    )
    login_failures_per_ip: str = Field(
        "5/15m", description="wrong passwords for one account from one client IP before that pair is refused"
    )
    login_failures_per_account: str = Field(
        "20/1h", description="wrong passwords for one account (any IP) before its sign-ins are slowed down"
    )
    login_slowdown: Annotated[float, Field(ge=0, le=30)] = Field(
        1.0, description="seconds every sign-in of a slowed-down account waits before its password is checked"
    )
    mail_interval: Annotated[int, Field(ge=0, le=86_400)] = Field(
        60, description="at most one message per address and purpose in this many seconds (0: no limit)"
    )
    cache_trust_seconds: Annotated[float, Field(ge=1, le=3600)] = Field(
        60.0, description="a cached session is re-checked against SQL once its snapshot is older than this"
    )
    invalidation_bound: Annotated[float, Field(ge=0.05, le=30)] = Field(
        1.0, description="seconds within which every instance stops trusting a revoked or changed cached session"
    )
    outage_grace: Annotated[float, Field(ge=0, le=3600)] = Field(
        0.0,
        description="seconds cached sessions stay trusted while the invalidation log cannot be read (0: strict)",
    )
    db_schema: SchemaSettings = Field(
        default_factory=SchemaSettings,
        validation_alias=AliasChoices("AUTHSIDECAR_SCHEMA", "schema", "db_schema"),
        description="table and column names, additional fields, id generation ([schema] in the TOML file)",
    )
    cache_enabled: bool = Field(True, description="cache sessions in the secondary storage (off: every call hits SQL)")
    memory_cache_max_entries: Annotated[int, Field(ge=100, le=10_000_000)] = Field(
        100_000,
        description="sessions kept by the in-process cache (the embedded default, and the tier in front of Redis);"
        " about 1.2 KB each",
    )
    local_cache_seconds: Annotated[float, Field(ge=0, le=3600)] = Field(
        30.0,
        description="with REDIS_URL: seconds a session read from Redis is also kept in this process (0: off); the"
        " coherence rules decide whether any copy is served",
    )

    session_expires_in: Annotated[int, Field(ge=60, le=365 * DAY)] = 7 * DAY
    session_update_age: Annotated[int, Field(ge=0, le=365 * DAY)] = DAY
    session_short_expires_in: Annotated[int, Field(ge=60, le=365 * DAY)] = Field(
        DAY, description="lifetime of a remember_me=false session (never refreshed)"
    )
    session_max_lifetime: Annotated[int, Field(ge=60, le=10 * 365 * DAY)] | None = Field(
        None, description="absolute session lifetime (seconds since sign-in) that sliding refresh never passes"
    )
    auto_sign_in: bool = Field(True, description="SignUp also creates a session")

    session_fresh_age: Annotated[int, Field(ge=0, le=365 * DAY)] = Field(
        DAY, description="sessions younger than this may ChangeEmail / DeleteUser without a password"
    )

    require_email_verification: bool = Field(False, description="SignIn of an unverified user: EMAIL_NOT_VERIFIED")
    send_verification_on_sign_up: bool = False
    send_verification_on_sign_in: bool = Field(False, description="with require_email_verification: resend on SignIn")
    auto_sign_in_after_verification: bool = False
    revoke_sessions_on_password_reset: bool = True
    verify_email_expires_in: Annotated[int, Field(ge=60, le=30 * DAY)] = 3600
    reset_password_expires_in: Annotated[int, Field(ge=60, le=30 * DAY)] = 3600
    change_email_expires_in: Annotated[int, Field(ge=60, le=30 * DAY)] = 3600

    delivery: Literal["log", "smtp", "webhook"] = Field("log", description="how messages are sent")
    link_url_template: str = Field(
        "http://localhost:3000/auth/{purpose}?token={token}",
        description="the link put in messages; {purpose} and {token} are filled in",
    )
    smtp_host: str = "127.0.0.1"
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 587
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "authsidecar <no-reply@localhost>"
    smtp_timeout: Annotated[float, Field(gt=0, le=120)] = 10.0
    smtp_ca_file: str | None = Field(
        None, description="PEM CA bundle the SMTP server's certificate must chain to (default: the system's)"
    )
    mail_subject_verify_email: str = "Verify your email address"
    mail_subject_change_email: str = "Confirm your new email address"
    mail_subject_approve_email_change: str = "Approve the change of your email address"
    mail_subject_email_changed: str = "Your email address was changed"
    mail_notice_template: str = Field(
        "Hello {name},\n\nthe email address of your account is now {detail}. If you did not change it, contact us"
        " at once.\n",
        description="the notice sent to the former address after an email change; {name} {email} {detail}",
    )
    mail_subject_reset_password: str = "Reset your password"  # noqa: S105 - a subject line
    mail_body_template: str = Field(
        "Hello {name},\n\nopen this link to continue: {url}\n\nIt expires in {minutes} minutes. "
        "If you did not ask for it, ignore this message.\n",
        description="placeholders: {name} {email} {url} {token} {purpose} {minutes}",
    )
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_timeout: Annotated[float, Field(gt=0, le=120)] = 5.0
    delivery_attempts: Annotated[int, Field(ge=1, le=20)] = 4
    delivery_queue_size: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000

    cleanup_interval: Annotated[int, Field(ge=0, le=30 * DAY)] = Field(
        3600, description="seconds between removals of expired sessions and verifications; 0 turns it off"
    )
    cleanup_batch_size: Annotated[int, Field(ge=1, le=100_000)] = 1000

    password_min_length: Annotated[int, Field(ge=1, le=1024)] = 8
    password_max_length: Annotated[int, Field(ge=8, le=4096)] = 128
    argon2_time_cost: Annotated[int, Field(ge=1, le=20)] = 2
    argon2_memory_kib: Annotated[int, Field(ge=8 * 1024, le=4 * 1024 * 1024)] = 19_456
    argon2_parallelism: Annotated[int, Field(ge=1, le=64)] = 1
    hash_workers: Annotated[int, Field(ge=1, le=256)] = Field(
        default_factory=lambda: os.cpu_count() or 2, description="threads hashing passwords (default: cores)"
    )
    hash_max_pending: Annotated[int, Field(ge=1, le=100_000)] | None = Field(
        None,
        description="hashes admitted at once before RESOURCE_EXHAUSTED (default: 16 x hash_workers, about 0.3 s of queue at OWASP cost)",
    )

    hash_max_pending_per_client: Annotated[int, Field(ge=1, le=100_000)] | None = Field(
        None,
        description="hashes one client IP may have admitted at once (default: a quarter of hash_max_pending,"
        " at least hash_workers); callers that report no IP share the global bound",
    )

    db_pool_size: Annotated[int, Field(ge=1, le=200)] = Field(
        4,
        description="database connections kept open per serving process (Postgres: one of them LISTENs for"
        " invalidations); with db_max_overflow, 5 in all: twenty instances fit Postgres' default max_connections=100",
    )
    db_max_overflow: Annotated[int, Field(ge=0, le=200)] = Field(
        1, description="connections opened beyond db_pool_size under load, closed when returned"
    )
    db_connect_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    db_pool_recycle: Annotated[int, Field(ge=1, le=86_400)] = Field(
        1800, description="seconds after which a pooled connection is replaced (the pool's idle/age limit)"
    )
    redis_timeout: Annotated[float, Field(gt=0, le=30)] = 0.5
    redis_max_connections: Annotated[int, Field(ge=1, le=1000)] = Field(
        8,
        description="connections of each Redis pool (per node in a Cluster); a call waits up to redis_timeout for"
        " one. Plus one hot-path connection (README: connections per instance)",
    )
    redis_retry_after: Annotated[float, Field(gt=0, le=60)] = Field(
        1.0, description="seconds to bypass Redis after it failed, before probing it again"
    )
    health_interval: Annotated[float, Field(gt=0, le=300)] = 2.0
    shutdown_grace: Annotated[float, Field(ge=0, le=300)] = 10.0
    drain_delay: Annotated[float, Field(ge=0, le=300)] = Field(
        5.0, description="after SIGTERM: seconds of serving with health NOT_SERVING before the listener closes"
    )
    tls_cert_file: str | None = Field(None, description="PEM certificate chain of the listener (TLS)")
    tls_key_file: str | None = Field(None, description="PEM private key of the listener")
    tls_client_ca_file: str | None = Field(
        None, description="PEM CA bundle: client certificates signed by it are required (mTLS)"
    )
    allow_insecure: bool = Field(
        False, description="allow plaintext gRPC on a non-loopback address (refused at start-up otherwise)"
    )
    socket_mode: str = Field("0660", pattern="^0?[0-7]{3}$", description="permissions of the unix socket (octal)")
    callers: dict[str, CallerSettings] = Field(
        default_factory=dict,
        description="named calling services and the RPCs each may call ([callers.<name>]); none: no caller checks",
    )
    reuse_port: bool = Field(False, description="SO_REUSEPORT: several server processes may share the port")
    workers: Annotated[int, Field(ge=1, le=64)] = Field(
        1, description="serving processes on the one port under a supervisor (serve --workers); 1: no supervisor"
    )
    hooks: list[HookSettings] = Field(
        default_factory=list,
        description="database hooks ([[hooks]]: events, when, call or url); see the README's Hooks section",
    )
    event_stream: Literal["off", "redis"] = Field(
        "off", description='"redis": publish every after event to a Redis Stream (needs REDIS_URL)'
    )
    event_stream_key: str = Field(
        "events", min_length=1, max_length=128, description="the stream's key, after redis_key_prefix"
    )
    event_stream_max_length: Annotated[int, Field(ge=100, le=100_000_000)] = Field(
        100_000, description="the stream is trimmed to about this many entries"
    )
    outbox_max_attempts: Annotated[int, Field(ge=1, le=1000)] = Field(
        50, description="failed deliveries of an after event before it is given up (back-off up to 5 minutes)"
    )
    metrics_listen: str | None = Field(
        None, description="host:port of the Prometheus endpoint (/metrics); unset: no metrics"
    )
    metrics_allow_remote: bool = Field(
        False, description="allow the unauthenticated metrics endpoint on a non-loopback address (refused otherwise)"
    )
    outbox_poll_interval: Annotated[float, Field(gt=0, le=60)] = Field(
        1.0, description="seconds between outbox reads when nothing new was committed by this instance"
    )
    ext_authz: bool = Field(
        False,
        description="serve Envoy's envoy.service.auth.v3.Authorization/Check (ext_authz) on the gRPC listener",
    )
    forward_auth_listen: str | None = Field(
        None,
        description="host:port of the forward-auth HTTP endpoint (nginx auth_request, Traefik, Caddy); unset: off",
    )
    forward_auth_max_connections: Annotated[int, Field(ge=1, le=100_000)] = Field(
        1024, description="open forward-auth connections at once; more are answered 503 and closed"
    )
    gateway_user_id_header: str = Field(
        "x-authsidecar-user-id", pattern=HEADER_NAME, description="gateways: the header carrying the user id"
    )
    gateway_session_id_header: str = Field(
        "x-authsidecar-session-id", pattern=HEADER_NAME, description="gateways: the header carrying the session id"
    )
    gateway_email_header: str | None = Field(
        None, pattern=HEADER_NAME, description="gateways: the header carrying the user's email (unset: not sent)"
    )
    gateway_cookie_name: str | None = Field(
        None,
        pattern=COOKIE_NAME,
        description="gateways: the session cookie holding a token (default authsidecar.session_token; in the compat"
        " profile Better Auth's signed cookie, named by cookie_prefix and secure_cookies)",
    )
    plugins: dict[str, PluginSettings] = Field(
        default_factory=dict, description="plugins to load, by entry point name ([plugins.two_factor])"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = Field(
        "text", description='"json": one JSON object per line (time, level, logger, message, rpc, request_id)'
    )

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (for example: openssl rand -hex 32)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        from authsidecar.cache.topology import parse_redis_url

        if value is not None:
            parse_redis_url(value.get_secret_value())  # one-line ValueError, never echoing the URL (a password)
        return value

    @field_validator("login_failures_per_ip", "login_failures_per_account")
    @classmethod
    def _check_limit(cls, value: str) -> str:
        Limit.parse(value)
        return value

    @field_validator("rate_limits")
    @classmethod
    def _check_rpcs(cls, value: dict[str, RpcLimitSettings]) -> dict[str, RpcLimitSettings]:
        from authsidecar.services.limits import DEFAULT_RULES

        unknown = sorted(set(value) - set(DEFAULT_RULES))
        if unknown:
            raise ValueError(f"no limits for {unknown[0]!r} (limits apply to {', '.join(sorted(DEFAULT_RULES))})")
        return value

    @field_validator("metrics_listen", "forward_auth_listen")
    @classmethod
    def _check_metrics_listen(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected host:port")
        return value

    @field_validator("gateway_user_id_header", "gateway_session_id_header", "gateway_email_header")
    @classmethod
    def _check_gateway_header(cls, value: str | None) -> str | None:
        if value is None:
            return value
        value = value.lower()
        if value in RESERVED_HEADERS:
            raise ValueError(f"{value} is a header gateways read or HTTP itself uses; choose another name")
        return value

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        if value.startswith("unix://"):
            if len(value) <= len("unix://"):
                raise ValueError("unix:// needs a path")
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected host:port or unix:///path")
        return value

    @property
    def better_auth(self) -> bool:
        """The Better Auth compatibility profile is on."""
        return self.compat == "better-auth"

    @property
    def effective_password_hash(self) -> Literal["argon2id", "scrypt"]:
        """Scheme of new password hashes."""
        return self.password_hash or ("scrypt" if self.better_auth else "argon2id")

    @property
    def effective_redis_key_prefix(self) -> str:
        """The Redis prefix: Better Auth's usual one in the compat profile unless set."""
        if self.better_auth and "redis_key_prefix" not in self.model_fields_set:
            return "better-auth:"
        return self.redis_key_prefix

    def better_auth_current_secret(self) -> str:
        """The secret Better Auth signs cookies and JWTs with, read as Better Auth reads it: the first entry of
        BETTER_AUTH_SECRETS ("<version>:<secret>,..."; every entry must be well formed), else BETTER_AUTH_SECRET,
        else AUTH_SECRET (empty values count as unset). Raises ConfigError when there is none."""
        rotating = self.better_auth_secret_versions()
        if rotating:
            return rotating[0][1]
        for name in ("BETTER_AUTH_SECRET", "AUTH_SECRET"):
            value = os.environ.get(name, "")
            if value:
                return value
        if self.better_auth_secret is not None and self.better_auth_secret.get_secret_value():
            return self.better_auth_secret.get_secret_value()  # from the TOML file
        raise ConfigError(
            "invalid configuration: BETTER_AUTH_SECRET: required with AUTHSIDECAR_COMPAT=better-auth (the app's secret)"
        )

    def better_auth_secret_versions(self) -> list[tuple[int, str]]:
        """BETTER_AUTH_SECRETS as (version, secret) pairs, current first ([] when unset); raises ConfigError when
        an entry is not "<version>:<secret>"."""
        listed = self.better_auth_secrets.get_secret_value().strip() if self.better_auth_secrets else ""
        versions = []
        for entry in listed.split(",") if listed else ():
            version, colon, value = entry.strip().partition(":")
            if not colon or not version.strip().isdigit() or not value.strip():
                raise ConfigError('invalid configuration: BETTER_AUTH_SECRETS: expected "<version>:<secret>,..."')
            versions.append((int(version.strip()), value.strip()))
        return versions

    @property
    def effective_hash_max_pending(self) -> int:
        """Admission bound for password hashing."""
        return self.hash_max_pending or 16 * self.hash_workers

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Init kwargs, then the environment, then the TOML file named by AUTHSIDECAR_CONFIG."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get("AUTHSIDECAR_CONFIG")
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)
