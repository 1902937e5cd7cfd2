"""One serving process of ``serve --workers N``: what it changes in the settings, how it tells the supervisor it is
listening, and how it follows its supervisor out when that one dies.

A worker is ``python -m authsidecar serve`` started by the supervisor with hidden options (``WorkerRole.argv``);
it reads the same environment and TOML file as the supervisor, which checked them before starting it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

from authsidecar.config import Settings

__all__ = ["WorkerRole", "metrics_address"]

log = logging.getLogger("authsidecar.worker")

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def metrics_address(listen: str, index: int) -> str:
    """Worker ``index``'s metrics address: the configured port + ``index`` (port 0 stays 0, any free port)."""
    host, _, port = listen.rpartition(":")
    return f"{host}:{int(port) + index if int(port) else 0}"


@dataclass(frozen=True)
class WorkerRole:
    """Worker ``index`` of ``count``, started by the supervisor ``supervisor_pid``; ``ready_fd`` is the write end
    of a pipe on which it says when it listens."""

    index: int
    count: int
    ready_fd: int
    supervisor_pid: int

    def argv(self) -> list[str]:
        """The command line that starts this worker (the hidden options of ``serve``)."""
        return [
            sys.executable,
            "-m",
            "authsidecar",
            "serve",
            f"--worker-index={self.index}",
            f"--worker-count={self.count}",
            f"--ready-fd={self.ready_fd}",
            f"--supervisor-pid={self.supervisor_pid}",
        ]

    def settings(self, settings: Settings) -> Settings:
        """The settings of this worker: the port shared (SO_REUSEPORT), metrics on the configured port + index,
        periodic cleanup in worker 0 only (one is enough; the others would repeat its deletes), and the default
        hashing threads split between the workers (so that N workers hash with as many threads, and as much
        memory, as one process would)."""
        update: dict[str, object] = {"reuse_port": True, "workers": 1}
        if self.index > 0:
            update["cleanup_interval"] = 0
        if settings.metrics_listen:
            update["metrics_listen"] = metrics_address(settings.metrics_listen, self.index)
        if "hash_workers" not in settings.model_fields_set:
            update["hash_workers"] = max(1, math.ceil(settings.hash_workers / self.count))
        return settings.model_copy(update=update)

    def follow_supervisor(self) -> None:
        """SIGTERM this process (a drain, as from the supervisor) when the supervisor dies, even by SIGKILL: the
        kernel's parent-death signal on Linux, else a thread that watches the parent process id. Exits at once
        when the supervisor is already gone."""
        if not _parent_death_signal(signal.SIGTERM):
            threading.Thread(target=self._watch_parent, name="supervisor-watch", daemon=True).start()
        if os.getppid() != self.supervisor_pid:  # it died before the signal was armed
            raise SystemExit(0)

    def _watch_parent(self) -> None:
        while os.getppid() == self.supervisor_pid:
            time.sleep(1.0)
        log.warning("the supervisor is gone: stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    def ready(self) -> None:
        """Tell the supervisor this worker listens (once; the pipe is closed after)."""
        with contextlib.suppress(OSError):  # the supervisor is gone: the parent-death signal follows
            os.write(self.ready_fd, b"1")
        with contextlib.suppress(OSError):
            os.close(self.ready_fd)


def _parent_death_signal(signum: int) -> bool:
    """prctl(PR_SET_PDEATHSIG, signum) on Linux; False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
