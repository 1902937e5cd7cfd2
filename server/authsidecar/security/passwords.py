"""Password hashing (argon2id, or Better Auth's scrypt), off the event loop, with bounded concurrency and
admission control.

Hashing runs in a dedicated thread pool sized to the cores (argon2-cffi and hashlib.scrypt release the GIL). At
most ``max_pending`` hashes are admitted at once; beyond that, callers get TooManyRequests at once instead of
queueing without limit, so a sign-in burst cannot starve session validation or grow latency unboundedly.

Capacity is shared fairly between clients (the end user's IP as the calling service reports it): one client
holds at most ``max_pending_per_client`` admissions (callers without a reported IP share the global bound only),
and waiting hashes are started round-robin by client, so a client flooding sign-ins delays another client's hash
by at most one hash per worker instead of by its whole queue.

New hashes use one scheme (``write_scheme``); both are verified, whatever the write scheme, and a hash of the other
scheme ``needs_rehash``. Better Auth's scrypt: N=16384, r=16, p=1, 64-byte key, the NFKC-normalised password,
stored as ``<salt hex>:<key hex>`` where the 32-character hex salt STRING is the salt. When both schemes are in use
their costs differ (scrypt is about 4x argon2id at the defaults): every verify, including the dummy one for an
unknown email, then lasts as long as the slowest scheme's typical verify, so timing tells neither whether an
account exists nor which scheme it uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import hmac
import re
import secrets
import time
import unicodedata
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from authsidecar.errors import TooManyRequests

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

__all__ = ["Argon2Parameters", "PasswordHasher", "Scheme", "normalize_password", "scheme_of"]

_T = TypeVar("_T")
Scheme = Literal["argon2id", "scrypt"]

_SCRYPT = {"n": 16384, "r": 16, "p": 1, "dklen": 64, "maxmem": 64 * 1024 * 1024}
_SCRYPT_HASH = re.compile(r"[0-9a-f]{32}:[0-9a-f]{128}")
_EWMA = 0.2  # weight of the newest sample in each scheme's typical verify time


def scheme_of(encoded: str) -> Scheme | None:
    """Which scheme made a stored hash; None when it is neither."""
    if encoded.startswith("$argon2"):
        return "argon2id"
    if _SCRYPT_HASH.fullmatch(encoded):
        return "scrypt"
    return None


def _scrypt_key(password: str, salt: str) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt.encode(), **_SCRYPT)


@dataclass(frozen=True, slots=True)
class Argon2Parameters:
    """argon2id cost parameters; the defaults are OWASP's minimum (m=19 MiB, t=2, p=1)."""

    time_cost: int = 2
    memory_kib: int = 19_456
    parallelism: int = 1


def normalize_password(password: str) -> str:
    """NFKC-normalise, so the same password typed on different keyboards/OSes hashes the same."""
    return unicodedata.normalize("NFKC", password)


class PasswordHasher:
    """Hash and verify passwords; all public methods are coroutines that never block the event loop."""

    def __init__(
        self,
        params: Argon2Parameters,
        workers: int,
        max_pending: int,
        write_scheme: Scheme = "argon2id",
        max_pending_per_client: int | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.write_scheme: Scheme = write_scheme
        self._hasher = argon2.PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            hash_len=32,
            salt_len=16,
            type=argon2.Type.ID,
        )
        # What this hasher's own hashes start with; then a 16-byte salt and a 32-byte hash in unpadded base64.
        self._own_prefix = (
            f"$argon2id$v={argon2.low_level.ARGON2_VERSION}"
            f"$m={params.memory_kib},t={params.time_cost},p={params.parallelism}$"
        )
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._workers = workers
        self._max_pending = max_pending
        self._per_client_max = max_pending_per_client or max(workers, max_pending // 4)
        self._pending = 0
        self._by_client: dict[str, int] = {}  # admissions held per client (reported IP; "" = unknown)
        self._busy = 0  # hashes running in the pool
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}  # client -> hashes waiting for a worker
        # The task holding one of this hasher's slots and its client (tasks it spawns inherit the variable but
        # are other tasks).
        self._holder: contextvars.ContextVar[tuple[object, str] | None] = contextvars.ContextVar(
            f"hash_slot_{id(self)}", default=None
        )
        # Verified against when the email is unknown, so both failures cost the same time.
        self._dummy_hash = self._hash_sync(secrets.token_urlsafe(16))
        self._typical: dict[Scheme, float] = {}  # scheme -> typical verify time (seconds)
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.refused = 0  # admissions refused (load shedding), for the metrics
        # With tracing on (``tracer``), every hash and verify, the dummy one included, is a span of the same name
        # and no attributes: a trace tells no more than the timing whether the email was known.
        self.tracer = tracer

    @property
    def pending(self) -> int:
        """Hashes admitted and not finished."""
        return self._pending

    @contextlib.contextmanager
    def admitted(self, client: str = "") -> Iterator[None]:
        """Hold one hashing slot for a whole flow (e.g. sign-in: read, verify, maybe rehash), so excess
        callers are refused before they do any other work. Hashes run inside it take no second slot.
        ``client``: the end user's IP, for the per-client bound and the fair order ("" when unknown)."""
        task = asyncio.current_task()
        held = self._holder.get()
        if task is not None and held is not None and held[0] is task:
            yield
            return
        self._admit(client)
        token = self._holder.set((task, client))
        try:
            yield
        finally:
            self._pending -= 1
            left = self._by_client[client] - 1
            if left:
                self._by_client[client] = left
            else:
                del self._by_client[client]
            self._holder.reset(token)

    def _admit(self, client: str) -> None:
        mine = self._by_client.get(client, 0)
        if self._pending >= self._max_pending or (client and mine >= self._per_client_max):
            self.refused += 1
            raise TooManyRequests(retry_after=0.05 * (self._pending // self._workers + 1))
        self._pending += 1
        self._by_client[client] = mine + 1

    async def _turn(self, client: str) -> None:
        """Wait for a free worker; waiting clients are served round-robin."""
        if self._busy < self._workers and not self._waiting:
            self._busy += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(client, deque()).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # a worker was handed over: hand it on
                self._next_turn()
            raise

    def _next_turn(self) -> None:
        """A worker is free: give it to the next client in turn, else mark it idle."""
        while self._waiting:
            client = next(iter(self._waiting))
            queue = self._waiting.pop(client)
            waiter = queue.popleft()
            if queue:
                self._waiting[client] = queue  # to the back of the round
            if not waiter.done():
                waiter.set_result(None)
                return
        self._busy -= 1

    async def _run(self, operation: str, fn: Callable[..., _T], *args: str) -> _T:
        """``fn(*args)`` in the pool (one slot, waiting for a worker), inside a ``password.<operation>`` span
        when tracing is on."""
        if self.tracer is None:
            return await self._pooled(fn, *args)
        with self.tracer.start_as_current_span(
            f"password.{operation}", record_exception=False, set_status_on_exception=False
        ):
            return await self._pooled(fn, *args)

    async def _pooled(self, fn: Callable[..., _T], *args: str) -> _T:
        with self.admitted():
            held = self._holder.get()
            await self._turn(held[1] if held is not None else "")
            try:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._executor, fn, *args)
            finally:
                self._next_turn()

    async def hash(self, password: str) -> str:
        """A new hash of the (normalised) password, in the write scheme."""
        return await self._run("hash", self._hash_sync, normalize_password(password))

    def _hash_sync(self, password: str) -> str:
        if self.write_scheme == "scrypt":
            salt = secrets.token_hex(16)
            return f"{salt}:{_scrypt_key(password, salt).hex()}"
        return self._hasher.hash(password)

    async def verify(self, encoded: str | None, password: str) -> bool:
        """Whether the password matches; a missing or corrupt hash verifies against a dummy and fails."""
        if encoded is None:
            await self.verify_dummy(password)
            return False
        with self.admitted():
            started = time.perf_counter()
            scheme, ok = await self._run("verify", self._verify_sync, encoded, normalize_password(password))
            await self._even_out(scheme, time.perf_counter() - started)
        return ok

    async def verify_dummy(self, password: str) -> None:
        """Spend a verify's time for an unknown user (timing-safe sign-in)."""
        await self.verify(self._dummy_hash, password)

    async def _even_out(self, scheme: Scheme, elapsed: float) -> None:
        """Learn the scheme's typical time, then wait until the slowest scheme's typical time has passed."""
        previous = self._typical.get(scheme)
        self._typical[scheme] = elapsed if previous is None else previous + _EWMA * (elapsed - previous)
        if len(self._typical) > 1:
            remaining = max(self._typical.values()) - elapsed
            if remaining > 0:
                await self.sleep(remaining)

    def needs_rehash(self, encoded: str) -> bool:
        """True when the hash was made with another scheme than the write scheme, or other argon2 parameters."""
        if scheme_of(encoded) != self.write_scheme:
            return True
        if self.write_scheme == "scrypt":
            return False
        if encoded.startswith(self._own_prefix):  # the usual case, without argon2-cffi's parsing (~50 us)
            salt, _, digest = encoded[len(self._own_prefix) :].partition("$")
            if len(salt) == 22 and len(digest) == 43:
                return False
        try:
            return self._hasher.check_needs_rehash(encoded)
        except (InvalidHashError, ValueError):
            return True

    def _verify_sync(self, encoded: str, password: str) -> tuple[Scheme, bool]:
        scheme = scheme_of(encoded)
        if scheme == "scrypt":
            salt, _, key = encoded.partition(":")
            return scheme, hmac.compare_digest(_scrypt_key(password, salt).hex(), key)
        try:
            return "argon2id", self._hasher.verify(encoded, password)
        except VerifyMismatchError:
            return "argon2id", False
        except (VerificationError, InvalidHashError):
            # Not a usable hash: spend a verify's time all the same, then fail.
            with contextlib.suppress(VerificationError):
                self._verify_sync(self._dummy_hash, password)
            return self.write_scheme, False

    def close(self) -> None:
        """Stop the worker threads without blocking (running hashes finish in the background)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
