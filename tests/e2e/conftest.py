"""Run the real server (``python -m authsidecar serve``) on a free port and talk to it through the generated stubs."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsidecar_client.v1 import auth_service_pb2_grpc, session_service_pb2, session_service_pb2_grpc
from tests.conftest import REDIS_URL, TEST_SECRET

T = TypeVar("T")

# Every test server: cheap hashing, a secret (needed with REDIS_URL), no drain delay (tests that are about
# draining set their own) and no rate limits (tests that are about limits turn them on).
FAST_ARGON2_ENV = {
    "AUTHSIDECAR_RATE_LIMIT_ENABLED": "false",
    "AUTHSIDECAR_ARGON2_TIME_COST": "1",
    "AUTHSIDECAR_ARGON2_MEMORY_KIB": "8192",
    "AUTHSIDECAR_HASH_MAX_PENDING": "256",
    "AUTHSIDECAR_SECRET": TEST_SECRET,
    "AUTHSIDECAR_DRAIN_DELAY": "0",
}


# Ports for the servers the tests start come from a range of this test process's own: below the kernel's
# ephemeral range (32768 and up here), so no outgoing connection is given one, and apart from the other xdist
# workers' ranges, so two processes of `make test` never pick the same port between its check and its use (a
# port that the kernel handed out at random to one worker could be handed to another before the first bound it).
# Ports are handed out 4 apart: a server given port P may take P + 1..3 too (serve --workers' metrics ports).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... under make test
_SLOT = int(_WORKER[2:]) + 1 if _WORKER.startswith("gw") and _WORKER[2:].isdigit() else 0
_PORTS_PER_PROCESS = 2000
_STRIDE = 4
_FIRST_PORT = 20_000 + _SLOT * _PORTS_PER_PROCESS
_NEXT_PORT = itertools.count()
assert _FIRST_PORT + _PORTS_PER_PROCESS <= 32_768, "at most 5 test processes (TEST_WORKERS <= 5)"


def free_port() -> int:
    """A TCP port that is free now and that no other test process hands out; each once per process until its
    range wraps (then ports still in use are skipped)."""
    for _ in range(_PORTS_PER_PROCESS // _STRIDE):
        port = _FIRST_PORT + (next(_NEXT_PORT) * _STRIDE) % _PORTS_PER_PROCESS
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_FIRST_PORT}-{_FIRST_PORT + _PORTS_PER_PROCESS - 1}")


def _timed_out(within: float, what: str, details: Callable[[], str] | None) -> str:
    return f"timed out after {within} s waiting for {what}" + (f":\n{details()}" if details is not None else "")


async def wait_for(
    predicate: Callable[[], T | Awaitable[T]],
    within: float = 20.0,
    what: str = "the condition",
    details: Callable[[], str] | None = None,
    interval: float = 0.05,
) -> T:
    """Poll ``predicate`` (plain or async) until it returns something true, and return that; fail the test after
    ``within`` seconds (a guard, not a measurement), with ``details()`` (a server log, say) in the message."""
    end = time.monotonic() + within
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= end:
            pytest.fail(_timed_out(within, what, details))
        await asyncio.sleep(interval)


def wait_for_sync(
    predicate: Callable[[], T],
    within: float = 20.0,
    what: str = "the condition",
    details: Callable[[], str] | None = None,
    interval: float = 0.05,
) -> T:
    """``wait_for`` for code outside an event loop (threads, synchronous tests)."""
    end = time.monotonic() + within
    while not (result := predicate()):
        if time.monotonic() >= end:
            pytest.fail(_timed_out(within, what, details))
        time.sleep(interval)
    return result


def clean_env() -> dict[str, str]:
    """The test process's environment without any authsidecar setting."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("AUTHSIDECAR_") and k not in ("DATABASE_URL", "REDIS_URL")
    }


@dataclass
class Server:
    """A running server process."""

    address: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        """Everything the server wrote to stderr/stdout so far."""
        return self.log_path.read_text(errors="replace")

    def health(self, timeout: float = 1.0) -> int | None:
        """The overall health status, or None when unreachable."""
        with grpc.insecure_channel(self.address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            except grpc.RpcError:
                return None
            return int(reply.status)

    def wait_for(self, status: int, deadline: float = 20.0) -> None:
        """Block until health reports ``status``; fail with the server log otherwise."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.log()}")
            if self.health() == status:
                return
            time.sleep(0.05)
        pytest.fail(f"server never reported health {status}:\n{self.log()}")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def start_server(tmp_path: Path, env: dict[str, str], listen: str | None = None) -> Server:
    """Start ``authsidecar serve`` with ``env`` (on top of a clean environment) and return at once."""
    listen = listen or f"127.0.0.1:{free_port()}"
    full_env = {**clean_env(), **FAST_ARGON2_ENV, "AUTHSIDECAR_LISTEN": listen, **env}
    log_path = tmp_path / f"server-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "authsidecar", "serve"],
            env=full_env,
            cwd=tmp_path,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return Server(listen, process, log_path, full_env)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary folder per test module."""
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module", params=["postgres+redis", "sqlite+memory"])
def server(request: pytest.FixtureRequest, module_tmp: Path, pg_url: str, redis_prefix: str) -> Iterator[Server]:
    """The real server on each backend, shared by a test module."""
    if request.param == "postgres+redis":
        env = {"DATABASE_URL": pg_url, "REDIS_URL": REDIS_URL, "AUTHSIDECAR_REDIS_KEY_PREFIX": redis_prefix}
    else:  # the embedded default: no DATABASE_URL, no REDIS_URL; `migrate` creates the SQLite file first
        folder = module_tmp / "embedded"
        folder.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-m", "authsidecar", "migrate"], cwd=folder, env=clean_env(), check=True)
        env = {"AUTHSIDECAR_SQLITE_PATH": str(folder / "authsidecar.db")}
    srv = start_server(module_tmp, env)
    srv.wait_for(health_pb2.HealthCheckResponse.SERVING)
    yield srv
    assert srv.stop() == 0, srv.log()


class RedisProcess:
    """A private redis-server on a free port, so the test can stop, pause, flush and restart it."""

    def __init__(self, tmp_path: Path) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is part of the test environment (see README)"
        self.binary = binary
        self.port = free_port()
        self.dir = tmp_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "local",
            ],
            cwd=self.dir,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(100):
            if self.cli("ping") == "PONG":
                return
            time.sleep(0.05)
        pytest.fail("private redis-server did not start")

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10, check=False
        )
        return out.stdout.strip()

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing answers (a hung server, a long GC, a network stall)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after pause()."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    redis = RedisProcess(tmp_path)
    redis.start()
    yield redis
    redis.stop()


@dataclass
class Stubs:
    """Generated async stubs over one channel."""

    channel: grpc.aio.Channel
    auth: auth_service_pb2_grpc.AuthServiceStub
    sessions: session_service_pb2_grpc.SessionServiceStub


def stubs_for(address: str) -> Stubs:
    """Open a channel to ``address``."""
    channel = grpc.aio.insecure_channel(address)
    return Stubs(
        channel,
        auth_service_pb2_grpc.AuthServiceStub(channel),
        session_service_pb2_grpc.SessionServiceStub(channel),
    )


@dataclass(frozen=True)
class ErrorDetails:
    """What a client sees of a failed call."""

    code: grpc.StatusCode
    message: str
    reason: str
    domain: str
    metadata: dict[str, str]
    field_violations: list[tuple[str, str]]
    retry_delay: float | None


def error_details(exc: grpc.aio.AioRpcError) -> ErrorDetails:
    """Decode google.rpc.Status details from a failed call."""
    raw = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw is not None, f"no rich status on {exc.code()}: {exc.details()}"
    status = status_pb2.Status.FromString(raw if isinstance(raw, bytes) else raw.encode())
    info = error_details_pb2.ErrorInfo()
    bad = error_details_pb2.BadRequest()
    retry = error_details_pb2.RetryInfo()
    has_info = has_retry = False
    for detail in status.details:
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
            has_info = True
        elif detail.Is(bad.DESCRIPTOR):
            detail.Unpack(bad)
        elif detail.Is(retry.DESCRIPTOR):
            detail.Unpack(retry)
            has_retry = True
    assert has_info, "every error must carry an ErrorInfo"
    return ErrorDetails(
        code=exc.code(),
        message=exc.details() or "",
        reason=info.reason,
        domain=info.domain,
        metadata=dict(info.metadata),
        field_violations=[(v.field, v.description) for v in bad.field_violations],
        retry_delay=retry.retry_delay.ToTimedelta().total_seconds() if has_retry else None,
    )


async def validation_outcome(stubs: Stubs, token: str) -> str:
    """ValidateSession's answer in one word: "ok", or the error's machine reason (INVALID_TOKEN always comes as
    UNAUTHENTICATED)."""
    try:
        await stubs.sessions.ValidateSession(session_service_pb2.ValidateSessionRequest(token=token), timeout=5)
    except grpc.aio.AioRpcError as exc:
        details = error_details(exc)
        if details.reason == "INVALID_TOKEN":
            assert details.code == grpc.StatusCode.UNAUTHENTICATED
        return details.reason
    return "ok"
