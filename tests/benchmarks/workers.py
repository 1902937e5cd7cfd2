"""The workers rows of the benchmark: ValidateSession (cache hit, Postgres + Redis) from ``serve`` with 1 worker and
with ``--workers 2``, against the echo floor as 1 process and as 2 processes sharing one port (SO_REUSEPORT), all
driven in the same run by the same load: LOAD_PROCESSES processes x IN_FLIGHT callers, each caller on a connection
of its own (SO_REUSEPORT spreads connections, not calls, so a load over one connection would reach one worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import grpc

from authsidecar_client.v1 import session_service_pb2, session_service_pb2_grpc
from tests.benchmarks import infra, load

ECHO_1, ECHO_2 = "echo, 1 process", "echo, 2 processes on one port"
ONE, TWO = "ValidateSession, cache hit, 1 worker", "ValidateSession, cache hit, --workers 2"
TARGETS = (ECHO_1, ECHO_2, ONE, TWO)
LOAD_PROCESSES, IN_FLIGHT, SECONDS, ROUNDS = 2, 8, 2.0, 3


@dataclass
class WorkerFigures:
    """Throughput, errors, server CPU per call (every process of the target) and how the CPU was split between
    the processes of each two-process target."""

    rate: dict[str, float]
    errors: dict[str, int]
    cpu_us: dict[str, float]
    split: dict[str, list[float]]


def spread_throughput(
    index: int,
    addresses: dict[str, str],
    schedule: list[str],
    tokens: list[str],
    in_flight: int,
    seconds: float,
    barrier: Barrier,
    queue: Queue[Any],
) -> None:
    """As load.throughput, with a connection per caller."""
    load._report(queue, _spread_throughput(index, addresses, schedule, tokens, in_flight, seconds, barrier))


async def _spread_throughput(
    index: int,
    addresses: dict[str, str],
    schedule: list[str],
    tokens: list[str],
    in_flight: int,
    seconds: float,
    barrier: Barrier,
) -> list[dict[str, Any]]:
    requests = [session_service_pb2.ValidateSessionRequest(token=t) for t in tokens]
    own = [("grpc.use_local_subchannel_pool", 1)]  # a connection per channel, not one shared by the process
    channels = {
        label: [grpc.aio.insecure_channel(address, options=own) for _ in range(in_flight)]
        for label, address in addresses.items()
    }
    stubs = {label: [session_service_pb2_grpc.SessionServiceStub(ch) for ch in chs] for label, chs in channels.items()}
    results: list[dict[str, Any]] = []

    async def caller(stub: session_service_pb2_grpc.SessionServiceStub, first: int, end: float) -> tuple[int, int]:
        ok = errors = 0
        i = first
        while time.perf_counter() < end and ok + errors < load.MAX_CALLS_PER_CLIENT:
            try:
                await stub.ValidateSession(requests[i % len(requests)], timeout=load.CALL_TIMEOUT)
                ok += 1
            except grpc.aio.AioRpcError:
                errors += 1
            i += 1
        return ok, errors

    try:
        for per_target in stubs.values():  # connect and warm up every connection before the first phase
            for k, stub in enumerate(per_target):
                for i in range(20):
                    await stub.ValidateSession(requests[(k + i) % len(requests)], timeout=load.CALL_TIMEOUT)
        for label in schedule:
            await asyncio.to_thread(barrier.wait, load.BARRIER_TIMEOUT)
            start = time.perf_counter()
            end = start + seconds
            counts = await asyncio.gather(
                *(caller(stub, index * in_flight + k, end) for k, stub in enumerate(stubs[label]))
            )
            elapsed = time.perf_counter() - start
            results.append(
                {"label": label, "ok": sum(c[0] for c in counts), "errors": sum(c[1] for c in counts), "s": elapsed}
            )
        await asyncio.to_thread(barrier.wait, load.BARRIER_TIMEOUT)
    finally:
        for chs in channels.values():
            for ch in chs:
                await ch.close()
    return results


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (a supervisor and its workers)."""
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        listed = []
    return [pid, *(int(child) for child in listed)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (Linux /proc); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_targets(
    env: dict[str, str], sample: bytes, log_dir: Path, cleanup: contextlib.ExitStack
) -> dict[str, list[infra.ServerProcess]]:
    """The four targets, each as its processes (started, SERVING, stopped by ``cleanup``)."""
    serve = [sys.executable, "-m", "authsidecar", "serve"]
    echo = [sys.executable, "-m", "tests.benchmarks.echo_server", "{listen}", sample.hex()]
    echo_env = {"PYTHONPATH": str(infra.ROOT)}
    targets: dict[str, list[infra.ServerProcess]] = {}

    def started(srv: infra.ServerProcess) -> infra.ServerProcess:
        cleanup.callback(srv.stop)
        return srv

    targets[ECHO_1] = [started(infra.ServerProcess.start("echo-1", echo, echo_env, log_dir))]
    first = started(infra.ServerProcess.start("echo-2a", echo, echo_env, log_dir))
    targets[ECHO_2] = [first, started(infra.ServerProcess.start("echo-2b", echo, echo_env, log_dir, first.address))]
    targets[ONE] = [started(infra.ServerProcess.start("one-worker", serve, env, log_dir))]
    targets[TWO] = [
        started(infra.ServerProcess.start("two-workers", serve, env | {"AUTHSIDECAR_WORKERS": "2"}, log_dir))
    ]
    for processes in targets.values():
        for srv in processes:
            srv.wait_serving()
    deadline = time.monotonic() + 30
    while len(process_tree(targets[TWO][0].process.pid)) < 3 or targets[TWO][0].log().count("is listening") < 2:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the two workers never listened:\n{targets[TWO][0].log()[-3000:]}")
        time.sleep(0.1)
    return targets


def measure_workers(
    env: dict[str, str],
    tokens: list[str],
    sample: bytes,
    log_dir: Path,
    run_jobs: Callable[..., list[Any]],
) -> tuple[WorkerFigures, list[str]]:
    """Start the targets, load them in interleaved rounds, stop them; the figures and the problems seen (exit codes
    after SIGTERM, WARNING lines)."""
    print("workers: 1 vs 2 workers vs echo on 1 and 2 processes ...", flush=True)
    with contextlib.ExitStack() as cleanup:
        targets = start_targets(env, sample, log_dir, cleanup)
        pids = {
            label: [pid for srv in procs for pid in process_tree(srv.process.pid)] for label, procs in targets.items()
        }
        addresses = {label: procs[0].address for label, procs in targets.items()}
        schedule = list(TARGETS) * ROUNDS
        barrier = multiprocessing.get_context("spawn").Barrier(LOAD_PROCESSES + 1)
        samples: list[dict[int, float]] = []

        def sample_cpu_at_each_phase() -> None:
            for _ in range(len(schedule) + 1):
                barrier.wait(SECONDS + load.BARRIER_TIMEOUT)
                samples.append({pid: cpu_seconds(pid) for procs in pids.values() for pid in procs})

        args = [(i, addresses, schedule, tokens, IN_FLIGHT, SECONDS, barrier) for i in range(LOAD_PROCESSES)]
        phases = run_jobs(
            spread_throughput, args, timeout=len(schedule) * SECONDS + 120, between=sample_cpu_at_each_phase
        )
        calls: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        rate: Counter[str] = Counter()
        per_pid: Counter[int] = Counter()
        for i, label in enumerate(schedule):
            for pid in pids[label]:
                per_pid[pid] += samples[i + 1][pid] - samples[i][pid]
            for worker in phases:
                calls[label] += worker[i]["ok"]
                errors[label] += worker[i]["errors"]
                rate[label] += worker[i]["ok"] / worker[i]["s"] / ROUNDS
        cpu_us = {label: 1e6 * sum(per_pid[p] for p in pids[label]) / max(calls[label], 1) for label in TARGETS}
        split = {}
        for label in (ECHO_2, TWO):
            serving = pids[label] if label == ECHO_2 else pids[label][1:]  # the supervisor serves nothing
            total = sum(per_pid[p] for p in serving) or 1.0
            split[label] = [100 * per_pid[p] / total for p in serving]
        processes = [srv for procs in targets.values() for srv in procs]
        problems = [f"[{srv.name}] exit code {code} after SIGTERM" for srv in processes if (code := srv.stop())]
        problems += [f"[{srv.name}] {line}" for srv in processes for line in srv.log_problems()]
    return WorkerFigures(dict(rate), dict(errors), cpu_us, split), problems


def section(f: WorkerFigures | None) -> list[str]:
    """The Markdown section."""
    lines = ["", "## Workers (serve --workers 2)", ""]
    if f is None:
        return [*lines, "not measured"]
    lines += [
        f"ValidateSession cache hits on Postgres + Redis, {LOAD_PROCESSES} load processes x {IN_FLIGHT} callers, "
        f"each caller on a connection of its own (SO_REUSEPORT spreads connections), {ROUNDS} interleaved rounds "
        f"of {SECONDS:.0f} s per target. The 2-process echo floor is two echo servers sharing one port. Server "
        "CPU/call counts every process of the target (the supervisor too).",
        "",
        "| target | max throughput | server CPU/call | CPU split between the processes | errors |",
        "|---|---|---|---|---|",
    ]
    for label in TARGETS:
        split = " / ".join(f"{share:.0f} %" for share in f.split[label]) if label in f.split else "-"
        lines.append(
            f"| {label} | {f.rate[label]:,.0f} calls/s | {f.cpu_us[label]:.0f} us | {split} | {f.errors[label]} |"
        )
    return lines


def ratios(f: WorkerFigures | None) -> list[tuple[str, float, str]]:
    """Rows of the Ratios table."""
    if f is None:
        return []
    return [
        ("--workers 2 / 1 worker: cache hit throughput", f.rate[TWO] / f.rate[ONE], "-"),
        ("--workers 2 / 2-process echo: throughput", f.rate[TWO] / f.rate[ECHO_2], ">= 0.90"),
        ("1 worker / 1-process echo: throughput (same load)", f.rate[ONE] / f.rate[ECHO_1], "-"),
        ("2-process echo / 1-process echo: throughput", f.rate[ECHO_2] / f.rate[ECHO_1], "-"),
    ]
