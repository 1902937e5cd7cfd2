"""Building the parts from Settings: database, caches, hasher, limits, TLS, callers, gateways, senders and
the core services (store, cache, coherence, sessions) that root.compose wires together."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
from redis.asyncio import Redis

from authsidecar import __version__
from authsidecar.cache import MemorySessionCache, NullSessionCache, RedisSessionCache, ResilientSessionCache
from authsidecar.cache.better_auth import BetterAuthRedis
from authsidecar.cache.integrity import DocumentSigner, derive_key
from authsidecar.cache.ratelimit import Limit, MemoryRateLimiter, RateLimiter, RedisRateLimiter
from authsidecar.cache.resp import HotGetter
from authsidecar.cache.tiered import TieredSessionCache
from authsidecar.cache.topology import RedisClient, RedisTarget, connect_redis, hot_path_getter, parse_redis_url
from authsidecar.config import ConfigError, Settings
from authsidecar.delivery import LogSender, Sender, SmtpSender, WebhookSender
from authsidecar.domain.fields import Registry
from authsidecar.domain.ports import Database, SessionCache
from authsidecar.hooks.database import HookedDatabase
from authsidecar.hooks.payloads import Payloads
from authsidecar.hooks.setup import HookSetup
from authsidecar.observability.tracing import start_tracing
from authsidecar.plugins.base import Plugin
from authsidecar.plugins.loader import enabled_plugins, plugin_registry
from authsidecar.security.cookie_cache import CookieCache
from authsidecar.security.cookies import SessionCookies
from authsidecar.security.ids import IdGenerator, id_generator
from authsidecar.security.passwords import Argon2Parameters, PasswordHasher
from authsidecar.security.tokens import HashedTokenPolicy, PlainTokenPolicy, TokenPolicy
from authsidecar.services.better_auth import BetterAuthSessionManager
from authsidecar.services.better_auth_links import BetterAuthLinks
from authsidecar.services.clock import utc_now
from authsidecar.services.coherence import CacheCoherence
from authsidecar.services.extra_fields import ExtraFieldRules
from authsidecar.services.limits import DEFAULT_RULES, Limits, LoginGuard, MailThrottle, RpcRule
from authsidecar.services.sessions import SessionManager, SessionPolicy
from authsidecar.services.verification import EmailLinks, FlowSettings, StoredLinks
from authsidecar.storage.better_auth import BetterAuthDatabase
from authsidecar.storage.database import SqlDatabase, create_database
from authsidecar.storage.explain import where
from authsidecar.storage.schema import Schema
from authsidecar.storage.urls import DatabaseTarget, resolve_database_url
from authsidecar.transport.gateway import Gateway, IdentityHeaders, cookie_source
from authsidecar.transport.grpc.callers import RPC_NAMES, Caller, CallerPolicy
from authsidecar.transport.grpc.tls import TlsFiles, is_loopback, server_credentials
from authsidecar.transport.http import ForwardAuthServer

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from authsidecar.observability.otel import Tracing

__all__ = [
    "Core",
    "build_better_auth_redis",
    "build_cache",
    "build_callers",
    "build_cookie_cache",
    "build_core",
    "build_database",
    "build_flow_settings",
    "build_forward_auth",
    "build_gateway",
    "build_hasher",
    "build_limits",
    "build_plugins",
    "build_registry",
    "build_sender",
    "build_session_policy",
    "build_tls",
    "build_tracing",
    "database_target",
    "describe",
]

log = logging.getLogger("authsidecar")


def database_target(settings: Settings) -> DatabaseTarget:
    """DATABASE_URL (or the embedded SQLite file), resolved for SQLAlchemy."""
    raw = settings.database_url.get_secret_value() if settings.database_url else None
    try:
        return resolve_database_url(raw, settings.sqlite_path)
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: DATABASE_URL: {exc}") from None


def build_plugins(settings: Settings) -> list[tuple[str, Plugin]]:
    """The enabled plugins (``[plugins.<name>]``), built with their options, in configuration order; raises
    ConfigError."""
    return enabled_plugins(settings.plugins)


def build_registry(settings: Settings) -> Registry:
    """The field registry: the configured schema with the enabled plugins' fields and tables; raises ConfigError
    for a plugin that is missing or misconfigured."""
    return plugin_registry(settings.db_schema, settings.plugins)


def build_database(settings: Settings) -> SqlDatabase:
    """The SQL store of record."""
    return create_database(
        database_target(settings),
        Schema(build_registry(settings)),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        connect_timeout=settings.db_connect_timeout,
        pool_recycle=settings.db_pool_recycle,
    )


def _redis_clients(settings: Settings, url: str) -> tuple[RedisTarget, RedisClient, HotGetter]:
    """Where REDIS_URL points (one server, Sentinel or Cluster), its client, and the hot path's GET client."""
    try:
        target = parse_redis_url(url)
        client = connect_redis(target, settings.redis_timeout, settings.redis_max_connections)
        return target, client, hot_path_getter(target, client, settings.redis_timeout)
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: REDIS_URL: {exc}") from None


def build_cache(settings: Settings, tracer: Tracer | None = None) -> SessionCache:
    """Redis when REDIS_URL is set (fail-open; with ``tracer``, a span per Redis call), else in-process; nothing
    when caching is disabled."""
    if not settings.cache_enabled:
        return NullSessionCache()
    if settings.redis_url is None:
        return MemorySessionCache(settings.memory_cache_max_entries)
    url = settings.redis_url.get_secret_value()
    if settings.secret is None:
        raise ConfigError(
            "invalid configuration: AUTHSIDECAR_SECRET: required with REDIS_URL (32+ characters, the same on every"
            " instance; for example: openssl rand -hex 32)"
        )
    target, client, getter = _redis_clients(settings, url)
    signer = DocumentSigner(derive_key(settings.secret.get_secret_value(), "cache-documents"))
    cache: SessionCache = RedisSessionCache(
        client,
        settings.redis_key_prefix,
        signer,
        getter,
        registry=build_registry(settings),
        cluster=target.mode == "cluster",
    )
    if tracer is not None:
        from authsidecar.observability.traced import TracedSessionCache

        cache = TracedSessionCache(cache, tracer)
    shared = ResilientSessionCache(cache, settings.redis_retry_after)
    if settings.local_cache_seconds <= 0 or settings.outage_grace > 0:
        # With an outage grace, copies stay trusted while the log cannot be read: a local copy would then outlive
        # a revocation that another instance did delete from Redis (found by review), so only Redis is used.
        return shared
    return TieredSessionCache(
        MemorySessionCache(settings.memory_cache_max_entries), shared, settings.local_cache_seconds
    )


def build_tracing() -> Tracing | None:
    """OpenTelemetry traces when an OTLP endpoint is configured (the standard OTEL_* variables), else None
    (and OpenTelemetry is not imported)."""
    try:
        return start_tracing(__version__)
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


def build_hasher(settings: Settings, tracer: Tracer | None = None) -> PasswordHasher:
    """argon2id (or Better Auth's scrypt) with the configured cost and concurrency bounds; with ``tracer``, each
    hash and verify in a span."""
    params = Argon2Parameters(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
    return PasswordHasher(
        params,
        settings.hash_workers,
        settings.effective_hash_max_pending,
        settings.effective_password_hash,
        settings.hash_max_pending_per_client,
        tracer,
    )


def build_tls(settings: Settings) -> TlsFiles | None:
    """The listener's certificates, checked now; plaintext on a non-loopback address needs ALLOW_INSECURE."""
    cert, key, ca = settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
    if not cert and not key:
        if ca:
            raise ConfigError(
                "invalid configuration: AUTHSIDECAR_TLS_CLIENT_CA_FILE: needs TLS_CERT_FILE and TLS_KEY_FILE"
            )
        if not is_loopback(settings.listen) and not settings.allow_insecure:
            raise ConfigError(
                f"invalid configuration: AUTHSIDECAR_LISTEN: {settings.listen} is reachable from other machines"
                " and would carry passwords and tokens in plaintext: set AUTHSIDECAR_TLS_CERT_FILE and"
                " AUTHSIDECAR_TLS_KEY_FILE (and AUTHSIDECAR_TLS_CLIENT_CA_FILE for mTLS), or"
                " AUTHSIDECAR_ALLOW_INSECURE=true behind a trusted network"
            )
        return None
    if not (cert and key):
        raise ConfigError("invalid configuration: AUTHSIDECAR_TLS_CERT_FILE: set both TLS_CERT_FILE and TLS_KEY_FILE")
    files = TlsFiles(cert, key, ca)
    try:
        server_credentials(files)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"invalid configuration: AUTHSIDECAR_TLS_CERT_FILE: cannot load the certificates: {exc}"
        ) from None
    return files


def build_callers(settings: Settings) -> CallerPolicy | None:
    """Caller authentication, when callers are configured."""
    if not settings.callers:
        return None
    if settings.tls_client_ca_file is None and any(c.certificate_names for c in settings.callers.values()):
        raise ConfigError(
            "invalid configuration: callers: certificate_names need AUTHSIDECAR_TLS_CLIENT_CA_FILE (mTLS)"
        )
    return CallerPolicy(
        Caller(name, frozenset(c.allow), c.key_sha256, frozenset(c.certificate_names))
        for name, c in settings.callers.items()
    )


def check_metrics_listen(settings: Settings) -> None:
    """The metrics endpoint has no authentication and tells whoever reaches it how many sign-ins, sessions and
    errors the server sees: a non-loopback address must be asked for (as plaintext gRPC must)."""
    listen = settings.metrics_listen
    if listen is not None and not is_loopback(listen) and not settings.metrics_allow_remote:
        raise ConfigError(
            f"invalid configuration: AUTHSIDECAR_METRICS_LISTEN: {listen} is not a loopback address, and /metrics"
            " answers anyone who reaches it: listen on loopback next to the scraper, or set"
            " AUTHSIDECAR_METRICS_ALLOW_REMOTE=true"
        )


def check_allow_lists(settings: Settings, served: frozenset[str]) -> None:
    """Every RPC a caller's ``allow`` names is one this server serves (``served``: the core services', the
    plugins', Check) or one of the names it knows without the plugin that serves it (``RPC_NAMES``: a list that
    stays valid when two_factor or ext_authz is turned off); raises ConfigError naming the first unknown one."""
    known = served | RPC_NAMES | {"*"}
    for name, caller in settings.callers.items():
        unknown = sorted(set(caller.allow) - known)
        if unknown:
            raise ConfigError(
                f"invalid configuration: AUTHSIDECAR_CALLERS.{name.upper()}.ALLOW: unknown RPC {unknown[0]!r}"
            )


def build_gateway(settings: Settings, sessions: SessionManager) -> Gateway:
    """What Envoy's ext_authz and the forward-auth endpoint check: the session of a proxied request."""
    identity = IdentityHeaders(
        settings.gateway_user_id_header, settings.gateway_session_id_header, settings.gateway_email_header
    )
    return Gateway(sessions, cookie_source(sessions, settings.gateway_cookie_name), identity)


def build_forward_auth(settings: Settings, gateway: Gateway) -> ForwardAuthServer | None:
    """The forward-auth listener, when configured; plaintext HTTP carries tokens, so a non-loopback address
    needs ALLOW_INSECURE (a trusted network between the proxy and this process)."""
    listen = settings.forward_auth_listen
    if listen is None:
        return None
    if not is_loopback(listen) and not settings.allow_insecure:
        raise ConfigError(
            f"invalid configuration: AUTHSIDECAR_FORWARD_AUTH_LISTEN: {listen} is reachable from other machines and"
            " would carry session tokens in plaintext HTTP: listen on loopback next to the proxy, or set"
            " AUTHSIDECAR_ALLOW_INSECURE=true behind a trusted network"
        )
    return ForwardAuthServer(gateway, listen, settings.forward_auth_max_connections, settings.reuse_port)


def build_limits(settings: Settings) -> tuple[Limits, LoginGuard, MailThrottle]:
    """Rate limits (the defaults overridden per RPC), brute-force protection and the mail throttle, counted in
    Redis when REDIS_URL is set, else in this process."""
    rules = dict(DEFAULT_RULES)
    for rpc, conf in settings.rate_limits.items():
        base = rules.get(rpc, RpcRule())
        rules[rpc] = RpcRule(ip=_limit(conf.ip, base.ip), identifier=_limit(conf.identifier, base.identifier))
    limiter: RateLimiter
    if settings.redis_url is not None:
        _, client, pipelined = _redis_clients(settings, settings.redis_url.get_secret_value())
        limiter = RedisRateLimiter(client, settings.effective_redis_key_prefix, pipelined)
    else:
        limiter = MemoryRateLimiter()
    limits = Limits(limiter, rules, settings.rate_limit_enabled, settings.redis_retry_after)
    guard = LoginGuard(
        limits,
        Limit.parse(settings.login_failures_per_ip),
        Limit.parse(settings.login_failures_per_account),
        settings.login_slowdown,
    )
    return limits, guard, MailThrottle(limits, settings.mail_interval)


def _limit(text: str | None, default: Limit | None) -> Limit | None:
    if text is None:
        return default
    return None if text == "off" else Limit.parse(text)


def build_cookie_cache(settings: Settings, secret: str) -> CookieCache | None:
    """The app's session_data cookie reader, when turned on (compat profile)."""
    if settings.cookie_cache == "off":
        return None
    name = f"{settings.cookie_prefix}.session_data"
    names = {True: (f"__Secure-{name}",), False: (name,), None: (f"__Secure-{name}", name)}[settings.secure_cookies]
    return CookieCache(secret, settings.cookie_cache, settings.cookie_cache_version, names)


def build_better_auth_redis(settings: Settings) -> BetterAuthRedis | None:
    """Better Auth's Redis layout (compat profile), when REDIS_URL is set."""
    if settings.redis_url is None:
        return None
    url = settings.redis_url.get_secret_value()
    _, client, getter = _redis_clients(settings, url)
    if not isinstance(client, Redis):  # load_settings refuses a Cluster in this profile
        raise ConfigError("invalid configuration: REDIS_URL: the compat profile cannot use a Redis Cluster")
    revoked_ttl = max(settings.session_expires_in, 86_400)  # Better Auth's revokedBeforeTTL
    return BetterAuthRedis(client, settings.effective_redis_key_prefix, build_registry(settings), revoked_ttl, getter)


def build_session_policy(settings: Settings) -> SessionPolicy:
    """Lifetimes from settings."""
    if settings.session_short_expires_in >= settings.session_expires_in:
        raise ConfigError(
            "invalid configuration: AUTHSIDECAR_SESSION_SHORT_EXPIRES_IN: must be shorter than session_expires_in"
        )
    return SessionPolicy(
        expires_in=timedelta(seconds=settings.session_expires_in),
        update_age=timedelta(seconds=settings.session_update_age),
        short_expires_in=timedelta(seconds=settings.session_short_expires_in),
        fresh_age=timedelta(seconds=settings.session_fresh_age),
        max_lifetime=timedelta(seconds=settings.session_max_lifetime) if settings.session_max_lifetime else None,
    )


def describe(settings: Settings) -> str:
    """The start-up line: which database, cache, delivery, hooks and plugins this server uses (no secrets)."""
    target = database_target(settings)
    if not settings.cache_enabled:
        cache = "none"
    elif settings.redis_url is not None:
        redis_at = parse_redis_url(settings.redis_url.get_secret_value()).describe()
        cache = f"{redis_at} (prefix {settings.effective_redis_key_prefix})"
        if settings.local_cache_seconds > 0 and settings.outage_grace <= 0:
            cache += (
                f" + in-process tier ({settings.local_cache_seconds:g} s, up to {settings.memory_cache_max_entries})"
            )
    else:
        cache = f"in-process (up to {settings.memory_cache_max_entries} sessions)"
    delivery = {
        "log": "log (links in this log)",
        "smtp": f"smtp {settings.smtp_host}:{settings.smtp_port} ({settings.smtp_security})",
        "webhook": f"webhook {urlsplit(settings.webhook_url or '').netloc}",
    }[settings.delivery]
    plugins = ", ".join(name for name, conf in settings.plugins.items() if conf.enabled) or "none"
    profile = " (Better Auth compatibility)" if settings.better_auth else ""
    gateways = [name for name, on in (("envoy ext_authz", settings.ext_authz),) if on]
    if settings.forward_auth_listen:
        gateways.append(f"forward-auth {settings.forward_auth_listen}")
    return (
        f"authsidecar {__version__}{profile}: database {where(target)}; cache {cache}; delivery {delivery};"
        f" hooks {len(settings.hooks)}; events {settings.event_stream}; plugins {plugins};"
        f" gateways {', '.join(gateways) or 'none'}"
    )


@dataclass
class Core:
    """What every process that changes users or sessions wires the same way (the server, the admin CLI): the store
    as services write to it (hooks and the outbox; Better Auth's Redis layout in that profile), the session cache
    and its coherence (applying this process's invalidations after each commit), and the session manager."""

    store: Database
    cache: SessionCache
    coherence: CacheCoherence
    sessions: SessionManager
    ids: IdGenerator
    shared: BetterAuthRedis | None = None
    better_auth_store: BetterAuthDatabase | None = None
    links: EmailLinks | None = None  # the profile's email links (None: build_core always sets it)


def build_core(
    settings: Settings, database: SqlDatabase, hooks: HookSetup, policy: SessionPolicy, tracer: Tracer | None = None
) -> Core:
    """The store, cache, coherence and session manager over ``database``; registers the coherence as its commit
    listener. With ``tracer``: spans around units of work, session lookups and Redis calls."""
    registry = database.schema.registry
    plugins = any(conf.enabled for conf in settings.plugins.values())

    def hooked(store: Database) -> Database:
        if not hooks.runner and not plugins:  # plugins may add hooks at set-up
            return store
        return HookedDatabase(store, hooks.runner, Payloads(registry))

    session_fields = ExtraFieldRules(registry.session).for_create({})
    try:
        ids = id_generator(str(settings.db_schema.generate_id))
        ids("user")  # a custom function that returns no usable id stops start-up, not every sign-up
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid configuration: schema.generate_id: {exc}") from None
    shared: BetterAuthRedis | None = None
    links: EmailLinks
    store: Database = database
    if tracer is not None:
        from authsidecar.observability.traced import TracedDatabase

        store = TracedDatabase(database, tracer, database.engine.dialect.name)
    better_auth_store: BetterAuthDatabase | None = None
    sessions: SessionManager
    if settings.better_auth:
        jwt_secret = settings.better_auth_current_secret()
        shared = build_better_auth_redis(settings)
        links = BetterAuthLinks(jwt_secret, ids=ids)  # Better Auth's signed JWT links
        cookies = SessionCookies(jwt_secret, settings.cookie_prefix, settings.secure_cookies)
        in_sql = settings.store_session_in_database or shared is None
        store = better_auth_store = BetterAuthDatabase(
            store, shared, in_sql, settings.store_verification_in_database or shared is None, utc_now
        )
        store = hooked(store)
        cache: SessionCache = NullSessionCache()
        tokens: TokenPolicy = PlainTokenPolicy()
        coherence = CacheCoherence(
            cache, tokens, settings.cache_trust_seconds, settings.invalidation_bound, settings.outage_grace
        )
        sessions = BetterAuthSessionManager(
            store,
            shared,
            cookies,
            in_sql,
            policy,
            coherence,
            session_fields=session_fields,
            ids=ids,
            retry_after=settings.redis_retry_after,
            cookie_cache=build_cookie_cache(settings, jwt_secret),
            registry=registry,
            preserve_sessions=settings.preserve_session_in_database,
        )
        better_auth_store.on_revoked = coherence.note
        if settings.database_url is None:
            log.warning(
                "AUTHSIDECAR_COMPAT=better-auth on the embedded SQLite file: nothing is shared with a Better Auth"
                " app unless it uses that file (set DATABASE_URL to the app's database)"
            )
    else:
        cache = build_cache(settings, tracer)
        tokens = HashedTokenPolicy()
        coherence = CacheCoherence(
            cache, tokens, settings.cache_trust_seconds, settings.invalidation_bound, settings.outage_grace
        )
        store = hooked(store)
        sessions = SessionManager(store, cache, tokens, policy, coherence, session_fields=session_fields, ids=ids)
        links = StoredLinks(ids=ids)  # stored random tokens
    database.add_commit_listener(coherence.committed)
    database.stamp = coherence.clock.stamp  # snapshots read from SQL are stamped in the database's time
    return Core(store, cache, coherence, sessions, ids, shared, better_auth_store, links)


def build_sender(settings: Settings, client: httpx.AsyncClient | None = None) -> Sender:
    """The configured message delivery."""
    if settings.delivery == "smtp":
        return SmtpSender(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_security,
            settings.smtp_username,
            settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            settings.smtp_from,
            {
                "verify-email": settings.mail_subject_verify_email,
                "approve-email-change": settings.mail_subject_approve_email_change,
                "change-email": settings.mail_subject_change_email,
                "email-changed": settings.mail_subject_email_changed,
                "reset-password": settings.mail_subject_reset_password,
            },
            settings.mail_body_template,
            settings.smtp_timeout,
            settings.mail_notice_template,
            settings.smtp_ca_file,
        )
    if settings.delivery == "webhook":
        if not (settings.webhook_url and settings.webhook_secret):
            raise ConfigError(
                "invalid configuration: AUTHSIDECAR_WEBHOOK_URL: webhook delivery needs a URL and a secret"
            )
        return WebhookSender(
            settings.webhook_url, settings.webhook_secret.get_secret_value(), settings.webhook_timeout, client
        )
    return LogSender()


def build_flow_settings(settings: Settings) -> FlowSettings:
    """Token lifetimes and flow switches from settings."""
    return FlowSettings(
        link_template=settings.link_url_template,
        verify_email_ttl=timedelta(seconds=settings.verify_email_expires_in),
        change_email_ttl=timedelta(seconds=settings.change_email_expires_in),
        reset_password_ttl=timedelta(seconds=settings.reset_password_expires_in),
        auto_sign_in_after_verification=settings.auto_sign_in_after_verification,
        revoke_sessions_on_password_reset=settings.revoke_sessions_on_password_reset,
    )
