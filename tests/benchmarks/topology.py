"""The Redis topology rows of the benchmark: ValidateSession cache hits served by one Redis server and by a real
three-master Redis Cluster (tests.e2e.redis_topologies.RedisCluster, started from redis-server on free ports and
stopped at the end), from two ``serve`` processes that differ only in REDIS_URL and their key prefix: the same
database, the same settings, AUTHSIDECAR_LOCAL_CACHE_SECONDS=0 (the in-process tier would otherwise answer the hits
and hide the topology). Each server signs its own users up; both validate every user's token, so each Redis holds a
cache document for every token. Sequential latency and max throughput, rounds interleaved across the two targets.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import multiprocessing
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks import infra, load

SINGLE, CLUSTER = "ValidateSession, cache hit, single Redis", "ValidateSession, cache hit, Redis Cluster (3 masters)"
TARGETS = (SINGLE, CLUSTER)
SEQ_WARMUP, SEQ_CALLS, SEQ_ROUNDS = 300, 2000, 4
LOAD_PROCESSES, IN_FLIGHT, SECONDS, ROUNDS = 2, 4, 2.0, 4  # as the ValidateSession rows: 8 in flight, one server
SignUp = Callable[[str, str], tuple[list[str], list[tuple[str, str]], bytes]]


@dataclass
class TopologyFigures:
    """Per target: sequential latencies (s), throughput, errors, server CPU per call; where the cache documents
    were found, and the cluster's keyspace hits during the sequential phase against the cluster calls made."""

    seq: dict[str, list[float]]
    rate: dict[str, float]
    errors: dict[str, int]
    cpu_us: dict[str, float]
    documents: dict[str, str]
    cluster_hits: int
    cluster_calls: int


def session_key(prefix: str, token: str) -> str:
    """The cache document's key for ``token`` (cache/redis.py: ``P{session:<sha256>}``)."""
    return f"{prefix}{{session:{hashlib.sha256(token.encode()).hexdigest()}}}"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1), as run.percentile (which this module cannot import: run imports it)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def measure_topology(
    env: dict[str, str], tag: str, log_dir: Path, run_jobs: Callable[..., list[Any]], sign_up: SignUp
) -> tuple[TopologyFigures | None, list[str]]:
    """Start the cluster and both servers, sign users up through each, load them in interleaved rounds, stop and
    remove everything; the figures (None without redis-server) and the problems seen (exit codes after SIGTERM,
    WARNING lines)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        return None, []
    # Imported here: it brings in pytest and the e2e fixtures' modules, which the other rows do not need.
    from tests.e2e.redis_topologies import RedisCluster

    print("topology: ValidateSession cache hits on single Redis vs a three-master Redis Cluster ...", flush=True)
    started = time.monotonic()
    serve = [sys.executable, "-m", "authsidecar", "serve"]
    prefixes = {SINGLE: f"authsidecar-topology-{tag}-single:", CLUSTER: f"authsidecar-topology-{tag}-cluster:"}
    with contextlib.ExitStack() as cleanup:
        cluster = RedisCluster(log_dir / "redis-cluster")
        cleanup.callback(cluster.stop)  # its keys go with it (no RDB, no AOF)
        cluster.start()
        cleanup.callback(infra.purge_redis, prefixes[SINGLE])
        base = env | {"AUTHSIDECAR_LOCAL_CACHE_SECONDS": "0", "AUTHSIDECAR_RATE_LIMIT_ENABLED": "false"}
        urls = {SINGLE: infra.REDIS_URL, CLUSTER: cluster.url}
        servers: dict[str, infra.ServerProcess] = {}
        for label, name in ((SINGLE, "topology-single"), (CLUSTER, "topology-cluster")):
            server_env = base | {"REDIS_URL": urls[label], "AUTHSIDECAR_REDIS_KEY_PREFIX": prefixes[label]}
            servers[label] = srv = infra.ServerProcess.start(name, serve, server_env, log_dir)
            cleanup.callback(srv.stop)  # before the cluster stops (LIFO)
        for srv in servers.values():
            srv.wait_serving()
        tokens: list[str] = []
        for label, suffix in ((SINGLE, "single"), (CLUSTER, "cluster")):
            tokens += sign_up(servers[label].address, f"{tag}-{suffix}")[0]
        addresses = {label: srv.address for label, srv in servers.items()}

        hits_before = cluster.total("stats", "keyspace_hits")
        (seq,) = run_jobs(load.sequential, [(addresses, tokens, SEQ_WARMUP, SEQ_CALLS, SEQ_ROUNDS)], timeout=120)
        cluster_hits = cluster.total("stats", "keyspace_hits") - hits_before
        cluster_calls = SEQ_WARMUP + len(seq[CLUSTER])

        schedule = list(TARGETS) * ROUNDS
        barrier = multiprocessing.get_context("spawn").Barrier(LOAD_PROCESSES + 1)
        samples: list[dict[str, float]] = []

        def sample_cpu_at_each_phase() -> None:
            for _ in range(len(schedule) + 1):
                barrier.wait(SECONDS + load.BARRIER_TIMEOUT)
                samples.append({label: srv.cpu_seconds() for label, srv in servers.items()})

        args = [(i, addresses, schedule, tokens, IN_FLIGHT, SECONDS, barrier) for i in range(LOAD_PROCESSES)]
        phases = run_jobs(load.throughput, args, timeout=len(schedule) * SECONDS + 90, between=sample_cpu_at_each_phase)
        calls: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        rate = dict.fromkeys(TARGETS, 0.0)
        cpu = dict.fromkeys(TARGETS, 0.0)
        for i, label in enumerate(schedule):
            cpu[label] += samples[i + 1][label] - samples[i][label]
            for worker in phases:
                calls[label] += worker[i]["ok"]
                errors[label] += worker[i]["errors"]
                rate[label] += worker[i]["ok"] / worker[i]["s"] / ROUNDS
        cpu_us = {label: 1e6 * cpu[label] / max(calls[label], 1) for label in TARGETS}

        single_keys = [session_key(prefixes[SINGLE], t) for t in tokens]
        documents = {SINGLE: f"{infra.redis_exists(single_keys)}/{len(tokens)} in the single Redis"}
        wanted = {session_key(prefixes[CLUSTER], t) for t in tokens}
        per_master = [len(wanted.intersection(cluster.keys_on(p, prefixes[CLUSTER] + "*"))) for p in cluster.ports]
        documents[CLUSTER] = (
            f"{sum(per_master)}/{len(tokens)} in the cluster (per master: {' / '.join(map(str, per_master))})"
        )

        problems = [f"[{srv.name}] exit code {code} after SIGTERM" for srv in servers.values() if (code := srv.stop())]
        problems += [f"[{srv.name}] {line}" for srv in servers.values() for line in srv.log_problems()]
    print(f"topology: measured in {time.monotonic() - started:.0f} s", flush=True)
    figures = TopologyFigures(
        seq, rate, {label: errors[label] for label in TARGETS}, cpu_us, documents, cluster_hits, cluster_calls
    )
    return figures, problems


def section(f: TopologyFigures | None) -> list[str]:
    """The Markdown section (no blank line before or after)."""
    lines = ["## Redis topology: single Redis vs Redis Cluster", ""]
    if f is None:
        return [*lines, "not measured: redis-server and redis-cli are not on the PATH"]
    lines += [
        "ValidateSession cache hits from two servers on the same Postgres database, AUTHSIDECAR_LOCAL_CACHE_SECONDS=0 "
        "(every hit is a Redis GET): one on the single Redis server, one on a three-master Redis Cluster (no "
        "replicas) started on this machine for the run. Each server signed up its own users; both validate every "
        f"user's token ({SEQ_WARMUP} warm-up calls first). Sequential: 1 client, {SEQ_CALLS} calls per target in "
        f"{SEQ_ROUNDS} interleaved rounds; throughput: {LOAD_PROCESSES} processes x {IN_FLIGHT} calls in flight, "
        f"{ROUNDS} interleaved rounds of {SECONDS:.0f} s per target. Server CPU/call counts the server process only.",
        "",
        "| target | p50 | p99 | max throughput | server CPU/call | errors |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {label} | {1e3 * percentile(f.seq[label], 0.5):.3f} ms | {1e3 * percentile(f.seq[label], 0.99):.3f} ms | "
        f"{f.rate[label]:,.0f} calls/s | {f.cpu_us[label]:.0f} us | {f.errors[label]} |"
        for label in TARGETS
    ]
    lines += [
        "",
        f"Cache documents present for the validated tokens: {f.documents[SINGLE]}; {f.documents[CLUSTER]}. The "
        f"cluster's keyspace hits (INFO stats, summed over the masters) grew by {f.cluster_hits:,} during the "
        f"{f.cluster_calls:,} sequential calls to the cluster server.",
    ]
    return lines


def ratios(f: TopologyFigures | None) -> list[tuple[str, float, str]]:
    """Rows of the Ratios table."""
    if f is None:
        return []
    p50 = {label: percentile(f.seq[label], 0.5) for label in TARGETS}
    p99 = {label: percentile(f.seq[label], 0.99) for label in TARGETS}
    return [
        ("Redis Cluster / single Redis: cache hit p50", p50[CLUSTER] / p50[SINGLE], "-"),
        ("Redis Cluster / single Redis: cache hit p99", p99[CLUSTER] / p99[SINGLE], "-"),
        ("Redis Cluster / single Redis: cache hit throughput", f.rate[CLUSTER] / max(f.rate[SINGLE], 1e-9), "-"),
    ]
