"""Load generator jobs. Each job runs in its own spawned process, on its own event loop, with grpc.aio clients
through the generated stubs, and puts one ``("ok", result)`` or ``("error", text)`` on the queue it is given.

Every loop is bounded both by a call count and by time; every call has a deadline.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import time
from collections import Counter
from collections.abc import Coroutine
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from authsidecar_client.v1 import (
    auth_service_pb2,
    auth_service_pb2_grpc,
    resources_pb2,
    session_service_pb2,
    session_service_pb2_grpc,
)
from tests.benchmarks.infra import machine_cpu_seconds

CALL_TIMEOUT = 10.0
MAX_CALLS_PER_CLIENT = 200_000
BARRIER_TIMEOUT = 60.0
CLIENT = resources_pb2.ClientContext(
    ip_address="203.0.113.7", user_agent="Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run on uvloop when available (clients share the cores with the servers; keep them cheap)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


def _report(queue: Queue[Any], coro: Coroutine[Any, Any, Any]) -> None:
    try:
        queue.put(("ok", _run(coro)))
    except BaseException as exc:
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def outcome(exc: grpc.aio.AioRpcError) -> str:
    """``CODE`` or ``CODE/REASON`` (google.rpc.ErrorInfo.reason from the status details trailer)."""
    reason = ""
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    reason = info.reason
    return f"{exc.code().name}/{reason}" if reason else exc.code().name


def _validate_requests(tokens: list[str]) -> list[session_service_pb2.ValidateSessionRequest]:
    return [session_service_pb2.ValidateSessionRequest(token=t) for t in tokens]


def sequential(
    addresses: dict[str, str], tokens: list[str], warmup: int, calls: int, rounds: int, queue: Queue[Any]
) -> None:
    """One client, one call at a time: per-call latencies (seconds) per target, rounds interleaved across targets."""
    _report(queue, _sequential(addresses, tokens, warmup, calls, rounds))


async def _sequential(
    addresses: dict[str, str], tokens: list[str], warmup: int, calls: int, rounds: int
) -> dict[str, list[float]]:
    requests = _validate_requests(tokens)
    channels = {label: grpc.aio.insecure_channel(address) for label, address in addresses.items()}
    stubs = {label: session_service_pb2_grpc.SessionServiceStub(ch) for label, ch in channels.items()}
    latencies: dict[str, list[float]] = {label: [] for label in addresses}
    try:
        for stub in stubs.values():
            for i in range(warmup):
                await stub.ValidateSession(requests[i % len(requests)], timeout=CALL_TIMEOUT)
        for _ in range(rounds):
            for label, stub in stubs.items():
                out = latencies[label]
                for i in range(calls // rounds):
                    start = time.perf_counter()
                    await stub.ValidateSession(requests[i % len(requests)], timeout=CALL_TIMEOUT)
                    out.append(time.perf_counter() - start)
    finally:
        for ch in channels.values():
            await ch.close()
    return latencies


def throughput(
    index: int,
    addresses: dict[str, str],
    schedule: list[str],
    tokens: list[str],
    in_flight: int,
    seconds: float,
    barrier: Barrier,
    queue: Queue[Any],
) -> None:
    """``in_flight`` concurrent callers per target in ``schedule``; each phase starts at a barrier shared with the
    other load processes (and the parent, which samples server CPU at each crossing)."""
    _report(queue, _throughput(index, addresses, schedule, tokens, in_flight, seconds, barrier))


async def _throughput(
    index: int,
    addresses: dict[str, str],
    schedule: list[str],
    tokens: list[str],
    in_flight: int,
    seconds: float,
    barrier: Barrier,
) -> list[dict[str, Any]]:
    requests = _validate_requests(tokens)
    channels = {label: grpc.aio.insecure_channel(address) for label, address in addresses.items()}
    stubs = {label: session_service_pb2_grpc.SessionServiceStub(ch) for label, ch in channels.items()}
    results: list[dict[str, Any]] = []

    async def caller(stub: session_service_pb2_grpc.SessionServiceStub, first: int, end: float) -> tuple[int, int]:
        ok = errors = 0
        i = first
        while time.perf_counter() < end and ok + errors < MAX_CALLS_PER_CLIENT:
            try:
                await stub.ValidateSession(requests[i % len(requests)], timeout=CALL_TIMEOUT)
                ok += 1
            except grpc.aio.AioRpcError:
                errors += 1
            i += 1
        return ok, errors

    try:
        for stub in stubs.values():  # connect and warm up every target before the first phase
            for i in range(50):
                await stub.ValidateSession(requests[i % len(requests)], timeout=CALL_TIMEOUT)
        for label in schedule:
            await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT)
            start = time.perf_counter()
            end = start + seconds
            firsts = [index * in_flight + k for k in range(in_flight)]
            counts = await asyncio.gather(*(caller(stubs[label], first, end) for first in firsts))
            elapsed = time.perf_counter() - start
            results.append(
                {"label": label, "ok": sum(c[0] for c in counts), "errors": sum(c[1] for c in counts), "s": elapsed}
            )
        await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT)  # the parent's closing CPU sample
    finally:
        for ch in channels.values():
            await ch.close()
    return results


def _sign_in_requests(credentials: list[tuple[str, str]]) -> list[auth_service_pb2.SignInRequest]:
    return [auth_service_pb2.SignInRequest(email=e, password=p, client=CLIENT) for e, p in credentials]


async def _timed_sign_in(stub: auth_service_pb2_grpc.AuthServiceStub, request: Any) -> tuple[float, str]:
    start = time.perf_counter()
    try:
        await stub.SignIn(request, timeout=CALL_TIMEOUT)
        result = "OK"
    except grpc.aio.AioRpcError as exc:
        result = outcome(exc)
    return time.perf_counter() - start, result


def _own_client(n: int) -> resources_pb2.ClientContext:
    """CLIENT with the ``n``-th address of 10.0.0.0/8 (n >= 1) instead of CLIENT's: one end user."""
    return resources_pb2.ClientContext(
        ip_address=str(ipaddress.IPv4Address(0x0A00_0000 + n)), user_agent=CLIENT.user_agent
    )


def sign_in_load(
    address: str, credentials: list[tuple[str, str]], in_flight: int, seconds: float, queue: Queue[Any]
) -> None:
    """``in_flight`` concurrent SignIn callers for ``seconds``: outcome counts and the elapsed time."""
    _report(queue, _sign_in_load(address, credentials, in_flight, seconds))


def sign_in_load_own_ips(
    address: str, credentials: list[tuple[str, str]], in_flight: int, seconds: float, queue: Queue[Any]
) -> None:
    """sign_in_load, but every call (the warm-up too) comes from its own client IP, 10.0.0.1, 10.0.0.2, ... from a
    counter in this process, as if each were another end user: none repeats (this is the run's only such job), so
    a server with the abuse limits on pays for them on every call without any client IP reaching its limit."""
    _report(queue, _sign_in_load(address, credentials, in_flight, seconds, own_ips=True))


async def _sign_in_load(
    address: str, credentials: list[tuple[str, str]], in_flight: int, seconds: float, own_ips: bool = False
) -> dict[str, Any]:
    requests = _sign_in_requests(credentials)
    clients = itertools.count(1)
    outcomes: Counter[str] = Counter()

    def request(i: int) -> auth_service_pb2.SignInRequest:
        same = requests[i % len(requests)]
        if not own_ips:
            return same
        return auth_service_pb2.SignInRequest(
            email=same.email, password=same.password, client=_own_client(next(clients))
        )

    async with grpc.aio.insecure_channel(address) as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        await _timed_sign_in(stub, request(0))  # connect and warm up

        async def caller(first: int, end: float) -> None:
            i = first
            while time.perf_counter() < end and i < first + MAX_CALLS_PER_CLIENT:
                outcomes[(await _timed_sign_in(stub, request(i)))[1]] += 1
                i += 1

        busy, steal = machine_cpu_seconds()
        start = time.perf_counter()
        end = start + seconds
        await asyncio.gather(*(caller(k, end) for k in range(in_flight)))
        elapsed = time.perf_counter() - start
        busy_after, steal_after = machine_cpu_seconds()
    machine = {"busy": busy_after - busy, "steal": steal_after - steal}
    return {"outcomes": dict(outcomes), "s": elapsed, "machine": machine}


def sign_in_burst(address: str, credentials: list[tuple[str, str]], calls: int, queue: Queue[Any]) -> None:
    """``calls`` SignIn calls fired at once: (latency, outcome) of each."""
    _report(queue, _sign_in_burst(address, credentials, calls))


async def _sign_in_burst(address: str, credentials: list[tuple[str, str]], calls: int) -> list[tuple[float, str]]:
    requests = _sign_in_requests(credentials)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        await _timed_sign_in(stub, requests[0])  # connect first: measure the server, not the handshake
        return list(await asyncio.gather(*(_timed_sign_in(stub, requests[i % len(requests)]) for i in range(calls))))


def fairness(address: str, credentials: list[tuple[str, str]], flood: int, attempts: int, queue: Queue[Any]) -> None:
    """One client IP keeps ``flood`` wrong-password SignIn calls in flight while another client IP signs in with
    the right password ``attempts`` times, one after the other: the legitimate outcomes, and the flood's."""
    _report(queue, _fairness(address, credentials, flood, attempts))


async def _fairness(address: str, credentials: list[tuple[str, str]], flood: int, attempts: int) -> dict[str, Any]:
    attacker = resources_pb2.ClientContext(ip_address="198.51.100.66", user_agent="flood")
    legit_client = resources_pb2.ClientContext(ip_address="203.0.113.10", user_agent="legit")
    (victim, _), (user, password) = credentials[0], credentials[1]
    wrong = auth_service_pb2.SignInRequest(email=victim, password="not-the-password", client=attacker)
    right = auth_service_pb2.SignInRequest(email=user, password=password, client=legit_client)
    legit: Counter[str] = Counter()
    flooded: Counter[str] = Counter()
    stop = asyncio.Event()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        await _timed_sign_in(stub, right)

        async def attack() -> None:
            while not stop.is_set():
                flooded[(await _timed_sign_in(stub, wrong))[1]] += 1

        attackers = [asyncio.create_task(attack()) for _ in range(flood)]
        await asyncio.sleep(0.5)  # the flood is under way
        for _ in range(attempts):
            legit[(await _timed_sign_in(stub, right))[1]] += 1
        stop.set()
        await asyncio.gather(*attackers)
    return {"legit": dict(legit), "flood": dict(flooded)}
