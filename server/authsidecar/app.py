"""Composition root: wires the parts (assembly.py) into an App; owns start-up and shutdown order."""

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
from typing import IO, TYPE_CHECKING

import httpx
import sqlalchemy as sa

from authsidecar.cache import ResilientSessionCache
from authsidecar.cache.better_auth import BetterAuthRedis
from authsidecar.cache.tiered import TieredSessionCache
from authsidecar.config import ConfigError, Settings
from authsidecar.delivery import DeliveryQueue
from authsidecar.delivery.senders import http_client
from authsidecar.domain.ports import SessionCache
from authsidecar.errors import AuthSidecarError, BackendUnavailable
from authsidecar.hooks.dispatcher import OutboxDispatcher
from authsidecar.hooks.setup import HookSetup, build_hooks
from authsidecar.observability.metrics import Gauges, MetricsServer
from authsidecar.plugins.base import PluginHost
from authsidecar.security.passwords import PasswordHasher
from authsidecar.services.accounts import AccountService, VerificationPolicy
from authsidecar.services.cleanup import remove_expired
from authsidecar.services.clock import MAX_ROUND_TRIP, utc_now
from authsidecar.services.coherence import CacheCoherence
from authsidecar.services.extra_fields import ExtraFieldRules
from authsidecar.services.limits import Limits
from authsidecar.services.profile import ProfileService
from authsidecar.services.rules import CredentialRules
from authsidecar.services.sessions import SessionManager
from authsidecar.services.verification import AccountFlows
from authsidecar.storage.better_auth import BetterAuthDatabase
from authsidecar.storage.database import SqlDatabase
from authsidecar.storage.errors import translate_error
from authsidecar.storage.explain import explain_database_error
from authsidecar.storage.migrate import schema_status
from authsidecar.storage.outbox import SqlOutbox
from authsidecar.transport.grpc.convert import Converter
from authsidecar.transport.grpc.envoy import SERVICE_NAME as ENVOY_SERVICE
from authsidecar.transport.grpc.envoy import EnvoyAuthorizationServicer
from authsidecar.transport.grpc.envoy import add_to_server as add_envoy_servicer
from authsidecar.transport.grpc.server import GrpcServer
from authsidecar.transport.grpc.servicers import AuthServicer, SessionServicer
from authsidecar.transport.http import ForwardAuthServer

if TYPE_CHECKING:
    from authsidecar.observability.otel import Tracing

from authsidecar.assembly import (
    build_callers,
    build_core,
    build_database,
    build_flow_settings,
    build_forward_auth,
    build_gateway,
    build_hasher,
    build_limits,
    build_sender,
    build_session_policy,
    build_tls,
    build_tracing,
    database_target,
    describe,
)

__all__ = ["AlreadyServing", "App", "SchemaNotReady", "lock_sqlite", "run"]

log = logging.getLogger("authsidecar")

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
                async with asyncio.timeout(MAX_ROUND_TRIP):  # a slower reading is not used anyway
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
