"""The serving process: takes the parts the composition root built (root.py) and owns start-up and shutdown order."""

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
from typing import IO

import sqlalchemy as sa

from authsidecar.assembly import database_target, describe
from authsidecar.config import Settings
from authsidecar.errors import AuthSidecarError, BackendUnavailable
from authsidecar.root import Parts, compose
from authsidecar.services.cleanup import remove_expired
from authsidecar.services.clock import MAX_ROUND_TRIP, utc_now
from authsidecar.storage.errors import translate_error
from authsidecar.storage.explain import explain_database_error
from authsidecar.storage.migrate import schema_status
from authsidecar.storage.outbox import SqlOutbox

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
    """A serving process: the composed parts, started and stopped in order."""

    parts: Parts
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings) -> App:
        """Wire everything (root.compose); opens no connection yet."""
        return cls(compose(settings))

    async def _watch_outbox(self) -> None:
        """Keep the outbox figures of the metrics fresh (a query every few seconds, not one per scrape)."""
        outbox = SqlOutbox(self.parts.database)
        while True:
            try:
                live, dead = await outbox.backlog()
                oldest = await outbox.oldest()
                lag = (utc_now() - oldest).total_seconds() if oldest is not None else 0.0
                self.parts.outbox_figures.update(live=live, dead=dead, lag=max(lag, 0.0))
            except AuthSidecarError:
                self.parts.outbox_figures.clear()  # NaN while the database cannot be read
            await asyncio.sleep(5)

    async def check_database(self) -> None:
        """Raise SchemaNotReady when the database is reachable but not migrated (or refuses this configuration);
        an unreachable one only logs a warning (health then says NOT_SERVING until it comes up)."""
        try:
            problem = await schema_status(self.parts.database.engine, self.parts.database.schema)
            if problem is None:
                await self.parts.database.ensure_invalidation_counter()
                problem = self._unsupported_ids() or await self._unguarded_second_factor()
        except Exception as exc:  # unreachable: serve anyway, NOT_SERVING until it comes up
            explained = explain_database_error(exc, database_target(self.parts.settings))
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
        if self.parts.settings.delivery == "log":
            log.warning(
                "AUTHSIDECAR_DELIVERY=log: verification and reset links, with live tokens, are written to this log;"
                " use smtp or webhook in production"
            )
        log.info("%s", describe(self.parts.settings))
        await self.parts.server.set_serving(False)
        await self.parts.server.start()
        if self.parts.forward_auth is not None:
            await self.parts.forward_auth.start()
        serving = await self._database_reachable()
        if serving and self.parts.settings.cache_enabled:
            # Snapshots are stamped in the database's time from the first call on (the follower reads it again).
            with contextlib.suppress(Exception):
                async with asyncio.timeout(MAX_ROUND_TRIP):  # a slower reading is not used anyway
                    await self.parts.coherence.clock.measure(self.parts.database.database_time)
        await self.parts.server.set_serving(serving)
        if not serving:
            log.warning("database unreachable: health is NOT_SERVING")
        self.parts.outbox.start()
        self._tasks.append(asyncio.create_task(self._watch_health(serving), name="health"))
        if self.parts.settings.cache_enabled:
            self._tasks.append(
                asyncio.create_task(self.parts.coherence.follow(self.parts.database), name="invalidations")
            )
        if self.parts.settings.cleanup_interval:
            self._tasks.append(asyncio.create_task(self._cleanup_periodically(), name="cleanup"))
        if self.parts.dispatcher is not None:
            self._tasks.append(asyncio.create_task(self.parts.dispatcher.run(), name="outbox"))
        if self.parts.metrics is not None:
            self.parts.metrics.start()
            if self.parts.dispatcher is not None:
                self._tasks.append(asyncio.create_task(self._watch_outbox(), name="outbox-metrics"))

    async def _unguarded_second_factor(self) -> str | None:
        """In the Better Auth profile, an app whose users may be guarded by one of its plugins (its user table has
        that plugin's column) needs our plugin of that name too, or a password alone would sign them in."""
        if not self.parts.settings.better_auth:
            return None
        enabled = {name for name, conf in self.parts.settings.plugins.items() if conf.enabled}
        missing = {column: name for column, name in _GUARDING_COLUMNS.items() if name not in enabled}
        if not missing:
            return None
        table = self.parts.database.schema.user.name
        async with self.parts.database.engine.connect() as conn:
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
        dialect = self.parts.database.engine.dialect
        if self.parts.database.schema.registry.generate_id == "false" and not dialect.insert_returning:
            return 'schema.generate_id = false needs INSERT ... RETURNING, which this database lacks: use "uuid"'
        return None

    async def _cleanup_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.parts.settings.cleanup_interval)
            try:
                removed = await remove_expired(
                    self.parts.database, self.parts.settings.cleanup_batch_size, outbox=SqlOutbox(self.parts.database)
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
            await self.parts.database.ping(within=self.parts.settings.health_interval)
        except BackendUnavailable:
            return False
        return True

    async def _watch_health(self, serving: bool) -> None:
        """Follow the database's reachability; health changes (and a log line) only on transitions."""
        while True:
            await asyncio.sleep(self.parts.settings.health_interval)
            now_serving = await self._database_reachable()
            if now_serving != serving:
                log.warning(
                    "database %s: health is %s",
                    *(("reachable again", "SERVING") if now_serving else ("unreachable", "NOT_SERVING")),
                )
                await self.parts.server.set_serving(now_serving)
                serving = now_serving

    async def drain(self) -> None:
        """Tell health checkers to go away (NOT_SERVING) but keep serving for ``drain_delay`` seconds, so load
        balancers stop sending calls before the listener closes."""
        await self._stop_tasks(("health",))  # it must not turn health back to SERVING
        await self.parts.server.set_serving(False)
        if self.parts.settings.drain_delay:
            log.info("draining: NOT_SERVING, still answering for %.1fs", self.parts.settings.drain_delay)
            await asyncio.sleep(self.parts.settings.drain_delay)

    async def stop(self) -> None:
        """Stop accepting, drain in-flight calls within the grace period, then close pools."""
        log.info("shutting down (grace %.1fs)", self.parts.settings.shutdown_grace)
        stopping = [self.parts.server.stop(self.parts.settings.shutdown_grace)]
        if self.parts.forward_auth is not None:
            stopping.append(self.parts.forward_auth.stop(self.parts.settings.shutdown_grace))
        await asyncio.gather(*stopping)
        self.parts.coherence.stop()
        await self._stop_tasks(("invalidations",), cancel=False)
        if self.parts.dispatcher is not None:
            self.parts.dispatcher.stop()
            await self._stop_tasks(("outbox",), cancel=False)
        await self._stop_tasks()
        await self.parts.outbox.stop(self.parts.settings.shutdown_grace)
        if self.parts.metrics is not None:
            self.parts.metrics.stop()
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
        await self.parts.cache.close()
        if self.parts.better_auth_store is not None:
            await self.parts.better_auth_store.flush()
        if self.parts.shared_redis is not None:
            await self.parts.shared_redis.close()
        if self.parts.limits is not None:
            await self.parts.limits.close()
        if self.parts.hooks is not None and self.parts.hooks.stream is not None:
            await self.parts.hooks.stream.close()
        if self.parts.http is not None:
            await self.parts.http.aclose()
        await self.parts.database.close()
        self.parts.hasher.close()
        if self.parts.tracing is not None:  # last: the spans of everything above are sent
            await self.parts.tracing.shutdown()


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
        await app.parts.server.stop(0)  # it may have started before a later step failed (a metrics port in use)
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
