"""The background delivery queue: jobs run off the request path, with retries, logged and counted.

A job is a coroutine function that prepares a message (it may read or write the database, e.g. to issue a
token) and returns it, or None when there is nothing to send (e.g. unknown address). Preparing is not retried;
sending is, with exponential back-off. Nothing fails silently: every drop or final failure is logged (without
the token) and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from authsidecar.delivery.messages import Message
from authsidecar.delivery.senders import Sender

__all__ = ["DeliveryQueue", "Job"]

log = logging.getLogger("authsidecar.delivery")

Job = Callable[[], Awaitable[Message | None]]


class DeliveryQueue:
    """A bounded queue drained by one worker task."""

    def __init__(self, sender: Sender, max_size: int = 10_000, attempts: int = 4, backoff: float = 0.5) -> None:
        self._sender = sender
        self._queue: asyncio.Queue[Job] = asyncio.Queue(max_size)
        self._attempts = attempts
        self._backoff = backoff
        self._worker: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    @property
    def size(self) -> int:
        """Messages waiting to be sent."""
        return self._queue.qsize()

    def submit(self, job: Job) -> None:
        """Queue a job; never blocks or raises (a full queue drops the job, logged and counted)."""
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("delivery queue full: a message was dropped (%d so far)", self.dropped)

    def submit_message(self, message: Message) -> None:
        """Queue a message that is already prepared."""

        async def prepared() -> Message:
            return message

        self.submit(prepared)

    def start(self) -> None:
        """Start the worker."""
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="delivery")

    async def drain(self) -> None:
        """Wait until every queued job has been handled."""
        await self._queue.join()

    async def stop(self, grace: float) -> None:
        """Finish queued jobs within ``grace`` seconds, then stop."""
        if self._worker is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), grace)
        if self._queue.qsize():
            log.error("delivery: %d queued messages not sent at shutdown", self._queue.qsize())
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        self._worker = None
        await self._sender.close()

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._handle(job)
            except Exception:  # never let one job kill the worker
                self.failed += 1
                log.exception("delivery: preparing a message failed")
            finally:
                self._queue.task_done()

    async def _handle(self, job: Job) -> None:
        message = await job()
        if message is None:
            return
        for attempt in range(1, self._attempts + 1):
            try:
                await self._sender.send(message)
            except Exception as exc:
                if attempt == self._attempts:
                    self.failed += 1
                    log.error(
                        "delivery: %s message for user %s failed after %d attempts: %s",
                        message.purpose,
                        message.user_id,
                        attempt,
                        exc,
                    )
                    return
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            else:
                self.sent += 1
                return
