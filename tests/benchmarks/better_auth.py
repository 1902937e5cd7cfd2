"""Side by side with Better Auth: its own get-session over HTTP (the Node app of tests/better_auth, Redis secondary
storage, Better Auth's default Redis-only sessions) against ValidateSession of an authsidecar server in the
Better Auth profile, on the same database, Redis and sessions. Both are asked with the session cookie's signed
value, by equal clients: blocking Python clients (http.client keep-alive / grpc sync stub), one per thread.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from typing import Any

import grpc

from authsidecar_client.v1 import session_service_pb2, session_service_pb2_grpc

HTTP, GRPC = "Better Auth get-session (HTTP)", "ValidateSession, Better Auth profile"


@dataclass
class SideBySide:
    """Latencies (seconds) of sequential calls and calls/s under load, per target."""

    seq: dict[str, list[float]]
    rate: dict[str, float]
    errors: dict[str, int]


def _http_caller(port: int, cookies: list[str]) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    i = 0

    def call() -> bool:
        nonlocal i
        cookie = cookies[i % len(cookies)]
        i += 1
        conn.request("GET", "/api/auth/get-session", headers={"cookie": f"better-auth.session_token={cookie}"})
        response = conn.getresponse()
        body = response.read()
        return response.status == 200 and body.startswith(b'{"session"')

    return call, conn.close


def _grpc_caller(address: str, cookies: list[str]) -> Any:
    channel = grpc.insecure_channel(address)
    stub = session_service_pb2_grpc.SessionServiceStub(channel)
    requests = [session_service_pb2.ValidateSessionRequest(token=c) for c in cookies]
    i = 0

    def call() -> bool:
        nonlocal i
        request = requests[i % len(requests)]
        i += 1
        return bool(stub.ValidateSession(request, timeout=10).session.id)

    return call, channel.close


def _caller(target: str, port: int, address: str, cookies: list[str]) -> Any:
    return _http_caller(port, cookies) if target == HTTP else _grpc_caller(address, cookies)


def sequential(
    port: int, address: str, cookies: list[str], warmup: int, calls: int, rounds: int, queue: Queue[Any]
) -> None:
    """One client, one call at a time, targets interleaved by round."""
    try:
        seq: dict[str, list[float]] = {HTTP: [], GRPC: []}
        callers = {target: _caller(target, port, address, cookies) for target in seq}
        for target, (call, _) in callers.items():
            for _ in range(warmup):
                assert call(), target
        for _ in range(rounds):
            for target, (call, _) in callers.items():
                for _ in range(calls // rounds):
                    started = time.perf_counter()
                    ok = call()
                    seq[target].append(time.perf_counter() - started)
                    assert ok, target
        for _, close in callers.values():
            close()
        queue.put(("ok", seq))
    except BaseException as exc:
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def throughput(
    port: int, address: str, cookies: list[str], threads: int, seconds: float, schedule: list[str], queue: Queue[Any]
) -> None:
    """``threads`` blocking clients per target phase, ``seconds`` each; calls and errors per phase."""
    try:
        phases = []
        lock = threading.Lock()
        for target in schedule:
            counts = {"ok": 0, "errors": 0}
            end = time.monotonic() + seconds

            def work(target: str = target, counts: dict[str, int] = counts, end: float = end) -> None:
                call, close = _caller(target, port, address, cookies)
                ok = errors = 0
                while time.monotonic() < end:
                    try:
                        if call():
                            ok += 1
                        else:
                            errors += 1
                    except Exception:
                        errors += 1
                close()
                with lock:
                    counts["ok"] += ok
                    counts["errors"] += errors

            workers = [threading.Thread(target=work) for _ in range(threads)]
            started = time.monotonic()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            phases.append({"target": target, **counts, "s": time.monotonic() - started})
        queue.put(("ok", phases))
    except BaseException as exc:
        queue.put(("error", f"{type(exc).__name__}: {exc}"))
