"""Operating the server: Redis outages, Postgres down, unix sockets, graceful shutdown, configuration errors."""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import session_service_pb2 as session_pb
from tests.e2e.conftest import (
    RedisProcess,
    Server,
    clean_env,
    error_details,
    free_port,
    start_server,
    stubs_for,
    wait_for,
)

PASSWORD = "correct horse battery"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def redis_backed_server(tmp_path: Path, pg_url: str, private_redis: RedisProcess) -> Iterator[Server]:
    server = start_server(
        tmp_path,
        {
            "DATABASE_URL": pg_url,
            "REDIS_URL": private_redis.url,
            "AUTHSIDECAR_REDIS_TIMEOUT": "0.2",
            "AUTHSIDECAR_REDIS_RETRY_AFTER": "0.3",
            "AUTHSIDECAR_LOCAL_CACHE_SECONDS": "0",  # these tests watch what Redis holds and serves
        },
    )
    server.wait_for(SERVING)
    yield server
    assert server.stop() == 0, server.log()


def stopped(redis: RedisProcess) -> bool:
    """The redis-server process is stopped (SIGSTOP has taken effect)."""
    assert redis.process is not None
    stat = Path(f"/proc/{redis.process.pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0] == "T"


async def validate(stubs: object, token: str) -> str:
    """'ok' or the error reason."""
    try:
        await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=token), timeout=5)  # type: ignore[attr-defined]
    except grpc.aio.AioRpcError as exc:
        return error_details(exc).reason
    return "ok"


async def test_redis_outage_falls_back_to_postgres_and_never_serves_revoked_sessions(
    redis_backed_server: Server, private_redis: RedisProcess
) -> None:
    stubs = stubs_for(redis_backed_server.address)
    try:
        email = f"outage-{secrets.token_hex(4)}@example.com"
        keep = await stubs.auth.SignUp(auth_pb.SignUpRequest(email=email, password=PASSWORD, name="Ada"))
        revoke = await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD))
        assert await validate(stubs, keep.token) == "ok" and await validate(stubs, revoke.token) == "ok"
        assert int(private_redis.cli("dbsize")) >= 3  # both sessions + the user index are cached

        # Redis hangs (keeps its data, answers nothing) for as long as the test needs: validation still answers
        # from Postgres; a revocation still takes effect.
        private_redis.pause()
        try:
            await wait_for(lambda: stopped(private_redis), 5, "redis-server stopped")
            assert await validate(stubs, keep.token) == "ok"
            await stubs.auth.SignOut(auth_pb.SignOutRequest(token=revoke.token), timeout=5)
            assert await validate(stubs, revoke.token) == "INVALID_TOKEN"
        finally:
            private_redis.resume()

        # Redis is back with the stale entry: the missed invalidation is replayed before the cache is read. Until
        # the breaker tries Redis again (AUTHSIDECAR_REDIS_RETRY_AFTER) and after: never valid again.
        async def back() -> bool:
            assert await validate(stubs, revoke.token) == "INVALID_TOKEN"
            assert await validate(stubs, keep.token) == "ok"
            return "secondary storage is back" in redis_backed_server.log()

        await wait_for(back, 10, "Redis used again", redis_backed_server.log)
        assert await validate(stubs, revoke.token) == "INVALID_TOKEN"

        # Redis gone entirely, then restarted empty: still working throughout.
        private_redis.stop()
        assert await validate(stubs, keep.token) == "ok"
        private_redis.start()

        async def refilled() -> bool:  # the breaker probes again after AUTHSIDECAR_REDIS_RETRY_AFTER, then refills
            assert await validate(stubs, keep.token) == "ok"
            return int(private_redis.cli("dbsize")) >= 1

        await wait_for(refilled, 10, "the cache refilled", redis_backed_server.log)
    finally:
        await stubs.channel.close()
    assert "secondary storage unavailable" in redis_backed_server.log()


async def test_postgres_down_means_not_serving_and_unavailable(tmp_path: Path) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    server = start_server(tmp_path, {"DATABASE_URL": dead, "AUTHSIDECAR_HEALTH_INTERVAL": "0.2"})
    try:
        server.wait_for(NOT_SERVING)
        stubs = stubs_for(server.address)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stubs.auth.SignIn(auth_pb.SignInRequest(email="a@example.com", password=PASSWORD), timeout=10)
        finally:
            await stubs.channel.close()
        details = error_details(info.value)
        assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE")
        assert details.retry_delay is not None and details.retry_delay > 0
        assert "Traceback" not in details.message
    finally:
        assert server.stop() == 0, server.log()


async def test_unix_socket_listener(tmp_path: Path, pg_url: str) -> None:
    socket_path = tmp_path / "authsidecar.sock"
    server = start_server(tmp_path, {"DATABASE_URL": pg_url}, listen=f"unix://{socket_path}")
    try:
        server.wait_for(SERVING)
        stubs = stubs_for(f"unix://{socket_path}")
        try:
            up = await stubs.auth.SignUp(
                auth_pb.SignUpRequest(email=f"unix-{secrets.token_hex(4)}@example.com", password=PASSWORD, name="U")
            )
            assert await validate(stubs, up.token) == "ok"
        finally:
            await stubs.channel.close()
    finally:
        assert server.stop() == 0, server.log()


async def test_sigterm_drains_in_flight_calls(tmp_path: Path, pg_url: str) -> None:
    # Slow hashing so calls are still in flight when SIGTERM arrives.
    server = start_server(
        tmp_path,
        {"DATABASE_URL": pg_url, "AUTHSIDECAR_ARGON2_TIME_COST": "3", "AUTHSIDECAR_ARGON2_MEMORY_KIB": "65536"},
    )
    server.wait_for(SERVING)
    stubs = stubs_for(server.address)
    try:
        await stubs.channel.channel_ready()  # one connection: its calls reach the server in the order they are sent
        calls = [
            asyncio.ensure_future(
                stubs.auth.SignUp(
                    auth_pb.SignUpRequest(
                        email=f"drain-{i}-{secrets.token_hex(4)}@example.com", password=PASSWORD, name="D"
                    )
                )
            )
            for i in range(4)
        ]
        # A quick call sent after them: once it is answered, the four sign-ups have reached the server.
        with pytest.raises(grpc.aio.AioRpcError):
            await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token="x" * 43), timeout=5)
        assert not all(call.done() for call in calls)  # some are still hashing when the signal goes
        server.process.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await stubs.channel.close()
    assert all(isinstance(r, auth_pb.SignUpResponse) for r in results), results
    assert server.stop() == 0
    assert "stopped" in server.log()


def serve_once(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `authsidecar serve` expecting it to stop by itself (a start-up error)."""
    cmd = [sys.executable, "-m", "authsidecar", "serve"]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=30, check=False)


def test_bad_configuration_stops_with_one_clear_line(tmp_path: Path) -> None:
    env = {**clean_env(), "AUTHSIDECAR_SESSION_EXPIRES_IN": "soon", "DATABASE_URL": "postgresql://u:s3cret@h/db"}
    out = serve_once(env, tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "AUTHSIDECAR_SESSION_EXPIRES_IN" in lines[0]
    assert "s3cret" not in out.stderr


def test_bad_database_url_is_a_configuration_error(tmp_path: Path) -> None:
    env = {**clean_env(), "DATABASE_URL": "oracle://u:s3cret@h/db"}
    out = serve_once(env, tmp_path)
    assert out.returncode == 2, out.stderr
    assert "DATABASE_URL" in out.stderr and "s3cret" not in out.stderr


def test_unmigrated_database_stops_the_server_with_a_hint(tmp_path: Path) -> None:
    env = {**clean_env(), "AUTHSIDECAR_SQLITE_PATH": str(tmp_path / "empty.db")}
    out = serve_once(env, tmp_path)
    assert out.returncode == 1
    assert "run `authsidecar migrate`" in out.stderr
    assert "Traceback" not in out.stderr
