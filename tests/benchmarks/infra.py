"""Set-up and tear-down for the benchmark: a throw-away Postgres database, a Redis key prefix, server processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def database_url(admin_url: str, name: str) -> str:
    """The admin URL pointed at another database."""
    parts = urlsplit(admin_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def create_database(name: str) -> str:
    """CREATE DATABASE ``name`` and migrate it with ``authsidecar migrate``; returns its URL."""

    async def create() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    url = database_url(POSTGRES_ADMIN_URL, name)
    script = Path(sys.executable).with_name("authsidecar")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "authsidecar"]
    subprocess.run([*argv, "migrate"], env={**clean_env(), "DATABASE_URL": url}, cwd=ROOT, check=True, timeout=120)
    return url


def drop_database(name: str) -> None:
    """DROP DATABASE ... WITH (FORCE): also ends connections left by a killed server."""

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def purge_redis(prefix: str) -> int:
    """Delete every key under ``prefix``; returns how many."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted


def redis_exists(keys: list[str]) -> int:
    """How many of ``keys`` exist."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        return int(client.exists(*keys))
    finally:
        client.close()


def clean_env() -> dict[str, str]:
    """This process's environment without any authsidecar setting."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("AUTHSIDECAR_") and k not in ("DATABASE_URL", "REDIS_URL")
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stat_cpu_seconds(stat: Path) -> float:
    """User + system CPU time in a /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat file (utime and stime: fields 11
    and 12 after the command name's closing parenthesis)."""
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> tuple[float, float]:
    """CPU time the whole machine has spent busy (user, nice, system, irq, softirq) and stolen by the hypervisor,
    in seconds, from /proc/stat: the difference over a phase is what everything running then cost together."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


@dataclass
class ServerProcess:
    """A server subprocess listening on ``address``, logging to ``log_path``."""

    name: str
    address: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls, name: str, argv: list[str], env: dict[str, str], log_dir: Path, address: str | None = None
    ) -> ServerProcess:
        """Start on ``address`` or a free port (passed as AUTHSIDECAR_LISTEN and substituted for ``{listen}`` in
        argv)."""
        address = address or f"127.0.0.1:{free_port()}"
        log_path = log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [a.replace("{listen}", address) for a in argv],
                env={**clean_env(), **env, "AUTHSIDECAR_LISTEN": address},
                cwd=log_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return cls(name, address, process, log_path)

    def log(self) -> str:
        """Everything the process has written."""
        return self.log_path.read_text(errors="replace")

    def wait_serving(self, deadline: float = 30.0) -> None:
        """Block until grpc.health.v1 reports SERVING; raise with the log tail otherwise."""
        end = time.monotonic() + deadline
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < end:
                if self.process.poll() is not None:
                    break
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} never became SERVING (exit {self.process.poll()}):\n{self.log()[-3000:]}")

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far (Linux /proc)."""
        return stat_cpu_seconds(Path(f"/proc/{self.process.pid}/stat"))

    def thread_cpu_seconds(self) -> dict[int, tuple[str, float]]:
        """Each live thread's name (/proc/<pid>/task/<tid>/comm) and user + system CPU time so far, by thread id.

        A thread that has ended is not listed: what it used since an earlier sample is lost.
        """
        threads: dict[int, tuple[str, float]] = {}
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            try:
                comm = (task / "comm").read_text().rstrip("\n")
                threads[int(task.name)] = (comm, stat_cpu_seconds(task / "stat"))
            except (FileNotFoundError, ProcessLookupError):  # ended since the directory was listed
                continue
        return threads

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait, SIGKILL as a last resort; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return int(self.process.returncode)

    def log_problems(self) -> list[str]:
        """Log lines at WARNING or above, and tracebacks."""
        keep = (" WARNING ", " ERROR ", " CRITICAL ", "Traceback")
        return [line for line in self.log().splitlines() if any(k in line for k in keep)]
