"""The composition root: every long-lived part of a serving process, built once from the settings.

``compose(settings)`` is the one place that decides which parts exist and how they are joined (the builders of
single parts are in assembly.py); ``App`` (app.py) takes the result and owns start-up and shutdown order. The
Better Auth profile is chosen once, in ``assembly.build_core``; the call guard (caller checks, metrics, the call
context of hooks) once, here, for every gRPC service the server registers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from authsidecar.assembly import (
    build_callers,
    build_core,
    build_database,
    build_flow_settings,
    build_forward_auth,
    build_gateway,
    build_hasher,
    build_limits,
    build_plugins,
    build_sender,
    build_session_policy,
    build_tls,
    build_tracing,
    check_allow_lists,
    check_metrics_listen,
)
from authsidecar.cache import ResilientSessionCache
from authsidecar.cache.better_auth import BetterAuthRedis
from authsidecar.cache.tiered import TieredSessionCache
from authsidecar.config import ConfigError, Settings
from authsidecar.delivery import DeliveryQueue
from authsidecar.delivery.senders import http_client
from authsidecar.domain.ports import SessionCache
from authsidecar.hooks.dispatcher import OutboxDispatcher
from authsidecar.hooks.setup import HookSetup, build_hooks
from authsidecar.observability.metrics import Gauges, MetricsServer, RpcMetrics
from authsidecar.plugins.base import PluginHost
from authsidecar.security.passwords import PasswordHasher
from authsidecar.services.accounts import AccountService, VerificationPolicy
from authsidecar.services.coherence import CacheCoherence
from authsidecar.services.extra_fields import ExtraFieldRules
from authsidecar.services.limits import Limits
from authsidecar.services.profile import ProfileService
from authsidecar.services.rules import CredentialRules
from authsidecar.services.sessions import SessionManager
from authsidecar.services.verification import AccountFlows
from authsidecar.storage.better_auth import BetterAuthDatabase
from authsidecar.storage.database import SqlDatabase
from authsidecar.storage.outbox import SqlOutbox
from authsidecar.transport.grpc.convert import Converter
from authsidecar.transport.grpc.envoy import SERVICE_NAME as ENVOY_SERVICE
from authsidecar.transport.grpc.envoy import EnvoyAuthorizationServicer
from authsidecar.transport.grpc.envoy import add_to_server as add_envoy_servicer
from authsidecar.transport.grpc.interceptors import CallGuard
from authsidecar.transport.grpc.server import GrpcServer
from authsidecar.transport.grpc.servicers import AuthServicer, SessionServicer
from authsidecar.transport.http import ForwardAuthServer

if TYPE_CHECKING:
    from authsidecar.observability.otel import Tracing

__all__ = ["Parts", "compose"]


@dataclass(frozen=True, slots=True)
class Parts:
    """Every long-lived component of a serving process, wired (frozen: nothing is swapped after compose)."""

    settings: Settings
    database: SqlDatabase
    cache: SessionCache
    hasher: PasswordHasher
    server: GrpcServer
    outbox: DeliveryQueue
    coherence: CacheCoherence
    http: httpx.AsyncClient
    hooks: HookSetup
    shared_redis: BetterAuthRedis | None = None
    better_auth_store: BetterAuthDatabase | None = None
    limits: Limits | None = None
    dispatcher: OutboxDispatcher | None = None
    metrics: MetricsServer | None = None
    forward_auth: ForwardAuthServer | None = None
    tracing: Tracing | None = None
    # The outbox figures the metrics report, refreshed by App while it serves (empty: not read yet, or unreadable).
    outbox_figures: dict[str, float] = field(default_factory=dict)


def compose(settings: Settings) -> Parts:
    """Build and wire every part; opens no connection yet."""
    policy = build_session_policy(settings)
    tracing = build_tracing()
    tracer = tracing.tracer if tracing is not None else None
    database = build_database(settings)
    hasher = build_hasher(settings, tracer)
    http = http_client()  # every outgoing HTTP call of this process: delivery webhooks and hooks
    outbox = DeliveryQueue(build_sender(settings, http), settings.delivery_queue_size, settings.delivery_attempts)
    registry = database.schema.registry
    hooks = build_hooks(settings, http)
    plugins = build_plugins(settings)

    core = build_core(settings, database, hooks, policy, tracer)
    store, cache, coherence, sessions, ids = core.store, core.cache, core.coherence, core.sessions, core.ids
    shared, better_auth_store = core.shared, core.better_auth_store
    rules = CredentialRules(settings.password_min_length, settings.password_max_length)
    limits, guard, mail = build_limits(settings)
    flows = AccountFlows(
        store,
        hasher,
        sessions,
        rules,
        outbox,
        build_flow_settings(settings),
        links=core.links,  # the profile's (build_core)
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
    check_metrics_listen(settings)
    rpc_metrics = RpcMetrics() if settings.metrics_listen else None  # per-RPC statistics, when metrics are on
    # Every service's calls, plugins' and Envoy's too; the call's context is kept when hooks may read it (the
    # store is hooked when hooks are configured or plugins may add some: assembly.build_core).
    call_guard = CallGuard(
        build_callers(settings),
        rpc_metrics,
        track_calls=bool(hooks.runner) or bool(plugins),
    )
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
        accounts,
        profile,
        convert,
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
        extra.append((ENVOY_SERVICE, add_envoy_servicer, EnvoyAuthorizationServicer(gateway)))
    try:
        server = GrpcServer(
            auth_servicer,
            session_servicer,
            settings.listen,
            reuse_port=settings.reuse_port,
            tls=build_tls(settings),
            socket_mode=int(settings.socket_mode, 8),
            extra=extra,
            tracer=tracer,
            guard=call_guard,
        )
    except ValueError as exc:  # a plugin's service the guard cannot serve (streaming, or an RPC name already taken)
        raise ConfigError(f"invalid configuration: plugins: {exc}") from None
    check_allow_lists(settings, server.rpc_names)
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
    figures: dict[str, float] = {}
    metrics = None
    if settings.metrics_listen and rpc_metrics is not None:
        gauges = _gauges(sessions, hasher, outbox, cache, figures if dispatcher is not None else None)
        metrics = MetricsServer(settings.metrics_listen, gauges, rpc_metrics, gateway.checks)
    return Parts(
        settings,
        database,
        cache,
        hasher,
        server,
        outbox,
        coherence,
        http,
        hooks,
        shared_redis=shared,
        better_auth_store=better_auth_store,
        limits=limits,
        dispatcher=dispatcher,
        metrics=metrics,
        forward_auth=build_forward_auth(settings, gateway),
        tracing=tracing,
        outbox_figures=figures,
    )


def _gauges(
    sessions: SessionManager,
    hasher: PasswordHasher,
    outbox: DeliveryQueue,
    cache: SessionCache,
    figures: dict[str, float] | None,
) -> Gauges:
    """What the metrics endpoint reports besides RPCs, read at scrape time (``figures``: the outbox's, when after
    events are delivered)."""
    gauges = Gauges()
    gauges.counters = {
        "authsidecar_session_cache_hits": (
            "validations answered from the secondary storage",
            lambda: sessions.hits,
        ),
        "authsidecar_session_cache_misses": ("validations that read the database", lambda: sessions.misses),
        "authsidecar_password_hash_refused": (
            "sign-ins and hashes refused at capacity",
            lambda: hasher.refused,
        ),
        "authsidecar_delivery_dropped": ("messages dropped by a full delivery queue", lambda: outbox.dropped),
    }
    gauges.gauges = {
        "authsidecar_password_hash_pending": ("hashes admitted and not finished", lambda: hasher.pending),
        "authsidecar_delivery_queue": ("messages waiting to be sent", lambda: outbox.size),
    }
    if isinstance(cache, TieredSessionCache):
        tiered = cache
        gauges.counters["authsidecar_session_cache_local_hits"] = (
            "lookups that found a copy in the in-process tier in front of Redis (served if the coherence rules trust it)",
            lambda: tiered.local_hits,
        )
    shared = cache.remote if isinstance(cache, TieredSessionCache) else cache
    if isinstance(shared, ResilientSessionCache):
        resilient = shared
        gauges.counters["authsidecar_session_cache_fallbacks"] = (
            "lookups that went to the database because Redis failed or was bypassed",
            lambda: resilient.fallbacks,
        )
    if figures is not None:
        gauges.gauges |= {
            "authsidecar_outbox_backlog": ("after events waiting for delivery", lambda: figures["live"]),
            "authsidecar_outbox_dead": ("after events given up", lambda: figures["dead"]),
            "authsidecar_outbox_lag_seconds": ("age of the oldest waiting after event", lambda: figures["lag"]),
        }
    return gauges
