"""``serve --workers N``: N serving processes on one port (SO_REUSEPORT), kept alive and stopped together.

The supervisor checks the configuration once (``check_workers``, then ``preflight``: the whole application is
wired and the database schema checked, so a bad setting gives its one-line error once, not N times), then starts
the workers (worker.py) and waits for signals and exits:

- a worker that exits when nobody asked it to is restarted: at once after a stable run (``STABLE`` seconds),
  else after a back-off doubling from ``FIRST_DELAY`` up to ``MAX_DELAY`` for each quick death in a row; each
  restart is logged with the exit code or signal;
- a worker that exits before it ever listened, when it has never listened, stops everything: it cannot start
  (a taken port, a metrics port in use), and retrying would only repeat the error;
- SIGTERM: forwarded to every worker, which drains as a single server does; a second SIGTERM or SIGINT cuts the
  drains short (SIGINT to the workers); SIGINT first: SIGINT to every worker (stop at once). Workers still running
  ``drain_delay + 2 * shutdown_grace + SHUTDOWN_MARGIN`` seconds later are killed. Exit code 0 when every worker
  exited 0, else 1. Nothing is restarted once stopping;
- the supervisor killed (even by SIGKILL): every worker gets SIGTERM from the kernel (worker.py) and drains.

Workers run in their own session, so a terminal's Ctrl-C reaches the supervisor only, which forwards it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from types import FrameType

from authsidecar.config import ConfigError, Settings
from authsidecar.worker import WorkerRole, metrics_address

__all__ = ["FIRST_DELAY", "MAX_DELAY", "STABLE", "Supervisor", "check_workers", "preflight", "restart_delay"]

log = logging.getLogger("authsidecar.supervisor")

STABLE = 10.0  # seconds of life after which a death is not part of a crash loop
FIRST_DELAY = 0.5
MAX_DELAY = 30.0
SHUTDOWN_MARGIN = 10.0  # closing pools, background tasks and the delivery queue after the server stopped


def restart_delay(quick_deaths: int) -> float:
    """Seconds before a restart after ``quick_deaths`` deaths in a row within STABLE seconds of their start (0:
    the worker had run stably, restart at once)."""
    if quick_deaths <= 0:
        return 0.0
    return min(MAX_DELAY, FIRST_DELAY * 2.0 ** (quick_deaths - 1))


def check_workers(settings: Settings) -> None:
    """What several workers need; ConfigError (one line naming the setting) otherwise."""
    from authsidecar.assembly import database_target

    count = settings.workers
    name = "invalid configuration: AUTHSIDECAR_WORKERS"
    if settings.listen.startswith("unix://"):
        raise ConfigError(
            f"{name}: {count} workers cannot share a unix socket ({settings.listen}); listen on host:port, or run one"
            " worker per socket"
        )
    port = int(settings.listen.rpartition(":")[2])
    if port == 0:
        raise ConfigError(f"{name}: {count} workers need a fixed port in AUTHSIDECAR_LISTEN (not 0)")
    if settings.forward_auth_listen and settings.forward_auth_listen.endswith(":0"):
        raise ConfigError(f"{name}: {count} workers need a fixed port in AUTHSIDECAR_FORWARD_AUTH_LISTEN (not 0)")
    if database_target(settings).is_sqlite:
        raise ConfigError(
            f"{name}: the embedded SQLite database serves one process; use Postgres or MySQL (DATABASE_URL) to run"
            f" {count} workers"
        )
    if settings.rate_limit_enabled and settings.redis_url is None:
        raise ConfigError(
            f"{name}: without REDIS_URL each of the {count} workers would count rate limits and failed sign-ins on"
            f" its own ({count} times the attempts an attacker gets); set REDIS_URL, or"
            " AUTHSIDECAR_RATE_LIMIT_ENABLED=false when something in front of authsidecar limits calls"
        )
    if settings.metrics_listen:
        first = int(settings.metrics_listen.rpartition(":")[2])
        last = int(metrics_address(settings.metrics_listen, count - 1).rpartition(":")[2])
        if last > 65535:
            raise ConfigError(
                f"invalid configuration: AUTHSIDECAR_METRICS_LISTEN: worker i listens on port {first} + i, and"
                f" {last} is not a port"
            )
        if first and first <= port <= last:
            raise ConfigError(
                f"invalid configuration: AUTHSIDECAR_METRICS_LISTEN: worker i listens on port {first} + i, which"
                f" takes {port}, the gRPC port"
            )
        if settings.forward_auth_listen:
            forward = int(settings.forward_auth_listen.rpartition(":")[2])
            if first and first <= forward <= last:
                raise ConfigError(
                    f"invalid configuration: AUTHSIDECAR_METRICS_LISTEN: worker i listens on port {first} + i, which"
                    f" takes {forward}, the forward-auth port"
                )
    for setting, address in _listeners(settings):
        _check_free(setting, address)


def _listeners(settings: Settings) -> list[tuple[str, str]]:
    """Every TCP address the workers will listen on, with the setting that names it."""
    found = [("AUTHSIDECAR_LISTEN", settings.listen)]
    if settings.forward_auth_listen:
        found.append(("AUTHSIDECAR_FORWARD_AUTH_LISTEN", settings.forward_auth_listen))
    if settings.metrics_listen:
        found += [
            ("AUTHSIDECAR_METRICS_LISTEN", metrics_address(settings.metrics_listen, i)) for i in range(settings.workers)
        ]
    return found


def _check_free(setting: str, address: str) -> None:
    """ConfigError when something already listens there: the workers share their ports with each other
    (SO_REUSEPORT), and would silently share them with another server that set it too (an earlier
    ``serve --workers`` still running, on another database), splitting the answers between the two."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - a probe, closed at once
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are no obstacle
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            raise ConfigError(
                f"invalid configuration: {setting}: {address} is already in use ({exc.strerror}); is another"
                " authsidecar (an earlier serve --workers?) still running there? Workers share a port only with"
                " each other"
            ) from None


def preflight(settings: Settings) -> None:
    """Wire the application once and check the database schema, as every worker will; raises ConfigError,
    SchemaNotReady (and OSError), like ``serve`` itself."""
    from authsidecar.app import App

    async def check() -> None:
        app = App.build(settings)
        try:
            await app.check_database()
        finally:
            await app.close_resources()

    asyncio.run(check())


@dataclass
class _Slot:
    """Worker ``index``: its current process (None between a death and its restart)."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    ready_fd: int | None = None  # read end of the readiness pipe, until it is read or closed
    started: float = 0.0
    ready: bool = False
    ever_ready: bool = False
    quick_deaths: int = 0
    restart_at: float | None = None


class Supervisor:
    """Starts ``settings.workers`` workers and keeps them running until told to stop (``run``)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._slots = [_Slot(i) for i in range(settings.workers)]
        self._signals: list[int] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT, or until a worker cannot start; the exit code of ``serve``."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)}
        old_wakeup = signal.set_wakeup_fd(self._wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # only to wake the loop (set_wakeup_fd)
        try:
            log.info("starting %d workers on %s", len(self._slots), self._settings.listen)
            for slot in self._slots:
                self._start(slot)
            failed = self._supervise()
            return self._shutdown(failed)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for slot in self._slots:
                self._close_ready(slot)
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _start(self, slot: _Slot) -> None:
        read_fd, write_fd = os.pipe()
        role = WorkerRole(slot.index, len(self._slots), write_fd, os.getpid())
        try:
            slot.process = subprocess.Popen(role.argv(), pass_fds=(write_fd,), start_new_session=True)  # noqa: S603
        except OSError:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        slot.ready_fd, slot.ready, slot.started, slot.restart_at = read_fd, False, time.monotonic(), None

    def _close_ready(self, slot: _Slot) -> None:
        if slot.ready_fd is not None:
            os.close(slot.ready_fd)
            slot.ready_fd = None

    def _supervise(self) -> bool:
        """Until a stop signal (False) or a worker that cannot start (True)."""
        while not self._signals:
            timeout = self._next_restart_in()
            readable = self._wait([self._wake_r, *(s.ready_fd for s in self._slots if s.ready_fd is not None)], timeout)
            self._read_ready(readable)
            for slot in self._slots:
                if slot.process is not None and slot.process.poll() is not None and self._died(slot):
                    return True
            if self._signals:
                break
            now = time.monotonic()
            for slot in self._slots:
                if slot.process is None and slot.restart_at is not None and slot.restart_at <= now:
                    self._start(slot)
        return False

    def _wait(self, fds: list[int], timeout: float | None) -> list[int]:
        readable, _, _ = select.select(fds, [], [], timeout)
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 512):
                    pass
        return [fd for fd in readable if fd != self._wake_r]

    def _next_restart_in(self) -> float | None:
        due = [s.restart_at for s in self._slots if s.process is None and s.restart_at is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _read_ready(self, readable: list[int]) -> None:
        for slot in self._slots:
            if slot.ready_fd is None or slot.ready_fd not in readable:
                continue
            if os.read(slot.ready_fd, 16) and slot.process is not None:
                slot.ready = slot.ever_ready = True
                log.info("worker %d (pid %d) is listening", slot.index, slot.process.pid)
            self._close_ready(slot)  # a message or EOF: the pipe has said all it will

    def _died(self, slot: _Slot) -> bool:
        """A worker exited unasked: schedule its restart; True when it never listened (it cannot start)."""
        assert slot.process is not None
        code, pid = slot.process.returncode, slot.process.pid
        lived = time.monotonic() - slot.started
        slot.process = None
        self._close_ready(slot)
        if not slot.ever_ready and code > 0:  # it stopped itself with an error before listening
            log.error("worker %d (pid %d) could not start (%s); stopping every worker", slot.index, pid, _exit(code))
            return True
        slot.quick_deaths = 0 if lived >= STABLE else slot.quick_deaths + 1
        delay = restart_delay(slot.quick_deaths)
        slot.restart_at = time.monotonic() + delay
        log.warning(
            "worker %d (pid %d) %s after %.1f s; restarting it in %.1f s", slot.index, pid, _exit(code), lived, delay
        )
        return False

    def _running(self) -> list[_Slot]:
        return [s for s in self._slots if s.process is not None and s.process.poll() is None]

    def _signal_all(self, signum: int) -> None:
        for slot in self._running():
            assert slot.process is not None
            with contextlib.suppress(ProcessLookupError):
                slot.process.send_signal(signum)

    def _shutdown(self, failed: bool) -> int:
        """Stop every worker (drained on SIGTERM) within the deadline; the exit code."""
        first = self._signals.pop(0) if self._signals else signal.SIGTERM
        hurried = failed or first == signal.SIGINT
        if not failed:
            log.info("%s: stopping %d workers", signal.Signals(first).name, len(self._running()))
        self._signal_all(signal.SIGINT if hurried else signal.SIGTERM)
        settings = self._settings
        deadline = time.monotonic() + settings.drain_delay + 2 * settings.shutdown_grace + SHUTDOWN_MARGIN
        while self._running() and time.monotonic() < deadline:
            if self._signals and not hurried:  # a second signal: cut the drains short
                hurried = True
                log.info("second signal: stopping the workers without the drain delay")
                self._signal_all(signal.SIGINT)
            self._signals.clear()
            self._wait([self._wake_r], min(0.5, max(0.0, deadline - time.monotonic())))
        for slot in self._running():
            assert slot.process is not None
            log.error(
                "worker %d (pid %d) still running after the drain and grace: killing it", slot.index, slot.process.pid
            )
            slot.process.kill()
        clean = True
        for slot in self._slots:
            if slot.process is None:
                continue
            code = slot.process.wait()
            # A worker still starting has nothing to drain: the signal that stops it before its handlers exist
            # (during interpreter start-up) is a clean stop.
            if code != 0 and not (not slot.ready and code in (-signal.SIGTERM, -signal.SIGINT)):
                clean = False
                log.error("worker %d (pid %d) %s while stopping", slot.index, slot.process.pid, _exit(code))
        if failed or not clean:
            return 1
        log.info("every worker stopped")
        return 0


def _exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"
