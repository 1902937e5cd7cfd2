"""The scale rows of the benchmark: the same measurements with 1,000 and with 1,000,000 users and sessions.

Each scale gets its own Postgres database (users, their credential accounts and one session each, written with
COPY) and its own Redis database number holding one session-sized document per session, so the key space Redis
searches has that many keys. Measured on each, with the same code and load: ValidateSession p50 on a cache hit and
on a cache miss (a cache-disabled server: the session JOIN user query), both over sessions picked at random across
the whole table (cold index pages included), and SignIn throughput over users picked at random.

The seeded accounts share one argon2id hash (of SEEDED_PASSWORD, with the server's parameters): hashing a million
passwords would take hours and changes nothing that is measured.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import argon2
import asyncpg

from authsidecar.domain.fields import Registry
from authsidecar.storage.schema import Schema
from tests.benchmarks import infra, load

SCALES = (1_000, 1_000_000)
SEEDED_PASSWORD = "scale-bench-password"
SAMPLE_SESSIONS, SAMPLE_USERS = 400, 64
SEQ_CALLS, SIGNIN_SECONDS, SIGNIN_IN_FLIGHT = 1500, 4.0, 8
DOCUMENT_BYTES = 700  # about the size of a signed session document
BATCH = 50_000
HIT, MISS, SIGNIN = "ValidateSession p50, cache hit", "ValidateSession p50, cache miss (SQL)", "SignIn throughput"


@dataclass
class ScaleFigures:
    """Per scale: the p50s (ms), SignIn/s, seeding time (s) and Redis memory (MB)."""

    hit_p50: dict[int, float]
    miss_p50: dict[int, float]
    sign_in_rate: dict[int, float]
    seed_seconds: dict[int, float]
    redis_mb: dict[int, float]


@dataclass
class Seeded:
    """What the measurement needs of a seeded scale: tokens of random sessions, emails of random users."""

    tokens: list[str]
    emails: list[str]


def _ids(n: int, tag: str) -> Iterator[str]:
    for i in range(n):
        yield f"{tag}{i:011d}"  # 32 characters like generated ids, distinct across scales


async def seed_postgres(url: str, n: int, password_hash: str, tag: str) -> Seeded:
    """COPY n users, accounts and sessions; the raw tokens of SAMPLE_SESSIONS random sessions and the emails of
    SAMPLE_USERS random users."""
    schema = Schema(Registry())
    now = datetime.now(UTC)
    expires = now + timedelta(days=30)
    sample_sessions = set(secrets.SystemRandom().sample(range(n), min(SAMPLE_SESSIONS, n)))
    sample_users = secrets.SystemRandom().sample(range(n), min(SAMPLE_USERS, n))
    tokens: list[str] = []

    def user_row(i: int, uid: str) -> dict[str, Any]:
        return {
            "id": uid,
            "name": f"Scale User {i}",
            "email": f"scale-{tag}-{i}@example.com",
            "emailVerified": True,
            "image": None,
            "createdAt": now,
            "updatedAt": now,
        }

    def account_row(i: int, uid: str) -> dict[str, Any]:
        return {
            "id": "a" + uid[1:],
            "accountId": uid,
            "providerId": "credential",
            "userId": uid,
            "password": password_hash,
            "createdAt": now,
            "updatedAt": now,
        }

    def session_row(i: int, uid: str) -> dict[str, Any]:
        if i in sample_sessions:
            raw = secrets.token_urlsafe(32)
            tokens.append(raw)
            stored = hashlib.sha256(raw.encode()).hexdigest()
        else:
            stored = hashlib.sha256(f"{tag}:{i}".encode()).hexdigest()
        return {
            "id": "s" + uid[1:],
            "expiresAt": expires,
            "token": stored,
            "createdAt": now,
            "updatedAt": now,
            "ipAddress": "203.0.113.7",
            "userAgent": "scale-bench/1",
            "userId": uid,
        }

    conn = await asyncpg.connect(url, timeout=10)
    try:
        for table, make in ((schema.user, user_row), (schema.account, account_row), (schema.session, session_row)):
            columns = [c.name for c in table.c]
            ids = _ids(n, tag)
            for start in range(0, n, BATCH):
                records = []
                for i in range(start, min(start + BATCH, n)):
                    row = make(i, next(ids))
                    records.append(tuple(row.get(c) for c in columns))
                await conn.copy_records_to_table(table.name, records=records, columns=columns)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return Seeded(tokens, [f"scale-{tag}-{i}@example.com" for i in sample_users])


def seed_redis(redis_url: str, prefix: str, n: int) -> float:
    """n session-sized documents under the server's key shape, through redis-cli --pipe; Redis's used memory (MB)."""
    host, port, db = _redis_parts(redis_url)
    body = b"x" * DOCUMENT_BYTES

    def commands() -> Iterator[bytes]:
        for i in range(n):
            key = f"{prefix}scale-filler:{hashlib.sha256(str(i).encode()).hexdigest()}".encode()
            yield b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$2\r\nEX\r\n$4\r\n3600\r\n" % (
                len(key),
                key,
                len(body),
                body,
            )

    cli = ["redis-cli", "-h", host, "-p", str(port), "-n", str(db)]
    with subprocess.Popen([*cli, "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL) as pipe:
        assert pipe.stdin is not None
        chunk: list[bytes] = []
        for command in commands():
            chunk.append(command)
            if len(chunk) >= 10_000:
                pipe.stdin.write(b"".join(chunk))
                chunk.clear()
        pipe.stdin.write(b"".join(chunk))
        pipe.stdin.close()
        pipe.wait(timeout=600)
    info = subprocess.run([*cli, "info", "memory"], capture_output=True, text=True, check=True, timeout=30).stdout
    used = next(line for line in info.splitlines() if line.startswith("used_memory:"))
    return int(used.split(":")[1]) / 1e6


def purge_redis_db(redis_url: str, prefix: str) -> None:
    """Remove this run's keys from that Redis database (UNLINK in batches)."""
    host, port, db = _redis_parts(redis_url)
    cli = ["redis-cli", "-h", host, "-p", str(port), "-n", str(db)]
    script = (
        "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('UNLINK', k) n = n + 1 end return n"
    )
    subprocess.run([*cli, "EVAL", script, "0", f"{prefix}*"], capture_output=True, check=False, timeout=300)


def _redis_parts(url: str) -> tuple[str, int, int]:
    rest = url.split("://", 1)[1]
    hostport, _, db = rest.partition("/")
    host, _, port = hostport.partition(":")
    return host or "127.0.0.1", int(port or 6379), int(db or 0)


def _with_db(url: str, db: int) -> str:
    base = url.split("://", 1)[1].partition("/")[0]
    return f"redis://{base}/{db}"


def password_hash(env: dict[str, str]) -> str:
    """The seeded accounts' hash, made with the server's argon2 parameters."""
    hasher = argon2.PasswordHasher(
        time_cost=int(env["AUTHSIDECAR_ARGON2_TIME_COST"]),
        memory_cost=int(env["AUTHSIDECAR_ARGON2_MEMORY_KIB"]),
        parallelism=int(env.get("AUTHSIDECAR_ARGON2_PARALLELISM", "1")),
        hash_len=32,
        salt_len=16,
        type=argon2.Type.ID,
    )
    return hasher.hash(SEEDED_PASSWORD)


def measure_scales(
    env: dict[str, str], tag: str, log_dir: Path, run_jobs: Callable[..., list[Any]]
) -> tuple[ScaleFigures, list[str]]:
    """Seed each scale, measure it, clean it up; the figures and any server log problems."""
    figures = ScaleFigures({}, {}, {}, {}, {})
    problems: list[str] = []
    hashed = password_hash(env)
    serve = [sys.executable, "-m", "authsidecar", "serve"]
    for index, n in enumerate(SCALES):
        db_name = f"authsidecar_scale_{tag}_{n}"
        redis_url = _with_db(infra.REDIS_URL, 14 + index)
        prefix = f"authsidecar-scale-{tag}:"
        print(f"scale {n:,}: seeding Postgres and Redis ...", flush=True)
        started = time.monotonic()
        try:
            db_url = infra.create_database(db_name)
            seeded = asyncio.run(seed_postgres(db_url, n, hashed, f"{tag[:8]}{index}"[:21].ljust(21, "0")))
            figures.redis_mb[n] = seed_redis(redis_url, prefix, n)
            figures.seed_seconds[n] = time.monotonic() - started
            base = env | {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "AUTHSIDECAR_REDIS_KEY_PREFIX": prefix}
            hit = infra.ServerProcess.start(f"scale-{n}-cache-on", serve, base, log_dir)
            miss = infra.ServerProcess.start(
                f"scale-{n}-cache-off", serve, base | {"AUTHSIDECAR_CACHE_ENABLED": "false"}, log_dir
            )
            try:
                hit.wait_serving()
                miss.wait_serving()
                print(f"scale {n:,}: seeded in {figures.seed_seconds[n]:.0f} s; measuring ...", flush=True)
                addresses = {"hit": hit.address, "miss": miss.address}
                (latencies,) = run_jobs(
                    load.sequential, [(addresses, seeded.tokens, len(seeded.tokens), SEQ_CALLS, 3)], timeout=300
                )
                figures.hit_p50[n] = 1e3 * _median(latencies["hit"])
                figures.miss_p50[n] = 1e3 * _median(latencies["miss"])
                credentials = [(email, SEEDED_PASSWORD) for email in seeded.emails]
                (signin,) = run_jobs(
                    load.sign_in_load,
                    [(hit.address, credentials, SIGNIN_IN_FLIGHT, SIGNIN_SECONDS)],
                    timeout=SIGNIN_SECONDS + 60,
                )
                figures.sign_in_rate[n] = signin["outcomes"].get("OK", 0) / signin["s"]
            finally:
                for srv in (hit, miss):
                    if code := srv.stop():
                        problems.append(f"[{srv.name}] exit code {code} after SIGTERM")
                    problems += [f"[{srv.name}] {line}" for line in srv.log_problems()]
        finally:
            purge_redis_db(redis_url, prefix)
            infra.drop_database(db_name)
    return figures, problems


def local_tier_memory(max_entries: int = 100_000) -> tuple[float, float, int]:
    """MB held by the in-process tier (MemorySessionCache, the embedded default and the tier in front of Redis) with
    ``max_entries`` distinct realistic sessions, then after twice as many were put into it; and its final size."""
    import gc
    import tracemalloc

    from authsidecar.cache.memory import MemorySessionCache
    from authsidecar.domain.models import Session, SessionWithUser, User

    now = datetime.now(UTC)

    def entry(i: int) -> SessionWithUser:
        uid, sid = f"{i:032d}", f"s{i:031d}"
        user = User(uid, f"Scale User {i}", f"scale-{i}@example.com", True, None, now, now)
        session = Session(
            sid,
            uid,
            hashlib.sha256(sid.encode()).hexdigest(),
            now + timedelta(days=7),
            now,
            now,
            "203.0.113.7",
            "Mozilla/5.0 (X11; Linux x86_64) scale-bench/1",
        )
        return SessionWithUser(session, user, time.time())

    gc.collect()
    tracemalloc.start()
    cache = MemorySessionCache(max_entries)
    base = tracemalloc.get_traced_memory()[0]
    for i in range(max_entries):
        cache.store(f"session:{i:064x}", entry(i), 3600)
    full = tracemalloc.get_traced_memory()[0] - base
    for i in range(max_entries, 2 * max_entries):
        cache.store(f"session:{i:064x}", entry(i), 3600)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return full / 1e6, after / 1e6, len(cache)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def section(f: ScaleFigures | None) -> list[str]:
    """The Markdown section of the report."""
    if f is None or len(f.hit_p50) < len(SCALES):
        return []
    small, large = SCALES
    return [
        f"## Scale: {small:,} vs {large:,} users and sessions",
        "",
        "Each scale: its own Postgres database (users, credential accounts, one session each, by COPY) and Redis "
        "database (one session-sized document per session); sessions and users picked at random across the table.",
        "",
        f"| measure | {small:,} | {large:,} | ratio |",
        "|---|---|---|---|",
        f"| {HIT} | {f.hit_p50[small]:.3f} ms | {f.hit_p50[large]:.3f} ms | {f.hit_p50[large] / f.hit_p50[small]:.2f} |",
        f"| {MISS} | {f.miss_p50[small]:.3f} ms | {f.miss_p50[large]:.3f} ms | "
        f"{f.miss_p50[large] / f.miss_p50[small]:.2f} |",
        f"| {SIGNIN} | {f.sign_in_rate[small]:.1f}/s | {f.sign_in_rate[large]:.1f}/s | "
        f"{f.sign_in_rate[large] / max(f.sign_in_rate[small], 1e-9):.2f} |",
        f"| seeding (COPY + redis-cli --pipe) | {f.seed_seconds[small]:.1f} s | {f.seed_seconds[large]:.1f} s | - |",
        f"| Redis used memory after seeding | {f.redis_mb[small]:.0f} MB | {f.redis_mb[large]:.0f} MB | - |",
        "",
    ]


def ratios(f: ScaleFigures | None) -> list[tuple[str, float, str]]:
    """(name, value, target) rows for the ratio table."""
    if f is None or len(f.hit_p50) < len(SCALES):
        return []
    small, large = SCALES
    return [
        (f"{HIT}: {large:,} / {small:,}", f.hit_p50[large] / f.hit_p50[small], "<= 1.1"),
        (f"{MISS}: {large:,} / {small:,}", f.miss_p50[large] / f.miss_p50[small], "<= 1.1"),
        (f"{SIGNIN}: {large:,} / {small:,}", f.sign_in_rate[large] / max(f.sign_in_rate[small], 1e-9), ">= 0.9"),
    ]


if __name__ == "__main__":  # a quick look at seeding speed: python -m tests.benchmarks.scale N
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    name = f"authsidecar_scale_try_{secrets.token_hex(3)}"
    url = infra.create_database(name)
    try:
        t0 = time.monotonic()
        env_hash = password_hash({"AUTHSIDECAR_ARGON2_TIME_COST": "1", "AUTHSIDECAR_ARGON2_MEMORY_KIB": "8192"})
        asyncio.run(seed_postgres(url, count, env_hash, "try".ljust(21, "0")))
        print(f"postgres: {count:,} in {time.monotonic() - t0:.1f} s")
        t0 = time.monotonic()
        mb = seed_redis(_with_db(infra.REDIS_URL, 13), "authsidecar-scale-try:", count)
        print(f"redis: {count:,} in {time.monotonic() - t0:.1f} s, used {mb:.0f} MB")
    finally:
        purge_redis_db(_with_db(infra.REDIS_URL, 13), "authsidecar-scale-try:")
        infra.drop_database(name)
    os._exit(0)
