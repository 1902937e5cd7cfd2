"""authsidecar benchmark: ``python -m tests.benchmarks.run`` (``make bench``); writes tests/benchmarks/RESULTS.md.

In one run, against real server processes on Postgres + Redis and a bare grpc.aio echo server as the floor:
ValidateSession sequential latency and max throughput (echo / cache hit / cache disabled), SignIn throughput
(where the server's CPU goes, by thread; also with the abuse limits on) against the raw argon2 verify rate, a SignIn
overload burst, ``serve --workers 2`` against 1 worker and a 2-process echo floor (workers.py), the same
figures with 1,000 vs 1,000,000 users and sessions (scale.py), and ValidateSession cache hits served by a single Redis
vs a three-master Redis Cluster (topology.py).
Everything it creates (databases, Redis keys, processes, the Redis Cluster) is removed at the end, also on failure. It
reports; it never fails on a missed target. ``--only workers`` / ``--only scale`` / ``--only topology`` measures and
prints those rows alone (RESULTS.md is left alone).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import multiprocessing
import os
import platform
import queue as queue_module
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import argon2
import grpc

from authsidecar_client.v1 import auth_service_pb2, auth_service_pb2_grpc, session_service_pb2, session_service_pb2_grpc
from tests.benchmarks import better_auth, infra, load
from tests.benchmarks import scale as scale_rows
from tests.benchmarks import topology as topology_rows
from tests.benchmarks import workers as worker_rows
from tests.benchmarks.micro import coherence_costs
from tests.better_auth.harness import SECRET as BETTER_AUTH_SECRET
from tests.better_auth.harness import BetterAuthApp, installed

USERS = 8
SEQ_WARMUP, SEQ_CALLS, SEQ_ROUNDS = 300, 2000, 4
LOAD_PROCESSES, LOAD_IN_FLIGHT, LOAD_SECONDS, LOAD_ROUNDS = 2, 4, 2.0, 4  # 8 in flight against one server process
SIGNIN_IN_FLIGHT, SIGNIN_SECONDS = 8, 5.0  # keeps the hash workers (= cores) busy, below the admission bound
ARGON2_SECONDS = 2.5  # measured twice: just before and just after the SignIn throughput phase
BURST_CALLS = 200
FLOOD, FAIR_ATTEMPTS = 64, 40  # wrong-password calls kept in flight by one client IP; another IP's sign-ins
ARGON2_ENV = {"AUTHSIDECAR_ARGON2_TIME_COST": "2", "AUTHSIDECAR_ARGON2_MEMORY_KIB": "19456"}
ARGON2_ENV |= {"AUTHSIDECAR_ARGON2_PARALLELISM": "1"}  # OWASP minimum = the server's defaults
RESULTS = Path(__file__).with_name("RESULTS.md")
ECHO, HIT, NOCACHE = "echo (floor)", "ValidateSession, cache hit (Redis)", "ValidateSession, cache disabled (SQL)"
METRICS = "ValidateSession, cache hit, metrics on"
LIMITS = "SignIn, abuse limits on"  # SignIn only: not a ValidateSession target
HASH_POOL, EVENT_LOOP, GRPC_CORE = "other threads (the password-hash pool)", "event loop", "gRPC core threads"
GRPC_CORE_THREADS = ("event_engine", "grpc_global_tim", "lifeguard")  # comm prefixes (15 characters at most)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def run_jobs(
    target: Callable[..., None],
    arg_lists: list[tuple[Any, ...]],
    timeout: float,
    between: Callable[[], None] | None = None,
) -> list[Any]:
    """Run ``target(*args, queue)`` in one spawned process per arg tuple; their results, or RuntimeError.

    ``between`` (optional) runs in this process while the jobs run, before their results are collected.
    """
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    processes = [ctx.Process(target=target, args=(*args, queue), daemon=True) for args in arg_lists]
    for p in processes:
        p.start()
    try:
        if between is not None:
            between()
        deadline = time.monotonic() + timeout
        replies: list[tuple[str, Any]] = []
        while len(replies) < len(processes):
            if time.monotonic() > deadline:
                raise RuntimeError(f"load job {target.__name__} timed out after {timeout:.0f} s")
            try:
                replies.append(queue.get(timeout=0.5))
            except queue_module.Empty:
                if any(p.exitcode not in (None, 0) for p in processes):
                    raise RuntimeError(f"load job {target.__name__} died: {[p.exitcode for p in processes]}") from None
    finally:
        for p in processes:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(5)
    errors = [value for status, value in replies if status != "ok"]
    if errors:
        raise RuntimeError(f"load job failed: {errors[0]}")
    return [value for _, value in replies]


@dataclass
class Figures:
    """Everything measured."""

    seq: dict[str, list[float]]
    calls: dict[str, int]
    rate: dict[str, float]
    errors: dict[str, int]
    cpu_us: dict[str, float]
    sign_in_rate: float
    sign_in_outcomes: dict[str, int]
    sign_in_cpu_ms: float
    argon2_rate: float
    argon2_rates: tuple[float, float]
    argon2_threads: int
    burst: list[tuple[float, str]]
    cached_documents: str
    micro: dict[str, float]
    side: better_auth.SideBySide | None = None
    fairness: dict[str, dict[str, int]] | None = None
    workers: worker_rows.WorkerFigures | None = None
    scale: scale_rows.ScaleFigures | None = None
    local_tier: tuple[float, float, int] | None = None
    sign_in_pool_ms: float = 0.0  # server CPU per sign-in by thread group (HASH_POOL, EVENT_LOOP, GRPC_CORE)
    sign_in_loop_ms: float = 0.0
    sign_in_grpc_ms: float = 0.0
    limits_on: LimitsOn | None = None
    topology: topology_rows.TopologyFigures | None = None
    sign_in_machine_ms: float = 0.0  # every process's CPU (server, load generator, Postgres, Redis) per sign-in
    sign_in_steal_s: float = 0.0  # CPU time the hypervisor took from this machine during the SignIn phase
    argon2_machine_ms: float = 0.0  # every process's CPU per raw verify


@dataclass
class LimitsOn:
    """SignIn throughput against the server with its abuse limits on, every call from its own client IP."""

    rate: float
    outcomes: dict[str, int]
    cpu_ms: float


def sign_up_users(address: str, tag: str) -> tuple[list[str], list[tuple[str, str]], bytes]:
    """SignUp USERS users; their tokens, (email, password) pairs and one real serialized ValidateSessionResponse."""
    tokens, credentials = [], []
    with grpc.insecure_channel(address) as channel:
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        for i in range(USERS):
            email, password = f"bench-{tag}-{i}@example.com", f"bench-password-{i}-{tag}"
            reply = auth.SignUp(
                auth_service_pb2.SignUpRequest(
                    email=email,
                    password=password,
                    name=f"Benchmark User {i:02d}",
                    image=f"https://avatars.example.com/u/{tag}{i:02d}.png",
                    client=load.CLIENT,
                ),
                timeout=10,
            )
            tokens.append(reply.token)
            credentials.append((email, password))
        sessions = session_service_pb2_grpc.SessionServiceStub(channel)
        sample = sessions.ValidateSession(session_service_pb2.ValidateSessionRequest(token=tokens[0]), timeout=10)
    return tokens, credentials, sample.SerializeToString()


def raw_argon2_rate(seconds: float) -> tuple[float, int, float]:
    """argon2id verifies/s with the server's parameters in a pool of os.cpu_count() threads; the threads; and the
    whole machine's busy CPU seconds per verify meanwhile."""
    hasher = argon2.PasswordHasher(
        time_cost=2, memory_cost=19_456, parallelism=1, hash_len=32, salt_len=16, type=argon2.Type.ID
    )
    password = "bench-password-raw"
    encoded = hasher.hash(password)
    threads = os.cpu_count() or 2
    end = time.perf_counter() + seconds

    def verify_loop(_: int) -> int:
        done = 0
        while time.perf_counter() < end and done < 100_000:
            hasher.verify(encoded, password)
            done += 1
        return done

    busy = infra.machine_cpu_seconds()[0]
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(verify_loop, range(threads)))
    elapsed = time.perf_counter() - start
    return total / elapsed, threads, (infra.machine_cpu_seconds()[0] - busy) / max(total, 1)


def thread_group(pid: int, tid: int, comm: str) -> str:
    """EVENT_LOOP for the main thread, GRPC_CORE for gRPC core's own threads, HASH_POOL for any other (in the server
    only its password-hash ThreadPoolExecutor starts threads)."""
    if tid == pid:
        return EVENT_LOOP
    return GRPC_CORE if comm.startswith(GRPC_CORE_THREADS) else HASH_POOL


def cpu_by_thread_group(
    pid: int, before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds each thread group used between two ServerProcess.thread_cpu_seconds samples (a thread first seen
    in ``after`` counts from 0)."""
    used = dict.fromkeys((HASH_POOL, EVENT_LOOP, GRPC_CORE), 0.0)
    for tid, (comm, seconds) in after.items():
        used[thread_group(pid, tid, comm)] += seconds - before.get(tid, (comm, 0.0))[1]
    return used


def per_call_ms(seconds: float, outcomes: dict[str, int]) -> float:
    """``seconds`` of CPU spread over every call counted in ``outcomes``, in ms."""
    return 1e3 * seconds / max(sum(outcomes.values()), 1)


def sign_in_phase(
    target: Callable[..., None], server: infra.ServerProcess, credentials: list[tuple[str, str]]
) -> tuple[dict[str, Any], float, dict[str, float]]:
    """SIGNIN_IN_FLIGHT callers for SIGNIN_SECONDS against ``server`` (``target``: load.sign_in_load or a variant):
    the job's result, the server's CPU seconds meanwhile, and those by thread group."""
    args = [(server.address, credentials, SIGNIN_IN_FLIGHT, SIGNIN_SECONDS)]
    cpu_before, threads_before = server.cpu_seconds(), server.thread_cpu_seconds()
    (result,) = run_jobs(target, args, timeout=SIGNIN_SECONDS + 60)
    threads_after, cpu = server.thread_cpu_seconds(), server.cpu_seconds() - cpu_before
    return result, cpu, cpu_by_thread_group(server.process.pid, threads_before, threads_after)


def limits_on_phase(server: infra.ServerProcess, credentials: list[tuple[str, str]]) -> LimitsOn:
    """The SignIn throughput phase against ``server`` (abuse limits on), each call from its own client IP."""
    result, cpu, _ = sign_in_phase(load.sign_in_load_own_ips, server, credentials)
    outcomes: dict[str, int] = result["outcomes"]
    return LimitsOn(outcomes.get("OK", 0) / result["s"], outcomes, per_call_ms(cpu, outcomes))


def measure(
    servers: dict[str, infra.ServerProcess],
    tokens: list[str],
    credentials: list[tuple[str, str]],
    prefix: str,
    limited: infra.ServerProcess | None = None,
) -> Figures:
    """Every phase in turn; servers not under test are idle. ``limited`` (abuse limits on) is only signed in to."""
    addresses = {label: srv.address for label, srv in servers.items()}
    print("sequential latency ...", flush=True)
    (seq,) = run_jobs(load.sequential, [(addresses, tokens, SEQ_WARMUP, SEQ_CALLS, SEQ_ROUNDS)], timeout=120)

    print("max throughput ...", flush=True)
    schedule = list(addresses) * LOAD_ROUNDS
    barrier = multiprocessing.get_context("spawn").Barrier(LOAD_PROCESSES + 1)
    samples: list[dict[str, float]] = []

    def sample_cpu_at_each_phase() -> None:
        for _ in range(len(schedule) + 1):
            barrier.wait(LOAD_SECONDS + load.BARRIER_TIMEOUT)
            samples.append({label: srv.cpu_seconds() for label, srv in servers.items()})

    args = [(i, addresses, schedule, tokens, LOAD_IN_FLIGHT, LOAD_SECONDS, barrier) for i in range(LOAD_PROCESSES)]
    phases = run_jobs(
        load.throughput, args, timeout=len(schedule) * LOAD_SECONDS + 90, between=sample_cpu_at_each_phase
    )
    calls: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    rate: Counter[str] = Counter()
    cpu: Counter[str] = Counter()
    for i, label in enumerate(schedule):
        cpu[label] += samples[i + 1][label] - samples[i][label]
        for worker in phases:
            calls[label] += worker[i]["ok"]
            errors[label] += worker[i]["errors"]
            rate[label] += worker[i]["ok"] / worker[i]["s"] / LOAD_ROUNDS
    cpu_us = {label: 1e6 * cpu[label] / max(calls[label], 1) for label in addresses}
    hit_keys = [f"{prefix}{{session:{hashlib.sha256(t.encode()).hexdigest()}}}" for t in tokens]
    cached = f"{infra.redis_exists(hit_keys)}/{len(tokens)}"

    print("raw argon2 verify rate / SignIn throughput (limits off, on) / raw argon2 verify rate ...", flush=True)
    argon2_before, threads, machine_before = raw_argon2_rate(ARGON2_SECONDS)
    signin, signin_cpu, by_thread = sign_in_phase(load.sign_in_load, servers[HIT], credentials)
    limits_on = None if limited is None else limits_on_phase(limited, credentials)
    argon2_after, _, machine_after = raw_argon2_rate(ARGON2_SECONDS)
    time.sleep(0.5)
    print("SignIn overload burst ...", flush=True)
    (burst,) = run_jobs(load.sign_in_burst, [(servers[HIT].address, credentials, BURST_CALLS)], timeout=90)
    time.sleep(0.5)
    print("fair admission (one client flooding sign-ins, another signing in) ...", flush=True)
    (fair,) = run_jobs(load.fairness, [(servers[HIT].address, credentials, FLOOD, FAIR_ATTEMPTS)], timeout=180)
    return Figures(
        seq=seq,
        calls=dict(calls),
        rate=dict(rate),
        errors=dict(errors),
        cpu_us=cpu_us,
        sign_in_rate=signin["outcomes"].get("OK", 0) / signin["s"],
        sign_in_outcomes=signin["outcomes"],
        sign_in_cpu_ms=per_call_ms(signin_cpu, signin["outcomes"]),
        sign_in_machine_ms=per_call_ms(signin["machine"]["busy"], signin["outcomes"]),
        sign_in_steal_s=signin["machine"]["steal"],
        argon2_machine_ms=1e3 * (machine_before + machine_after) / 2,
        argon2_rate=(argon2_before + argon2_after) / 2,
        argon2_rates=(argon2_before, argon2_after),
        argon2_threads=threads,
        burst=[tuple(b) for b in burst],
        cached_documents=cached,
        micro=coherence_costs(),
        fairness=fair,
        sign_in_pool_ms=per_call_ms(by_thread[HASH_POOL], signin["outcomes"]),
        sign_in_loop_ms=per_call_ms(by_thread[EVENT_LOOP], signin["outcomes"]),
        sign_in_grpc_ms=per_call_ms(by_thread[GRPC_CORE], signin["outcomes"]),
        limits_on=limits_on,
    )


def side_by_side(db_name: str, prefix: str, log_dir: Path, cleanup: contextlib.ExitStack) -> better_auth.SideBySide:
    """Better Auth's get-session vs ValidateSession in the Better Auth profile, on one database, Redis and set of
    sessions (created by the Better Auth app)."""
    print("side by side with Better Auth ...", flush=True)
    cleanup.callback(infra.drop_database, db_name)
    db_url = infra.create_database(db_name)
    app_env = {"BA_DATABASE_URL": db_url, "BA_REDIS_URL": infra.REDIS_URL, "BA_REDIS_PREFIX": prefix}
    app = BetterAuthApp(infra.free_port(), app_env, log_dir / "better-auth.log")
    cleanup.callback(app.stop)
    env = {"DATABASE_URL": db_url, "REDIS_URL": infra.REDIS_URL, "AUTHSIDECAR_REDIS_KEY_PREFIX": prefix}
    env |= {
        "AUTHSIDECAR_COMPAT": "better-auth",
        "BETTER_AUTH_SECRET": BETTER_AUTH_SECRET,
        "AUTHSIDECAR_DRAIN_DELAY": "0",
    }
    server = infra.ServerProcess.start(
        "better-auth-profile", [sys.executable, "-m", "authsidecar", "serve"], env, log_dir
    )
    cleanup.callback(server.stop)
    server.wait_serving()
    cookies = []
    for i in range(USERS):
        body = {"email": f"ba-bench-{i}@example.com", "password": secrets.token_hex(12), "name": f"User {i}"}
        reply = app.call("POST", "/sign-up/email", body)
        cookie = reply.cookie()
        assert reply.status == 200 and cookie, reply
        cookies.append(cookie)
    args = (app.port, server.address, cookies)
    (seq,) = run_jobs(better_auth.sequential, [(*args, SEQ_WARMUP, SEQ_CALLS, SEQ_ROUNDS)], timeout=180)
    schedule = [better_auth.HTTP, better_auth.GRPC] * LOAD_ROUNDS
    jobs = [(*args, LOAD_IN_FLIGHT, LOAD_SECONDS, schedule)] * LOAD_PROCESSES
    phases = run_jobs(better_auth.throughput, jobs, timeout=len(schedule) * LOAD_SECONDS + 90)
    rate: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for worker in phases:
        for phase in worker:
            rate[phase["target"]] += phase["ok"] / phase["s"] / LOAD_ROUNDS
            errors[phase["target"]] += phase["errors"]
    return better_auth.SideBySide(seq, dict(rate), dict(errors))


def side_by_side_report(side: better_auth.SideBySide | None) -> list[str]:
    """The side-by-side section."""
    lines = ["", "## Side by side with Better Auth's get-session", ""]
    if side is None:
        return [*lines, "not measured: better-auth is not installed (make installs it into .tools/)"]
    p50 = {label: percentile(v, 0.5) for label, v in side.seq.items()}
    lines += [
        f"better-auth 1.7.25 under Node {_node_version()} (Redis secondary storage, Redis-only sessions) and an "
        "authsidecar server with AUTHSIDECAR_COMPAT=better-auth on the same database, Redis and sessions, both "
        "asked with the signed session cookie by equal blocking Python clients (sequential: 1 client; throughput: "
        f"{LOAD_PROCESSES} processes x {LOAD_IN_FLIGHT} threads).",
        "",
        "| target | p50 | p99 | max throughput | errors |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {label} | {p50[label] * 1e3:.3f} ms | {percentile(v, 0.99) * 1e3:.3f} ms | "
        f"{side.rate.get(label, 0):,.0f} calls/s | {side.errors.get(label, 0)} |"
        for label, v in side.seq.items()
    ]
    speed = p50[better_auth.HTTP] / p50[better_auth.GRPC]
    rates = side.rate.get(better_auth.GRPC, 0) / max(side.rate.get(better_auth.HTTP, 0), 1e-9)
    lines += ["", f"ValidateSession is {speed:.1f}x faster at p50 and serves {rates:.1f}x the calls/s."]
    return lines


def _node_version() -> str:
    import subprocess

    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "?"


def _fairness_lines(fair: dict[str, dict[str, int]] | None) -> list[str]:
    if fair is None:
        return []
    legit, flood = fair["legit"], fair["flood"]
    share = legit.get("OK", 0) / max(sum(legit.values()), 1)
    return [
        f"- fair admission: one client IP keeps {FLOOD} wrong-password SignIn calls in flight (outcomes "
        f"{dict(sorted(flood.items()))}) while another IP signs in {FAIR_ATTEMPTS} times in a row: "
        f"{dict(sorted(legit.items()))}, {100 * share:.0f}% through (target >= 90%)",
    ]


def _limits_on_lines(limits_on: LimitsOn | None) -> list[str]:
    if limits_on is None:
        return []
    return [
        f"- SignIn throughput with the abuse limits on (each call from its own client IP; {SIGNIN_IN_FLIGHT} in "
        f"flight, {SIGNIN_SECONDS:.0f} s, limits-on server): {limits_on.rate:.1f} successful sign-ins/s; outcomes "
        f"{dict(sorted(limits_on.outcomes.items()))}; server CPU {limits_on.cpu_ms:.1f} ms per sign-in",
    ]


def _limits_on_ratios(limits_on: LimitsOn | None, argon2_rate: float) -> list[tuple[str, float, str]]:
    if limits_on is None:
        return []
    return [("SignIn/s with limits on / raw argon2 verify/s", limits_on.rate / argon2_rate, "-")]


def _ceiling(f: Figures) -> float:
    """The most SignIn/s / raw verify/s can be when the cores are saturated: what a raw verify costs the whole
    machine over what a sign-in costs it (the load generator, Postgres and Redis share the cores)."""
    return f.argon2_machine_ms / f.sign_in_machine_ms if f.sign_in_machine_ms else 0.0


def verdict(value: float, target: str) -> str:
    """PASS/FAIL for '<= x' / '>= x' targets; '-' for informational ratios."""
    if target == "-":
        return "-"
    op, bound = target.split()
    ok = value <= float(bound) if op == "<=" else value >= float(bound)
    return "PASS" if ok else "FAIL"


def report(f: Figures, problems: list[str]) -> str:
    """The results as Markdown."""
    ms = 1e3
    p50 = {label: percentile(v, 0.5) for label, v in f.seq.items()}
    lines = [
        "# authsidecar benchmark results",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
        f"- machine: {os.cpu_count()} CPUs (nproc), {platform.machine()}, Python {platform.python_version()}, "
        f"grpcio {grpc.__version__}",
        "- figures are from ONE run on a noisy 2-core machine where the load-generating clients, the servers, "
        "Postgres and Redis all share the same cores; read the ratios, not the absolute numbers.",
        f"- sequential: 1 client, 1 call at a time, {SEQ_WARMUP} warm-up then {SEQ_CALLS} calls per target "
        f"({SEQ_ROUNDS} interleaved rounds); throughput: {LOAD_PROCESSES} processes x {LOAD_IN_FLIGHT} calls in "
        f"flight, {LOAD_ROUNDS} interleaved rounds of {LOAD_SECONDS:.0f} s per target; {USERS} users' tokens.",
        "- server CPU/call counts the server process only (not Postgres/Redis).",
        "",
        "## ValidateSession",
        "",
        "| target | p50 | p99 | max throughput | server CPU/call | errors |",
        "|---|---|---|---|---|---|",
    ]
    for label, values in f.seq.items():
        lines.append(
            f"| {label} | {p50[label] * ms:.3f} ms | {percentile(values, 0.99) * ms:.3f} ms | "
            f"{f.rate[label]:,.0f} calls/s | {f.cpu_us[label]:.0f} us | {f.errors[label]} |"
        )
    lines.append(f"\nCache documents present in Redis for the validated tokens: {f.cached_documents}.")
    lines += [
        "",
        "Checks a cache hit pays for revocation to hold (in-process, best of 5, same run):",
        "",
        "| check | per call | share of the echo server's CPU per call |",
        "|---|---|---|",
    ]
    lines += [
        f"| {name} | {seconds * 1e6:.2f} us | {100 * seconds * 1e6 / f.cpu_us[ECHO]:.2f} % |"
        for name, seconds in f.micro.items()
    ]
    lines += worker_rows.section(f.workers)
    lines += ["", *scale_rows.section(f.scale)]
    if f.local_tier is not None:
        full, after, size = f.local_tier
        lines += [
            "In-process tier (the embedded cache, and the tier in front of Redis; AUTHSIDECAR_MEMORY_CACHE_MAX_ENTRIES "
            f"= 100,000): {full:.0f} MB with 100,000 sessions ({1e6 * full / 100_000:.0f} bytes each); after 200,000 "
            f"were put into it: {size:,} entries, {after:.0f} MB.",
            "",
        ]
    lines += topology_rows.section(f.topology)
    burst_codes = Counter(outcome for _, outcome in f.burst)
    latencies = [t for t, _ in f.burst]
    raw_verify_ms = 1e3 * f.argon2_threads / f.argon2_rate
    lines += [
        "",
        "## SignIn (argon2id m=19456 KiB, t=2, p=1)",
        "",
        f"- SignIn throughput ({SIGNIN_IN_FLIGHT} in flight, {SIGNIN_SECONDS:.0f} s, cache-on server): "
        f"{f.sign_in_rate:.1f} successful sign-ins/s; outcomes {dict(sorted(f.sign_in_outcomes.items()))}; "
        f"server CPU {f.sign_in_cpu_ms:.1f} ms per sign-in (a raw verify: {raw_verify_ms:.1f} ms of a core)",
        f"- server CPU per sign-in by thread: hash pool {f.sign_in_pool_ms:.1f} ms (a raw verify: {raw_verify_ms:.1f} "
        f"ms), event loop {f.sign_in_loop_ms:.1f} ms, gRPC core {f.sign_in_grpc_ms:.1f} ms",
        f"- the whole machine's CPU (every process: server, load generator, Postgres, Redis) per sign-in "
        f"{f.sign_in_machine_ms:.1f} ms, per raw verify {f.argon2_machine_ms:.1f} ms: with the cores saturated, "
        f"SignIn/s can reach at most {_ceiling(f):.2f}x the raw verify rate here; CPU stolen by the hypervisor "
        f"during the SignIn phase: {f.sign_in_steal_s:.2f} s",
        *_limits_on_lines(f.limits_on),
        f"- raw argon2-cffi verify, {f.argon2_threads} threads in the benchmark process: {f.argon2_rate:.1f} "
        f"verifies/s (mean of {f.argon2_rates[0]:.1f} before and {f.argon2_rates[1]:.1f} after the SignIn phases)",
        f"- overload, {BURST_CALLS} concurrent SignIn at once: {dict(sorted(burst_codes.items()))}; latency of all "
        f"calls p50 {percentile(latencies, 0.5) * ms:.1f} ms, p99 {percentile(latencies, 0.99) * ms:.1f} ms, "
        f"max {max(latencies) * ms:.1f} ms",
        *(
            f"  - {outcome}: p50 {percentile(v, 0.5) * ms:.1f} ms, min {min(v) * ms:.1f} ms, max {max(v) * ms:.1f} ms"
            for outcome in sorted(burst_codes)
            for v in [[t for t, o in f.burst if o == outcome]]
        ),
        *_fairness_lines(f.fairness),
        "",
        "## Ratios",
        "",
        "| ratio | value | target | verdict |",
        "|---|---|---|---|",
    ]
    p99 = {label: percentile(v, 0.99) for label, v in f.seq.items()}
    ratios = [
        ("cache hit p50 / echo p50", p50[HIT] / p50[ECHO], "<= 1.1"),
        ("cache hit throughput / echo throughput", f.rate[HIT] / f.rate[ECHO], ">= 0.90"),
        ("cache hit p99 / echo p99", p99[HIT] / p99[ECHO], "<= 1.3"),
        ("cache miss (SQL) p50 / echo p50", p50[NOCACHE] / p50[ECHO], "<= 1.6"),
        ("SignIn/s / raw argon2 verify/s", f.sign_in_rate / f.argon2_rate, ">= 0.90"),
        ("SignIn server CPU / raw verify CPU", f.sign_in_cpu_ms / raw_verify_ms, "<= 1.1"),
        ("SignIn/s ceiling: raw verify's / a sign-in's whole-machine CPU", _ceiling(f), "-"),
        *_limits_on_ratios(f.limits_on, f.argon2_rate),
        ("cache disabled throughput / echo throughput", f.rate[NOCACHE] / f.rate[ECHO], "-"),
        ("cache hit p50 / cache disabled p50", p50[HIT] / p50[NOCACHE], "-"),
        ("metrics on / off: cache hit p50", p50[METRICS] / p50[HIT], "<= 1.05"),
        ("metrics on / off: cache hit throughput", f.rate[METRICS] / f.rate[HIT], ">= 0.95"),
        ("metrics on / off: server CPU per cache hit", f.cpu_us[METRICS] / f.cpu_us[HIT], "<= 1.05"),
        *worker_rows.ratios(f.workers),
        *scale_rows.ratios(f.scale),
        *topology_rows.ratios(f.topology),
    ]
    lines += [f"| {name} | {value:.2f} | {target} | {verdict(value, target)} |" for name, value, target in ratios]
    lines += side_by_side_report(f.side)
    lines += ["", "## Server logs (WARNING and above)", ""]
    lines += [f"    {p}" for p in problems[:20]] or ["none"]
    return "\n".join(lines) + "\n"


def workers_report(rows: worker_rows.WorkerFigures, problems: list[str]) -> str:
    """The workers rows alone (``--only workers``), as Markdown."""
    lines = [*worker_rows.section(rows), "", "| ratio | value | target | verdict |", "|---|---|---|---|"]
    lines += [f"| {n} | {v:.2f} | {t} | {verdict(v, t)} |" for n, v, t in worker_rows.ratios(rows)]
    lines += ["", "## Server logs (WARNING and above)", ""]
    lines += [f"    {p}" for p in problems[:20]] or ["none"]
    return "\n".join(lines) + "\n"


def scale_report(rows: scale_rows.ScaleFigures, problems: list[str]) -> str:
    """The scale rows alone (``--only scale``), as Markdown."""
    lines = [*scale_rows.section(rows), "| ratio | value | target | verdict |", "|---|---|---|---|"]
    lines += [f"| {n} | {v:.2f} | {t} | {verdict(v, t)} |" for n, v, t in scale_rows.ratios(rows)]
    lines += ["", "## Server logs (WARNING and above)", ""]
    lines += [f"    {p}" for p in problems[:20]] or ["none"]
    return "\n".join(lines) + "\n"


def topology_report(rows: topology_rows.TopologyFigures | None, problems: list[str]) -> str:
    """The Redis topology rows alone (``--only topology``), as Markdown."""
    lines = [*topology_rows.section(rows), "", "| ratio | value | target | verdict |", "|---|---|---|---|"]
    lines += [f"| {n} | {v:.2f} | {t} | {verdict(v, t)} |" for n, v, t in topology_rows.ratios(rows)]
    lines += ["", "## Server logs (WARNING and above)", ""]
    lines += [f"    {p}" for p in problems[:20]] or ["none"]
    return "\n".join(lines) + "\n"


def _exit_on_sigterm(signum: int, _frame: Any) -> NoReturn:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Set up, measure, report, clean up."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.run", description=__doc__)
    parser.add_argument(
        "--only",
        choices=("workers", "scale", "topology"),
        help="measure these rows only and print them (RESULTS.md is left alone)",
    )
    only = parser.parse_args(argv).only
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    tag = secrets.token_hex(4)
    prefix = f"authsidecar-bench-{tag}:"
    db_name = f"authsidecar_bench_{tag}"
    started = time.monotonic()
    with contextlib.ExitStack() as cleanup:
        log_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="authsidecar-bench-")))
        print(f"database {db_name}, redis prefix {prefix}", flush=True)
        cleanup.callback(infra.drop_database, db_name)
        db_url = infra.create_database(db_name)
        cleanup.callback(infra.purge_redis, prefix)
        env = {"DATABASE_URL": db_url, "REDIS_URL": infra.REDIS_URL, "AUTHSIDECAR_REDIS_KEY_PREFIX": prefix}
        env |= ARGON2_ENV | {"AUTHSIDECAR_SECRET": secrets.token_hex(32), "AUTHSIDECAR_DRAIN_DELAY": "0"}
        limits_env = dict(env)  # the abuse limits at their defaults, as in production
        env |= {"AUTHSIDECAR_RATE_LIMIT_ENABLED": "false"}  # the load generators are one client IP
        serve = [sys.executable, "-m", "authsidecar", "serve"]
        servers: dict[str, infra.ServerProcess] = {}
        for label, name, server_env in (
            (HIT, "cache-on", env),
            (NOCACHE, "cache-off", env | {"AUTHSIDECAR_CACHE_ENABLED": "false"}),
            (METRICS, "metrics-on", env | {"AUTHSIDECAR_METRICS_LISTEN": "127.0.0.1:0"}),
            (LIMITS, "limits-on", limits_env),
        ):
            if only is not None and label != HIT:  # HIT signs the users up
                continue
            servers[label] = srv = infra.ServerProcess.start(name, serve, server_env, log_dir)
            cleanup.callback(srv.stop)
        for srv in servers.values():
            srv.wait_serving()
        tokens, credentials, sample = sign_up_users(servers[HIT].address, tag)
        if only == "workers":
            print(workers_report(*worker_rows.measure_workers(env, tokens, sample, log_dir, run_jobs)))
            return 0
        if only == "scale":
            scale, scale_problems = scale_rows.measure_scales(env, tag, log_dir, run_jobs)
            print(scale_report(scale, scale_problems))
            return 0
        if only == "topology":
            topology, topology_problems = topology_rows.measure_topology(env, tag, log_dir, run_jobs, sign_up_users)
            print(topology_report(topology, topology_problems))
            return 0
        echo_argv = [sys.executable, "-m", "tests.benchmarks.echo_server", "{listen}", sample.hex()]
        echo = infra.ServerProcess.start("echo", echo_argv, {"PYTHONPATH": str(infra.ROOT)}, log_dir)
        cleanup.callback(echo.stop)
        echo.wait_serving()
        limited = servers.pop(LIMITS)
        servers = {ECHO: echo, **servers}
        print(f"servers up; ValidateSessionResponse is {len(sample)} bytes", flush=True)
        figures = measure(servers, tokens, credentials, prefix, limited)
        figures.workers, worker_problems = worker_rows.measure_workers(env, tokens, sample, log_dir, run_jobs)
        figures.scale, scale_problems = scale_rows.measure_scales(env, tag, log_dir, run_jobs)
        figures.local_tier = scale_rows.local_tier_memory()
        figures.topology, topology_problems = topology_rows.measure_topology(env, tag, log_dir, run_jobs, sign_up_users)
        if installed():
            figures.side = side_by_side(f"{db_name}_ba", f"{prefix}ba:", log_dir, cleanup)
        every = [*servers.values(), limited]
        problems = [f"[{srv.name}] exit code {code} after SIGTERM" for srv in every if (code := srv.stop())]
        problems += [f"[{srv.name}] {line}" for srv in every for line in srv.log_problems()]
        text = report(figures, problems + worker_problems + scale_problems + topology_problems)
    print()
    print(text)
    RESULTS.write_text(text)
    print(f"wrote {RESULTS.relative_to(infra.ROOT)} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
