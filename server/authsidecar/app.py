"""Composition root: builds every component from Settings; owns start-up and shutdown order."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from redis.asyncio import Redis

from authsidecar import __version__
from authsidecar.cache import MemorySessionCache, NullSessionCache, RedisSessionCache, ResilientSessionCache
from authsidecar.cache.better_auth import BetterAuthRedis
from authsidecar.cache.integrity import DocumentSigner, derive_key
from authsidecar.cache.ratelimit import Limit, MemoryRateLimiter, RateLimiter, RedisRateLimiter
from authsidecar.cache.tiered import TieredSessionCache
from authsidecar.cache.topology import connect_redis, hot_path_getter, parse_redis_url
from authsidecar.config import ConfigError, Settings
from authsidecar.delivery import DeliveryQueue, LogSender, Sender, SmtpSender, WebhookSender
from authsidecar.delivery.senders import http_client
from authsidecar.domain.ports import Database, SessionCache
from authsidecar.errors import AuthSidecarError, BackendUnavailable
from authsidecar.hooks.context import tracking
from authsidecar.hooks.database import HookedDatabase
from authsidecar.hooks.dispatcher import OutboxDispatcher
from authsidecar.hooks.payloads import Payloads
from authsidecar.hooks.setup import HookSetup, build_hooks
from authsidecar.observability.metrics import Gauges, MetricsServer
from authsidecar.observability.tracing import start_tracing
from authsidecar.plugins.base import PluginHost
from authsidecar.security.cookie_cache import CookieCache
from authsidecar.security.cookies import SessionCookies
from authsidecar.security.ids import IdGenerator, id_generator
from authsidecar.security.passwords import Argon2Parameters, PasswordHasher
from authsidecar.security.tokens import HashedTokenPolicy, PlainTokenPolicy, TokenPolicy
from authsidecar.services.accounts import AccountService, VerificationPolicy
from authsidecar.services.better_auth import BetterAuthSessionManager
from authsidecar.services.cleanup import remove_expired
from authsidecar.services.clock import utc_now
from authsidecar.services.coherence import CacheCoherence
from authsidecar.services.extra_fields import ExtraFieldRules
from authsidecar.services.limits import DEFAULT_RULES, Limits, LoginGuard, MailThrottle, RpcRule
from authsidecar.services.profile import ProfileService
from authsidecar.services.rules import CredentialRules
from authsidecar.services.sessions import SessionManager, SessionPolicy
from authsidecar.services.verification import AccountFlows, FlowSettings
from authsidecar.storage.better_auth import BetterAuthDatabase
from authsidecar.storage.database import SqlDatabase, create_database
from authsidecar.storage.errors import translate_error
from authsidecar.storage.explain import explain_database_error, where
from authsidecar.storage.migrate import schema_status
from authsidecar.storage.outbox import SqlOutbox
from authsidecar.storage.schema import Schema
from authsidecar.storage.urls import DatabaseTarget, resolve_database_url
from authsidecar.transport.gateway import Gateway, IdentityHeaders, cookie_source
from authsidecar.transport.grpc.callers import Caller, CallerPolicy
from authsidecar.transport.grpc.convert import Converter
from authsidecar.transport.grpc.envoy import SERVICE_NAME as ENVOY_SERVICE
from authsidecar.transport.grpc.envoy import EnvoyAuthorizationServicer
from authsidecar.transport.grpc.envoy import add_to_server as add_envoy_servicer
from authsidecar.transport.grpc.server import GrpcServer
from authsidecar.transport.grpc.servicers import AuthServicer, SessionServicer
from authsidecar.transport.grpc.tls import TlsFiles, is_loopback, server_credentials
from authsidecar.transport.http import ForwardAuthServer

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from authsidecar.observability.otel import Tracing

__all__ = [
    "AlreadyServing",
    "App",
    "Core",
    "SchemaNotReady",
    "build_cache",
    "build_core",
    "build_database",
    "build_hasher",
    "database_target",
    "run",
]

log = logging.getLogger("authsidecar")


def database_target(settings: Settings) -> DatabaseTarget:
    """DATABASE_URL (or the embedded SQLite file), resolved for SQLAlchemy."""
    raw = settings.database_url.get_secret_value() if settings.database_url else None
    try:
        return resolve_database_url(raw, settings.sqlite_path)
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: DATABASE_URL: {exc}") from None


def build_database(settings: Settings) -> SqlDatabase:
    """The SQL store of record."""
    return create_database(
        database_target(settings),
        Schema(settings.registry()),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        connect_timeout=settings.db_connect_timeout,
        pool_recycle=settings.db_pool_recycle,
    )


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
    try:
        target = parse_redis_url(url)
        client = connect_redis(target, settings.redis_timeout, settings.redis_max_connections)
        getter = hot_path_getter(target, client, settings.redis_timeout)
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: REDIS_URL: {exc}") from None
    signer = DocumentSigner(derive_key(settings.secret.get_secret_value(), "cache-documents"))
    cache: SessionCache = RedisSessionCache(
        client,
        settings.redis_key_prefix,
        signer,
        getter,
        registry=settings.registry(),
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


def build_hasher(settings: Settings) -> PasswordHasher:
    """argon2id (or Better Auth's scrypt) with the configured cost and concurrency bounds."""
    params = Argon2Parameters(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
    return PasswordHasher(
        params,
        settings.hash_workers,
        settings.effective_hash_max_pending,
        settings.effective_password_hash,
        settings.hash_max_pending_per_client,
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
        url = settings.redis_url.get_secret_value()
        try:
            client = connect_redis(url, settings.redis_timeout, settings.redis_max_connections)
            limiter = RedisRateLimiter(client, settings.effective_redis_key_prefix)
        except ValueError as exc:
            raise ConfigError(f"invalid configuration: REDIS_URL: {exc}") from None
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
    try:
        target = parse_redis_url(url)
        client = connect_redis(target, settings.redis_timeout, settings.redis_max_connections)
        getter = hot_path_getter(target, client, settings.redis_timeout)
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: REDIS_URL: {exc}") from None
    if not isinstance(client, Redis):  # load_settings refuses a Cluster in this profile
        raise ConfigError("invalid configuration: REDIS_URL: the compat profile cannot use a Redis Cluster")
    revoked_ttl = max(settings.session_expires_in, 86_400)  # Better Auth's revokedBeforeTTL
    return BetterAuthRedis(client, settings.effective_redis_key_prefix, settings.registry(), revoked_ttl, getter)


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
    jwt_secret: str | None = None


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
        tracking.on = True
        return HookedDatabase(store, hooks.runner, Payloads(registry))

    session_fields = ExtraFieldRules(registry.session).for_create({})
    try:
        ids = id_generator(str(settings.db_schema.generate_id))
        ids("user")  # a custom function that returns no usable id stops start-up, not every sign-up
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid configuration: schema.generate_id: {exc}") from None
    shared: BetterAuthRedis | None = None
    jwt_secret: str | None = None
    store: Database = database
    if tracer is not None:
        from authsidecar.observability.traced import TracedDatabase

        store = TracedDatabase(database, tracer, database.engine.dialect.name)
    better_auth_store: BetterAuthDatabase | None = None
    sessions: SessionManager
    if settings.better_auth:
        jwt_secret = settings.better_auth_current_secret()
        shared = build_better_auth_redis(settings)
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
    database.add_commit_listener(coherence.committed)
    database.stamp = coherence.clock  # snapshots read from SQL are stamped in the database's time
    return Core(store, cache, coherence, sessions, ids, shared, better_auth_store, jwt_secret)


# Better Auth plugins that can refuse a sign-in, by the user column they add: in the compatibility profile, ours
# must be on when the app's is.
_GUARDING_COLUMNS = {"twoFactorEnabled": "two_factor", "banned": "admin"}


class SchemaNotReady(RuntimeError):
    """The database has not been migrated to the version this server needs."""


class AlreadyServing(RuntimeError):
    """Another server process already serves the embedded SQLite database."""


def lock_sqlite(settings: Settings) -> IO[bytes] | None:
    """On SQLite, hold an exclusive lock on the database file itself for as long as this process serves: one
    serving process only (the in-process caches of two would not see each other's revocations). The lock is on
    the file, so another path to it (a symlink, a hard link) is refused too; SQLite's own locks are of another
    kind and unaffected. None on other databases, or when the file does not exist yet (serve then stops with the
    migrate hint)."""
    target = database_target(settings)
    if not target.is_sqlite or not target.url.database or not os.path.exists(target.url.database):
        return None
    handle = open(target.url.database, "rb")  # noqa: SIM115 - held open until the process exits
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise AlreadyServing(
            f"another authsidecar server already serves {target.url.database}; the embedded SQLite database"
            " supports one serving process: stop the other one, or use Postgres (DATABASE_URL) to run several"
        ) from None
    return handle


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


@dataclass
class App:
    """Every long-lived component, wired."""

    settings: Settings
    database: SqlDatabase
    cache: SessionCache
    hasher: PasswordHasher
    server: GrpcServer
    outbox: DeliveryQueue
    coherence: CacheCoherence
    shared_redis: BetterAuthRedis | None = None
    better_auth_store: BetterAuthDatabase | None = None
    limits: Limits | None = None
    http: httpx.AsyncClient | None = None
    hooks: HookSetup | None = None
    dispatcher: OutboxDispatcher | None = None
    metrics: MetricsServer | None = None
    forward_auth: ForwardAuthServer | None = None
    tracing: Tracing | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _outbox_figures: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings) -> App:
        """Wire everything; opens no connection yet."""
        policy = build_session_policy(settings)
        tracing = build_tracing()
        tracer = tracing.tracer if tracing is not None else None
        database = build_database(settings)
        hasher = build_hasher(settings)
        hasher.tracer = tracer
        http = http_client()  # every outgoing HTTP call of this process: delivery webhooks and hooks
        outbox = DeliveryQueue(build_sender(settings, http), settings.delivery_queue_size, settings.delivery_attempts)
        registry = database.schema.registry
        hooks = build_hooks(settings, http)
        plugins = settings.enabled_plugins()

        core = build_core(settings, database, hooks, policy, tracer)
        store, cache, coherence, sessions, ids = core.store, core.cache, core.coherence, core.sessions, core.ids
        shared, better_auth_store, jwt_secret = core.shared, core.better_auth_store, core.jwt_secret
        rules = CredentialRules(settings.password_min_length, settings.password_max_length)
        limits, guard, mail = build_limits(settings)
        flows = AccountFlows(
            store,
            hasher,
            sessions,
            rules,
            outbox,
            build_flow_settings(settings),
            jwt_secret=jwt_secret,
            limits=limits,
            mail=mail,
            guard=guard,
        )
        verification = VerificationPolicy(
            required=settings.require_email_verification,
            send_on_sign_up=settings.send_verification_on_sign_up,
            send_on_sign_in=settings.send_verification_on_sign_in,
            send=flows.send_verification,
        )
        user_fields = ExtraFieldRules(registry.user)
        accounts = AccountService(
            store,
            hasher,
            sessions,
            rules,
            settings.auto_sign_in,
            verification=verification,
            user_fields=user_fields,
            ids=ids,
            limits=limits,
            guard=guard,
        )
        profile = ProfileService(store, hasher, sessions, rules, user_fields=user_fields, limits=limits, guard=guard)
        convert = Converter(registry)
        auth_servicer = AuthServicer(accounts, sessions, flows, profile, convert)
        session_servicer = SessionServicer(sessions, convert)
        callers = build_callers(settings)
        auth_servicer.callers = session_servicer.callers = callers
        host = PluginHost(
            settings,
            store,
            database,
            sessions,
            hasher,
            limits,
            guard,
            hooks.runner,
            hooks.targets,
            {"convert": convert, "callers": callers, "accounts": accounts, "profile": profile},
        )
        extra = []
        for name, plugin in plugins:
            try:
                parts = plugin.setup(host)
            except ValueError as exc:
                raise ConfigError(f"invalid configuration: plugins.{name}: {exc}") from None
            extra += [(service.name, service.add, service.servicer) for service in parts.services]
            if parts.sign_in_gate is not None:
                accounts.gates.append(parts.sign_in_gate)
                flows.gates.append(parts.sign_in_gate)
        gateway = build_gateway(settings, sessions)
        if settings.ext_authz:
            envoy = EnvoyAuthorizationServicer(gateway)
            envoy.callers = callers
            extra.append((ENVOY_SERVICE, add_envoy_servicer, envoy))
        server = GrpcServer(
            auth_servicer,
            session_servicer,
            settings.listen,
            reuse_port=settings.reuse_port,
            tls=build_tls(settings),
            socket_mode=int(settings.socket_mode, 8),
            extra=extra,
            tracer=tracer,
        )
        dispatcher = None
        if hooks.targets:
            dispatcher = OutboxDispatcher(
                SqlOutbox(database),
                hooks.targets,
                settings.outbox_max_attempts,
                settings.outbox_poll_interval,
                delivery_timeout=max([10.0, *(spec.timeout + 1 for spec in settings.hooks)]),
            )
            database.add_outbox_listener(dispatcher.wake)
        app = cls(
            settings,
            database,
            cache,
            hasher,
            server,
            outbox,
            coherence,
            shared,
            better_auth_store,
            limits,
            http,
            hooks,
            dispatcher,
        )
        app.forward_auth = build_forward_auth(settings, gateway)
        if settings.metrics_listen:
            app.metrics = MetricsServer(settings.metrics_listen, app.gauges(sessions))
        app.tracing = tracing
        return app

    def gauges(self, sessions: SessionManager) -> Gauges:
        """What the metrics endpoint reports besides RPCs, read at scrape time."""
        figures = self._outbox_figures
        gauges = Gauges()
        gauges.counters = {
            "authsidecar_session_cache_hits": (
                "validations answered from the secondary storage",
                lambda: sessions.hits,
            ),
            "authsidecar_session_cache_misses": ("validations that read the database", lambda: sessions.misses),
            "authsidecar_password_hash_refused": (
                "sign-ins and hashes refused at capacity",
                lambda: self.hasher.refused,
            ),
            "authsidecar_delivery_dropped": ("messages dropped by a full delivery queue", lambda: self.outbox.dropped),
        }
        gauges.gauges = {
            "authsidecar_password_hash_pending": ("hashes admitted and not finished", lambda: self.hasher.pending),
            "authsidecar_delivery_queue": ("messages waiting to be sent", lambda: self.outbox.size),
        }
        if isinstance(self.cache, TieredSessionCache):
            tiered = self.cache
            gauges.counters["authsidecar_session_cache_local_hits"] = (
                "lookups that found a copy in the in-process tier in front of Redis (served if the coherence rules trust it)",
                lambda: tiered.local_hits,
            )
        shared = self.cache.remote if isinstance(self.cache, TieredSessionCache) else self.cache
        if isinstance(shared, ResilientSessionCache):
            cache = shared
            gauges.counters["authsidecar_session_cache_fallbacks"] = (
                "lookups that went to the database because Redis failed or was bypassed",
                lambda: cache.fallbacks,
            )
        if self.dispatcher is not None:
            gauges.gauges |= {
                "authsidecar_outbox_backlog": ("after events waiting for delivery", lambda: figures["live"]),
                "authsidecar_outbox_dead": ("after events given up", lambda: figures["dead"]),
                "authsidecar_outbox_lag_seconds": ("age of the oldest waiting after event", lambda: figures["lag"]),
            }
        return gauges

    async def _watch_outbox(self) -> None:
        """Keep the outbox figures of the metrics fresh (a query every few seconds, not one per scrape)."""
        outbox = SqlOutbox(self.database)
        while True:
            try:
                live, dead = await outbox.backlog()
                oldest = await outbox.oldest()
                lag = (utc_now() - oldest).total_seconds() if oldest is not None else 0.0
                self._outbox_figures.update(live=live, dead=dead, lag=max(lag, 0.0))
            except AuthSidecarError:
                self._outbox_figures.clear()  # NaN while the database cannot be read
            await asyncio.sleep(5)

    async def check_database(self) -> None:
        """Raise SchemaNotReady when the database is reachable but not migrated (or refuses this configuration);
        an unreachable one only logs a warning (health then says NOT_SERVING until it comes up)."""
        try:
            problem = await schema_status(self.database.engine, self.database.schema)
            if problem is None:
                await self.database.ensure_invalidation_counter()
                problem = self._unsupported_ids() or await self._unguarded_second_factor()
        except Exception as exc:  # unreachable: serve anyway, NOT_SERVING until it comes up
            explained = explain_database_error(exc, database_target(self.settings))
            if explained is not None and not explained.transient:  # no such database, refused credentials
                raise SchemaNotReady(explained.message) from None
            if not isinstance(exc, BackendUnavailable) and not isinstance(translate_error(exc), BackendUnavailable):
                raise
            problem = None
            log.warning(
                "%s; schema not checked, health NOT_SERVING until it is reachable", explained or "database unreachable"
            )
        if problem is not None:
            raise SchemaNotReady(problem)

    async def start(self) -> None:
        """Start serving; health follows the database's reachability.

        Raises SchemaNotReady when the database is reachable but not migrated (checked once, at start).
        """
        await self.check_database()
        if self.settings.delivery == "log":
            log.warning(
                "AUTHSIDECAR_DELIVERY=log: verification and reset links, with live tokens, are written to this log;"
                " use smtp or webhook in production"
            )
        log.info("%s", describe(self.settings))
        await self.server.set_serving(False)
        await self.server.start()
        if self.forward_auth is not None:
            await self.forward_auth.start()
        serving = await self._database_reachable()
        if serving and self.settings.cache_enabled:
            # Snapshots are stamped in the database's time from the first call on (the follower reads it again).
            with contextlib.suppress(Exception):
                await self.coherence.clock.measure(self.database.database_time)
        await self.server.set_serving(serving)
        if not serving:
            log.warning("database unreachable: health is NOT_SERVING")
        self.outbox.start()
        self._tasks.append(asyncio.create_task(self._watch_health(serving), name="health"))
        if self.settings.cache_enabled:
            self._tasks.append(asyncio.create_task(self.coherence.follow(self.database), name="invalidations"))
        if self.settings.cleanup_interval:
            self._tasks.append(asyncio.create_task(self._cleanup_periodically(), name="cleanup"))
        if self.dispatcher is not None:
            self._tasks.append(asyncio.create_task(self.dispatcher.run(), name="outbox"))
        if self.metrics is not None:
            self.metrics.start()
            if self.dispatcher is not None:
                self._tasks.append(asyncio.create_task(self._watch_outbox(), name="outbox-metrics"))

    async def _unguarded_second_factor(self) -> str | None:
        """In the Better Auth profile, an app whose users may be guarded by one of its plugins (its user table has
        that plugin's column) needs our plugin of that name too, or a password alone would sign them in."""
        if not self.settings.better_auth:
            return None
        enabled = {name for name, conf in self.settings.plugins.items() if conf.enabled}
        missing = {column: name for column, name in _GUARDING_COLUMNS.items() if name not in enabled}
        if not missing:
            return None
        table = self.database.schema.user.name
        async with self.database.engine.connect() as conn:
            columns = await conn.run_sync(lambda c: {col["name"] for col in sa.inspect(c).get_columns(table)})
        for column, name in missing.items():
            if column in columns:
                return (
                    f"{table}.{column} exists: the Better Auth app uses its {name} plugin, and without"
                    f" [plugins.{name}] here a password alone would sign its users in; enable the plugin"
                )
        return None

    def _unsupported_ids(self) -> str | None:
        """Database-made UUIDs are read back with INSERT ... RETURNING, which MySQL (unlike MariaDB) lacks."""
        dialect = self.database.engine.dialect
        if self.database.schema.registry.generate_id == "false" and not dialect.insert_returning:
            return 'schema.generate_id = false needs INSERT ... RETURNING, which this database lacks: use "uuid"'
        return None

    async def _cleanup_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cleanup_interval)
            try:
                removed = await remove_expired(
                    self.database, self.settings.cleanup_batch_size, outbox=SqlOutbox(self.database)
                )
            except AuthSidecarError as exc:
                log.warning("cleanup skipped: %s", exc.message)
                continue
            except Exception:
                log.exception("cleanup failed")
                continue
            if any(removed.values()):
                log.info("cleanup removed %s", removed)

    async def _database_reachable(self) -> bool:
        try:
            await self.database.ping(within=self.settings.health_interval)
        except BackendUnavailable:
            return False
        return True

    async def _watch_health(self, serving: bool) -> None:
        """Follow the database's reachability; health changes (and a log line) only on transitions."""
        while True:
            await asyncio.sleep(self.settings.health_interval)
            now_serving = await self._database_reachable()
            if now_serving != serving:
                log.warning(
                    "database %s: health is %s",
                    *(("reachable again", "SERVING") if now_serving else ("unreachable", "NOT_SERVING")),
                )
                await self.server.set_serving(now_serving)
                serving = now_serving

    async def drain(self) -> None:
        """Tell health checkers to go away (NOT_SERVING) but keep serving for ``drain_delay`` seconds, so load
        balancers stop sending calls before the listener closes."""
        await self._stop_tasks(("health",))  # it must not turn health back to SERVING
        await self.server.set_serving(False)
        if self.settings.drain_delay:
            log.info("draining: NOT_SERVING, still answering for %.1fs", self.settings.drain_delay)
            await asyncio.sleep(self.settings.drain_delay)

    async def stop(self) -> None:
        """Stop accepting, drain in-flight calls within the grace period, then close pools."""
        log.info("shutting down (grace %.1fs)", self.settings.shutdown_grace)
        stopping = [self.server.stop(self.settings.shutdown_grace)]
        if self.forward_auth is not None:
            stopping.append(self.forward_auth.stop(self.settings.shutdown_grace))
        await asyncio.gather(*stopping)
        self.coherence.stop()
        await self._stop_tasks(("invalidations",), cancel=False)
        if self.dispatcher is not None:
            self.dispatcher.stop()
            await self._stop_tasks(("outbox",), cancel=False)
        await self._stop_tasks()
        await self.outbox.stop(self.settings.shutdown_grace)
        if self.metrics is not None:
            self.metrics.stop()
        await self.close_resources()
        log.info("stopped")

    async def _stop_tasks(self, names: tuple[str, ...] | None = None, cancel: bool = True) -> None:
        """Cancel background tasks (those named, or all) and wait for them; ``cancel=False``: they were asked to
        stop and get a few seconds to do so."""
        stopping = [t for t in self._tasks if names is None or t.get_name() in names]
        self._tasks = [t for t in self._tasks if t not in stopping]
        if not cancel and stopping:
            await asyncio.wait(stopping, timeout=5)  # asked to stop: a few seconds to finish what they are doing
        for task in stopping:
            task.cancel()  # no effect on those that finished
        for task in stopping:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("background task %s had failed", task.get_name())

    async def close_resources(self) -> None:
        """Close pools and threads (after the server stopped, or when it never started)."""
        await self.cache.close()
        if self.better_auth_store is not None:
            await self.better_auth_store.flush()
        if self.shared_redis is not None:
            await self.shared_redis.close()
        if self.limits is not None:
            await self.limits.close()
        if self.hooks is not None and self.hooks.stream is not None:
            await self.hooks.stream.close()
        if self.http is not None:
            await self.http.aclose()
        await self.database.close()
        self.hasher.close()
        if self.tracing is not None:  # last: the spans of everything above are sent
            await self.tracing.shutdown()


async def run(settings: Settings, started: Callable[[], None] | None = None, supervised: bool = False) -> None:
    """Serve until SIGTERM (drain first) or SIGINT (stop at once, for a terminal).

    ``started`` is called once the server listens. A second signal cuts the drain short; ``supervised`` (a worker
    of ``serve --workers``): only SIGINT does, since a repeated SIGTERM is the same request arriving twice (systemd
    signals every process of the service and the supervisor forwards its own).
    """
    lock = lock_sqlite(settings)
    app = App.build(settings)
    received: asyncio.Queue[signal.Signals] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, received.put_nowait, sig)
    try:
        await app.start()
    except BaseException:
        await app.server.stop(0)  # it may have started before a later step failed (a metrics port in use)
        await app.close_resources()
        raise
    # What start-up built (modules, schema, pools: hundreds of thousands of objects) lives as long as the process:
    # out of the collector's sight, a full collection no longer walks it every few thousand calls.
    gc.collect()
    gc.freeze()
    if started is not None:
        started()
    try:
        if await received.get() == signal.SIGTERM:
            drain = asyncio.create_task(app.drain())
            stop_now = asyncio.create_task(_cut_short(received, supervised))
            await asyncio.wait((drain, stop_now), return_when=asyncio.FIRST_COMPLETED)
            for task in (drain, stop_now):
                task.cancel()
    finally:
        await app.stop()
        if lock is not None:
            lock.close()


async def _cut_short(received: asyncio.Queue[signal.Signals], supervised: bool) -> None:
    """Until the signal that cuts the drain short: the next one, or under a supervisor the next SIGINT."""
    while await received.get() == signal.SIGTERM and supervised:
        pass
