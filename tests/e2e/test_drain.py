"""Graceful drain: SIGTERM turns health NOT_SERVING at once and keeps answering for AUTHSIDECAR_DRAIN_DELAY
seconds, then stops accepting and lets every call that reached the server finish; SIGINT stops without the delay;
a second SIGTERM cuts the delay short."""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import session_service_pb2 as session_pb
from authsidecar_client.v1 import session_service_pb2_grpc
from tests.conftest import REDIS_URL
from tests.e2e.conftest import Server, start_server, stubs_for

PASSWORD = "correct horse battery"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
BURSTS = 5  # bursts fired at most to have calls in flight when the signal goes
CALLS = 50


@pytest.fixture
def backend_env(pg_url: str, redis_prefix: str) -> dict[str, str]:
    """Postgres + Redis, as for the shared ``server`` fixture."""
    return {"DATABASE_URL": pg_url, "REDIS_URL": REDIS_URL, "AUTHSIDECAR_REDIS_KEY_PREFIX": redis_prefix}


@contextmanager
def serving(tmp_path: Path, env: dict[str, str], drain_delay: float, **settings: str) -> Iterator[Server]:
    """A server with the given drain delay (and other AUTHSIDECAR_* settings), once it reports SERVING; killed
    afterwards if a test left it running."""
    extra = {f"AUTHSIDECAR_{name.upper()}": value for name, value in settings.items()}
    server = start_server(
        tmp_path,
        {**env, "AUTHSIDECAR_DRAIN_DELAY": str(drain_delay), "AUTHSIDECAR_SHUTDOWN_GRACE": "5", **extra},
    )
    try:
        server.wait_for(SERVING)
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def exit_code(server: Server, within: float) -> int:
    """The server's exit code once it has stopped by itself; fails (and kills it) if it is still running after
    ``within`` seconds (a guard against a server that never stops, not a measure of how fast it does)."""
    try:
        return server.process.wait(within)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        pytest.fail(f"server still running {within}s later:\n{server.log()}")


def in_order(log: str, *lines: str) -> bool:
    """Each of ``lines`` is in ``log``, in this order."""
    at = [log.find(line) for line in lines]
    return -1 not in at and at == sorted(at)


def new_connection(address: str) -> grpc.aio.Channel:
    """A channel with a connection of its own (no subchannel shared with other channels to the same address)."""
    return grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


async def sign_up(address: str) -> str:
    """A new user's session token, validated once (so it is cached)."""
    stubs = stubs_for(address)
    try:
        reply = await stubs.auth.SignUp(
            auth_pb.SignUpRequest(email=f"drain-{secrets.token_hex(4)}@example.com", password=PASSWORD, name="D"),
            timeout=10,
        )
        await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=reply.token), timeout=5)
    finally:
        await stubs.channel.close()
    return str(reply.token)


async def validate(channel: grpc.aio.Channel, token: str) -> str:
    """ValidateSession's outcome: OK or the status code's name."""
    stub = session_service_pb2_grpc.SessionServiceStub(channel)
    try:
        reply = await stub.ValidateSession(session_pb.ValidateSessionRequest(token=token), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    assert reply.user.id and reply.session.id, reply
    return "OK"


async def validate_on_new_connection(address: str, token: str) -> str:
    """ValidateSession over a new connection."""
    channel = new_connection(address)
    try:
        return await validate(channel, token)
    finally:
        await channel.close()


@dataclass(frozen=True)
class Burst:
    """What became of a burst of calls interrupted by a signal."""

    outcomes: Counter[str]
    in_flight: int  # calls not answered yet when the signal went
    signalled: float  # time.monotonic() when the signal went


async def burst_then_signal(server: Server, token: str, sig: signal.Signals) -> Burst:
    """Fire CALLS concurrent ValidateSession calls, each over a new connection, and send ``sig`` as soon as the first
    answer is back, while the others are in flight. A burst whose answers all came back at once (a fast server: no
    call left to drain) is answered in full and followed by another, up to BURSTS in all."""
    for burst in range(BURSTS):
        channels = [new_connection(server.address) for _ in range(CALLS)]
        try:
            # Connected before the burst: every call then reaches the server before the signal does.
            await asyncio.wait_for(asyncio.gather(*(channel.channel_ready() for channel in channels)), 10)
            calls = [asyncio.ensure_future(validate(channel, token)) for channel in channels]
            await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
            in_flight = sum(not call.done() for call in calls)
            if in_flight == 0 and burst < BURSTS - 1:
                assert Counter(await asyncio.gather(*calls)) == {"OK": CALLS}
                continue
            server.process.send_signal(sig)
            signalled = time.monotonic()
            outcomes = Counter(await asyncio.gather(*calls))
        finally:
            await asyncio.gather(*(channel.close() for channel in channels))
        return Burst(outcomes, in_flight, signalled)
    raise AssertionError("unreachable: the last burst always signals")


async def test_sigterm_drains_with_delay(tmp_path: Path, backend_env: dict[str, str]) -> None:
    # The health watcher runs several times during the delay: it must not turn health back to SERVING.
    with serving(tmp_path, backend_env, drain_delay=2, health_interval="0.2") as server:
        token = await sign_up(server.address)
        burst = await burst_then_signal(server, token, signal.SIGTERM)
        assert burst.in_flight > 0
        assert burst.outcomes == {"OK": CALLS}, (burst, server.log())

        # NOT_SERVING at once and for the whole delay, while calls are still answered, on new connections too:
        # sampled over most of the delay (time passing is the point here).
        answers: list[str] = []
        while time.monotonic() - burst.signalled < 1.5:
            assert server.health() == NOT_SERVING, server.log()
            answers.append(await validate_on_new_connection(server.address, token))
            await asyncio.sleep(0.1)
        assert server.process.poll() is None, server.log()
        assert answers and set(answers) == {"OK"}, answers

        # Then it stops by itself, cleanly: the delay ran out (nothing else asked it to stop), then the listener
        # closed and the process ended.
        assert exit_code(server, within=15) == 0, server.log()
    log = server.log()
    assert in_order(log, "draining: NOT_SERVING, still answering for 2.0s", "shutting down", "stopped"), log


@pytest.mark.parametrize(
    ("signum", "drain_delay"),
    [(signal.SIGTERM, 0), (signal.SIGINT, 30)],  # no delay configured; SIGINT skips even a long one
    ids=["sigterm-without-delay", "sigint"],
)
async def test_stopping_at_once_still_completes_calls_in_flight(
    tmp_path: Path, backend_env: dict[str, str], signum: signal.Signals, drain_delay: int
) -> None:
    with serving(tmp_path, backend_env, drain_delay=drain_delay) as server:
        token = await sign_up(server.address)
        burst = await burst_then_signal(server, token, signum)
        if signum == signal.SIGTERM:
            assert burst.in_flight >= 5, burst  # the signal did arrive in the middle of the burst
        assert burst.outcomes == {"OK": CALLS}, (burst, server.log())
        # It stops by itself, cleanly, with no drain delay (for SIGINT the guard is half the 30 s it skipped).
        assert exit_code(server, within=15) == 0, server.log()
    log = server.log()
    assert "draining" not in log and in_order(log, "shutting down", "stopped"), log


async def test_second_sigterm_cuts_the_drain_delay_short(tmp_path: Path, backend_env: dict[str, str]) -> None:
    with serving(tmp_path, backend_env, drain_delay=30) as server:
        server.process.send_signal(signal.SIGTERM)
        server.wait_for(NOT_SERVING, deadline=5)
        assert server.process.poll() is None, server.log()
        server.process.send_signal(signal.SIGTERM)
        # Stopped, cleanly, well before the 30 s delay could have run out: the second signal ended it.
        assert exit_code(server, within=15) == 0, server.log()
    log = server.log()
    assert in_order(log, "draining: NOT_SERVING, still answering for 30.0s", "shutting down", "stopped"), log
