"""argon2id password hashing, off the event loop, with bounded concurrency and admission control.

Hashing runs in a dedicated thread pool sized to the cores (argon2-cffi releases the GIL). At most
``max_pending`` hashes are admitted at once; beyond that, callers get TooManyRequests at once instead of
queueing without limit, so a sign-in burst cannot starve session validation or grow latency unboundedly.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import secrets
import unicodedata
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from authsidecar.errors import TooManyRequests

__all__ = ["Argon2Parameters", "PasswordHasher", "normalize_password"]

_T = TypeVar("_T")


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

    def __init__(self, params: Argon2Parameters, workers: int, max_pending: int) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            hash_len=32,
            salt_len=16,
            type=argon2.Type.ID,
        )
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._workers = workers
        self._max_pending = max_pending
        self._pending = 0
        # The task holding one of this hasher's slots (tasks it spawns inherit the variable but are other tasks).
        self._holder: contextvars.ContextVar[object] = contextvars.ContextVar(f"hash_slot_{id(self)}", default=None)
        # Verified against when the email is unknown, so both failures cost the same time.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    @property
    def pending(self) -> int:
        """Hashes admitted and not finished."""
        return self._pending

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """Hold one hashing slot for a whole flow (e.g. sign-in: read, verify, maybe rehash), so excess
        callers are refused before they do any other work. Hashes run inside it take no second slot."""
        task = asyncio.current_task()
        if task is not None and self._holder.get() is task:
            yield
            return
        self._admit()
        token = self._holder.set(task)
        try:
            yield
        finally:
            self._pending -= 1
            self._holder.reset(token)

    def _admit(self) -> None:
        if self._pending >= self._max_pending:
            raise TooManyRequests(retry_after=0.05 * (self._pending // self._workers + 1))
        self._pending += 1

    async def _run(self, fn: Callable[..., _T], *args: str) -> _T:
        with self.admitted():
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, fn, *args)

    async def hash(self, password: str) -> str:
        """An encoded argon2id hash of the (normalised) password."""
        return await self._run(self._hasher.hash, normalize_password(password))

    async def verify(self, encoded: str | None, password: str) -> bool:
        """Whether the password matches; a missing or corrupt hash verifies against a dummy and fails."""
        if encoded is None:
            await self.verify_dummy(password)
            return False
        return await self._run(self._verify_sync, encoded, normalize_password(password))

    async def verify_dummy(self, password: str) -> None:
        """Spend a verify's time for an unknown user (timing-safe sign-in)."""
        await self._run(self._verify_sync, self._dummy_hash, normalize_password(password))

    def needs_rehash(self, encoded: str) -> bool:
        """True when the hash was made with other parameters (or another algorithm) than the current ones."""
        try:
            return self._hasher.check_needs_rehash(encoded)
        except (InvalidHashError, ValueError):
            return True

    def _verify_sync(self, encoded: str, password: str) -> bool:
        try:
            return self._hasher.verify(encoded, password)
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError):
            # Not a usable argon2 hash: spend a verify's time all the same, then fail.
            with contextlib.suppress(VerificationError):
                self._hasher.verify(self._dummy_hash, password)
            return False

    def close(self) -> None:
        """Stop the worker threads without blocking (running hashes finish in the background)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
