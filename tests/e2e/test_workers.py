"""``authsidecar serve --workers N``: one supervisor, N real server processes on one port (Postgres + Redis), driven
through the generated stubs: both workers answer, a killed worker comes back, SIGTERM drains them all, a killed
supervisor takes its workers with it, and bad set-ups fail once, before any worker starts."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from authsidecar.supervisor import FIRST_DELAY, MAX_DELAY, restart_delay
from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import session_service_pb2 as session_pb
from authsidecar_client.v1 import session_service_pb2_grpc
from tests.conftest import REDIS_URL, create_pg_database, drop_pg_database
from tests.e2e.conftest import FAST_ARGON2_ENV, Server, clean_env, free_port, start_server, stubs_for, wait_for_sync
from tests.e2e.test_drain import burst_then_signal, new_connection, sign_up

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CHANNELS = 24  # connections opened to spread calls over the workers (SO_REUSEPORT balances connections)


@pytest.fixture
def backend_env(pg_url: str, redis_prefix: str) -> dict[str, str]:
    """Postgres + Redis: what several workers need."""
    return {"DATABASE_URL": pg_url, "REDIS_URL": REDIS_URL, "AUTHSIDECAR_REDIS_KEY_PREFIX": redis_prefix}


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux /proc)."""
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []
    return [int(child) for child in listed if alive(int(child))]


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def wait_until(condition: Callable[[], object], within: float, server: Server, what: str) -> None:
    """Poll ``condition()`` until true; fail with the log otherwise."""
    wait_for_sync(condition, within, what, server.log)


def in_order(lines: list[str], *parts: str) -> bool:
    """Each of ``parts`` is in one of ``lines``, in this order."""
    at = [next((n for n, line in enumerate(lines) if part in line), -1) for part in parts]
    return -1 not in at and at == sorted(at)


def catches(pid: int, signum: int) -> bool:
    """Process ``pid`` has a handler of its own for ``signum`` (Linux /proc: SigCgt)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) & (1 << (signum - 1)))


def listening(server: Server, worker: int) -> int:
    """How many times worker ``worker`` has said it listens."""
    return len(re.findall(rf"worker {worker} \(pid \d+\) is listening", server.log()))


@contextmanager
def workers(tmp_path: Path, env: dict[str, str], count: int = 2, **settings: str) -> Iterator[Server]:
    """A supervisor with ``count`` workers, once every one of them listens; killed (with its workers) if a test
    left it running."""
    extra = {f"AUTHSIDECAR_{name.upper()}": value for name, value in settings.items()}
    server = start_server(tmp_path, {**env, "AUTHSIDECAR_WORKERS": str(count), **extra})
    try:
        wait_until(lambda: all(listening(server, i) for i in range(count)), 30, server, "every worker listening")
        server.wait_for(SERVING)
        assert len(children(server.process.pid)) == count, server.log()
        yield server
    finally:
        left = children(server.process.pid)
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
        for pid in left:  # they follow the supervisor out; make sure, whatever the test did
            deadline = time.monotonic() + 10
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def rpc_counts(metrics_port: int) -> float:
    """ValidateSession calls that answered OK, from one worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("authsidecar_rpc_total{") and 'rpc="ValidateSession"' in line and 'code="OK"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def outcome(channel: grpc.aio.Channel, token: str) -> str:
    """ValidateSession's outcome: OK, or the status code and message."""
    try:
        await session_service_pb2_grpc.SessionServiceStub(channel).ValidateSession(
            session_pb.ValidateSessionRequest(token=token), timeout=10
        )
    except grpc.aio.AioRpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    return "OK"


async def validate_everywhere(address: str, token: str, channels: int = CHANNELS) -> list[str]:
    """ValidateSession over ``channels`` new connections at once: their outcomes."""
    opened = [new_connection(address) for _ in range(channels)]
    try:
        return list(await asyncio.gather(*(outcome(channel, token) for channel in opened)))
    finally:
        await asyncio.gather(*(channel.close() for channel in opened))


# ------------------------------------------------------------------------------------------------ serving


async def test_two_workers_share_the_port_and_both_answer(tmp_path: Path, backend_env: dict[str, str]) -> None:
    metrics = free_port()
    with workers(tmp_path, backend_env, metrics_listen=f"127.0.0.1:{metrics}") as server:
        pids = children(server.process.pid)
        token = await sign_up(server.address)  # SignUp through the shared port
        assert await validate_everywhere(server.address, token) == ["OK"] * CHANNELS

        # Both workers answered some of those calls: worker i exposes its metrics on port + i.
        counts = [rpc_counts(metrics), rpc_counts(metrics + 1)]
        assert all(count > 0 for count in counts), (counts, server.log())
        assert sum(counts) >= CHANNELS + 1

        # A session signed out through one connection is refused on every other, whichever worker holds it
        # (revocation across workers, within the invalidation bound).
        stubs = stubs_for(server.address)
        try:
            await stubs.auth.SignOut(auth_pb.SignOutRequest(token=token), timeout=5)
        finally:
            await stubs.channel.close()
        await asyncio.sleep(1.2)
        assert set(await validate_everywhere(server.address, token)) == {"UNAUTHENTICATED: invalid session token"}

        assert children(server.process.pid) == pids  # nothing died meanwhile
        assert server.stop() == 0, server.log()
    log = server.log()
    assert "Traceback" not in log, log
    assert log.count("authsidecar.supervisor [-]: every worker stopped") == 1, log
    # Cleanup runs in worker 0 only; the metrics lines say where each worker exposes its figures.
    assert f"worker 0 [-]: metrics on http://127.0.0.1:{metrics}/metrics" in log
    assert f"worker 1 [-]: metrics on http://127.0.0.1:{metrics + 1}/metrics" in log


async def test_a_killed_worker_is_restarted_and_the_port_keeps_answering(
    tmp_path: Path, backend_env: dict[str, str]
) -> None:
    with workers(tmp_path, backend_env) as server:
        token = await sign_up(server.address)
        first, second = sorted(children(server.process.pid))
        victim = second
        os.kill(victim, signal.SIGKILL)
        # Reaped by the supervisor: every thread of it has exited and its listening socket is closed (its main
        # thread alone shows as a zombie earlier; connections hashed to its socket until then are reset).
        wait_until(lambda: f"(pid {victim}) was killed by SIGKILL" in server.log(), 5, server, "the death noticed")
        # While it is down (and after), every new connection is answered by the workers left.
        assert await validate_everywhere(server.address, token) == ["OK"] * CHANNELS
        wait_until(lambda: len(children(server.process.pid)) == 2, 10, server, "a replacement worker")
        replacement = (set(children(server.process.pid)) - {first, second}).pop()
        log = server.log()
        assert re.search(rf"worker \d \(pid {victim}\) was killed by SIGKILL after [\d.]+ s; restarting it in", log)
        wait_until(lambda: "is listening" in server.log().split(f"pid {victim})", 1)[1], 15, server, "listening")
        assert await validate_everywhere(server.address, token) == ["OK"] * CHANNELS
        assert alive(first) and alive(replacement)
        assert server.stop() == 0, server.log()


async def test_quick_deaths_in_a_row_back_off(tmp_path: Path, backend_env: dict[str, str]) -> None:
    with workers(tmp_path, backend_env) as server:
        delays = []
        for _ in range(3):
            before = set(children(server.process.pid))
            victim = max(before)
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda v=victim: f"(pid {v}) was killed" in server.log(), 10, server, "the death logged")
            line = re.search(
                rf"\(pid {victim}\) was killed by SIGKILL after [\d.]+ s; restarting it in ([\d.]+) s", server.log()
            )
            assert line, server.log()
            delays.append(float(line.group(1)))
            restarts = len(delays)
            wait_until(lambda n=restarts: server.log().count(") is listening") == 2 + n, 15, server, "a restart")
        assert delays == [FIRST_DELAY, 2 * FIRST_DELAY, 4 * FIRST_DELAY], delays
        assert server.stop() == 0, server.log()


def test_restart_delay_doubles_up_to_a_cap() -> None:
    assert restart_delay(0) == 0
    assert [restart_delay(n) for n in (1, 2, 3)] == [FIRST_DELAY, 2 * FIRST_DELAY, 4 * FIRST_DELAY]
    assert restart_delay(100) == MAX_DELAY


# ----------------------------------------------------------------------------------------------- stopping


async def test_sigterm_drains_every_worker_and_exits_0(tmp_path: Path, backend_env: dict[str, str]) -> None:
    with workers(tmp_path, backend_env, drain_delay="2", shutdown_grace="5") as server:
        token = await sign_up(server.address)
        pids = children(server.process.pid)
        burst = await burst_then_signal(server, token, signal.SIGTERM)  # 50 calls, each on its own connection
        assert burst.in_flight > 0
        assert burst.outcomes == {"OK": 50}, (burst, server.log())
        # The drain: health turns NOT_SERVING and new connections are still answered, by whichever worker.
        await asyncio.to_thread(server.wait_for, NOT_SERVING, 5)
        assert await validate_everywhere(server.address, token, channels=8) == ["OK"] * 8
        # Then the delay runs out: every worker stops by itself and the supervisor exits 0 (15 s: the guard).
        assert server.process.wait(15) == 0, server.log()
        assert not [pid for pid in pids if alive(pid)], server.log()
    log = server.log()
    assert log.count("draining: NOT_SERVING, still answering for 2.0s") == 2, log
    assert log.count("[-]: stopped") == 2, log
    lines = log.splitlines()
    for worker in (0, 1):
        mine = [line for line in lines if f"worker {worker} [-]: " in line]
        assert in_order(mine, "draining: NOT_SERVING", "shutting down", "stopped"), log
    assert "restarting" not in log, log


async def test_a_sigterm_reaching_the_workers_twice_does_not_cut_the_drain(
    tmp_path: Path, backend_env: dict[str, str]
) -> None:
    # As under systemd's default KillMode: SIGTERM to every process of the service, and the supervisor forwards its
    # own. JSON logs: every worker line carries its index.
    with workers(tmp_path, backend_env, drain_delay="2", log_format="json") as server:
        token = await sign_up(server.address)
        pids = children(server.process.pid)
        signalled = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        wait_until(lambda: server.log().count("draining") == 2, 5, server, "draining")  # then the second one
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "SIGTERM: stopping 2 workers" in server.log(), 5, server, "the supervisor's SIGTERM")
        # The forwarded SIGTERM does not cut the drains short: NOT_SERVING, and still answering new connections,
        # sampled over the rest of the delay (time passing is the point here).
        answers: list[str] = []
        while time.monotonic() - signalled < 1.5:
            assert server.health() == NOT_SERVING, server.log()
            answers += await validate_everywhere(server.address, token, channels=2)
            await asyncio.sleep(0.1)
        assert answers and set(answers) == {"OK"}, (answers, server.log())
        assert server.process.wait(15) == 0, server.log()
    lines = [json.loads(line) for line in server.log().splitlines()]
    draining = [line["worker"] for line in lines if line["message"].startswith("draining")]
    assert sorted(draining) == [0, 1], lines
    assert all("worker" not in line for line in lines if line["logger"] == "authsidecar.supervisor"), lines


async def test_a_worker_that_dies_while_stopping_is_not_restarted(tmp_path: Path, backend_env: dict[str, str]) -> None:
    with workers(tmp_path, backend_env, drain_delay="3") as server:
        pids = children(server.process.pid)
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: server.log().count("draining") == 2, 5, server, "draining")
        os.kill(pids[0], signal.SIGKILL)
        assert server.process.wait(15) == 1, server.log()  # not every worker drained cleanly
        assert not [pid for pid in pids if alive(pid)]
    log = server.log()
    assert "restarting" not in log and f"(pid {pids[0]}) was killed by SIGKILL while stopping" in log, log


async def test_a_second_signal_cuts_the_drains_short(tmp_path: Path, backend_env: dict[str, str]) -> None:
    with workers(tmp_path, backend_env, drain_delay="30") as server:
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: server.log().count("draining") == 2, 5, server, "draining")
        server.process.send_signal(signal.SIGTERM)
        # Stopped, cleanly, long before the 30 s drains could have run out: the second signal ended them.
        assert server.process.wait(10) == 0, server.log()
    assert "second signal: stopping the workers without the drain delay" in server.log(), server.log()


def test_a_killed_supervisor_takes_its_workers_with_it(tmp_path: Path, backend_env: dict[str, str]) -> None:
    with workers(tmp_path, backend_env) as server:
        pids = children(server.process.pid)
        server.process.kill()
        server.process.wait()
        wait_until(lambda: not any(alive(pid) for pid in pids), 10, server, "every worker gone")
    assert server.log().count("[-]: stopped") == 2, server.log()  # they drained (SIGTERM), not just vanished


# ----------------------------------------------------------------------------------------- refused set-ups


def serve(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``authsidecar serve`` that is expected to stop by itself."""
    full = {**clean_env(), **FAST_ARGON2_ENV, "AUTHSIDECAR_LISTEN": f"127.0.0.1:{free_port()}", **env}
    return subprocess.run(
        [sys.executable, "-m", "authsidecar", "serve", *args],
        env=full,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AUTHSIDECAR_LISTEN": "unix:///tmp/authsidecar-workers.sock"}, "cannot share a unix socket"),
        ({"AUTHSIDECAR_LISTEN": "127.0.0.1:0"}, "need a fixed port"),
        ({"REDIS_URL": ""}, "without REDIS_URL each of the 2 workers would count rate limits"),
        ({"AUTHSIDECAR_RATE_LIMIT_ENABLED": "true", "AUTHSIDECAR_METRICS_LISTEN": "127.0.0.1:65535"}, "is not a port"),
        ({"AUTHSIDECAR_SESSION_SHORT_EXPIRES_IN": "999999"}, "AUTHSIDECAR_SESSION_SHORT_EXPIRES_IN: must be shorter"),
    ],
    ids=["unix-socket", "port-0", "no-redis", "metrics-ports", "app-wiring"],
)
def test_bad_set_ups_fail_once_before_any_worker_starts(
    tmp_path: Path, backend_env: dict[str, str], env: dict[str, str], expected: str
) -> None:
    full = {**backend_env, **env}
    if full.get("REDIS_URL") == "":
        del full["REDIS_URL"]
        full["AUTHSIDECAR_RATE_LIMIT_ENABLED"] = "true"
    result = serve(tmp_path, full, "--workers", "2")
    assert result.returncode == 2, result
    assert result.stderr.count(expected) == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert not re.search(r"worker \d \[|starting \d workers", result.stderr), result.stderr  # none started


def test_a_taken_port_is_refused_before_any_worker_starts(tmp_path: Path, backend_env: dict[str, str]) -> None:
    """Workers share their ports only with each other: a listener already there (here on worker 1's metrics port;
    as often an earlier serve --workers on another database, which would split the answers) is refused at once."""
    metrics = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", metrics + 1))
        taken.listen()
        result = serve(
            tmp_path, {**backend_env, "AUTHSIDECAR_METRICS_LISTEN": f"127.0.0.1:{metrics}"}, "--workers", "2"
        )
    assert result.returncode == 2, result
    assert f"AUTHSIDECAR_METRICS_LISTEN: 127.0.0.1:{metrics + 1} is already in use" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "worker 0" not in result.stderr, result.stderr


def test_a_second_supervisor_on_the_same_port_is_refused(tmp_path: Path, backend_env: dict[str, str]) -> None:
    with workers(tmp_path, backend_env) as first:
        second = serve(tmp_path, {**backend_env, "AUTHSIDECAR_LISTEN": first.address}, "--workers", "2")
        assert second.returncode == 2, second
        assert f"AUTHSIDECAR_LISTEN: {first.address} is already in use" in second.stderr, second.stderr
        assert first.stop() == 0, first.log()


def test_a_worker_that_cannot_start_stops_the_supervisor(tmp_path: Path, backend_env: dict[str, str]) -> None:
    # A hook module that loads in the supervisor's check but refuses to load in a worker.
    (tmp_path / "worker_refusal.py").write_text(
        "import sys\n"
        "if any(arg.startswith('--worker-index') for arg in sys.argv):\n"
        "    raise ImportError('refuses to load in a worker')\n"
        "async def after(data, context):\n"
        "    return None\n"
    )
    config = tmp_path / "hooks.toml"
    config.write_text('[[hooks]]\nevents = ["user.create"]\nwhen = "after"\ncall = "worker_refusal:after"\n')
    env = {**backend_env, "AUTHSIDECAR_CONFIG": str(config), "PYTHONPATH": str(tmp_path)}
    result = serve(tmp_path, env, "--workers", "2")
    assert result.returncode == 1, result
    assert re.search(
        r"worker \d \(pid \d+\) could not start \(exited with code \d+\); stopping every worker", result.stderr
    ), result.stderr
    assert "restarting" not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_an_unmigrated_database_is_reported_once(tmp_path: Path, redis_prefix: str) -> None:
    url = create_pg_database("authsidecar_workers")
    try:
        env = {"DATABASE_URL": url, "REDIS_URL": REDIS_URL, "AUTHSIDECAR_REDIS_KEY_PREFIX": redis_prefix}
        result = serve(tmp_path, env, "--workers", "2")
    finally:
        drop_pg_database(url)
    assert result.returncode == 1, result
    assert result.stderr.count("run `authsidecar migrate`") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "worker 0" not in result.stderr and "starting 2 workers" not in result.stderr, result.stderr


def test_the_embedded_database_refuses_workers_and_serves_alone(tmp_path: Path) -> None:
    db = tmp_path / "authsidecar.db"
    env = {"AUTHSIDECAR_SQLITE_PATH": str(db)}
    subprocess.run(
        [sys.executable, "-m", "authsidecar", "migrate"], cwd=tmp_path, env={**clean_env(), **env}, check=True
    )
    refused = serve(tmp_path, {**env, "AUTHSIDECAR_WORKERS": "3"})
    assert refused.returncode == 2, refused
    assert refused.stderr.strip() == (
        "authsidecar: invalid configuration: AUTHSIDECAR_WORKERS: the embedded SQLite database serves one process;"
        " use Postgres or MySQL (DATABASE_URL) to run 3 workers"
    ), refused.stderr
    too_many = serve(tmp_path, env, "--workers", "65")
    assert too_many.returncode == 2 and "AUTHSIDECAR_WORKERS: Input should be less than or equal to 64" in (
        too_many.stderr
    ), too_many.stderr

    # --workers 1 is today's single process: no supervisor, the SQLite lock, serving as before.
    single = start_server(tmp_path, {**env, "AUTHSIDECAR_WORKERS": "1"})
    try:
        single.wait_for(SERVING)
        assert children(single.process.pid) == []
        with grpc.insecure_channel(single.address) as channel:
            stub = session_service_pb2_grpc.SessionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ValidateSession(session_pb.ValidateSessionRequest(token="x" * 43), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        assert single.stop() == 0, single.log()
    assert "supervisor" not in single.log() and "worker 0" not in single.log()


def test_a_signal_while_the_modules_load_is_a_quiet_clean_exit(tmp_path: Path) -> None:
    """The supervisor stops workers still loading with SIGINT when another could not start; a process stopped
    while it imports (~0.8 s here) exits 0 without a traceback, for SIGINT as for SIGTERM (found flaky on a slow
    machine: the stopped worker printed a KeyboardInterrupt traceback)."""
    env = {**clean_env(), "AUTHSIDECAR_SQLITE_PATH": str(tmp_path / "authsidecar.db")}
    for signum in (signal.SIGINT, signal.SIGTERM):
        process = subprocess.Popen(
            [sys.executable, "-m", "authsidecar", "serve"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
        )
        # Python is up and __main__ has set its handlers; the server's modules are still loading.
        wait_for_sync(lambda p=process.pid: catches(p, signal.SIGTERM) and catches(p, signal.SIGINT), 10, "handlers")
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0 and "Traceback" not in stderr, (signum, process.returncode, stderr)
