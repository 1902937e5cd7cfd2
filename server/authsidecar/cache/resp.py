"""A minimal pipelined Redis client for the hot path's single GET (and the session write's script).

redis-py's asyncio client spends far more CPU per command (connection pool checkout, retry wrapper,
observability hooks) than the GET itself; on ValidateSession that overhead is most of the server's work on a
cache hit. This client keeps ONE connection per process and pipelines every command on it: replies come back in
order, so each caller just awaits the next future in a FIFO. A caller that times out leaves its future behind
(a late reply is consumed and dropped) and retires the connection: new calls open another, and it closes once the
calls already sent had their time. Any connection error fails every waiter, and the next call reconnects.

It only speaks what it needs: AUTH / SELECT at connect, then GET, and single commands through ``call`` (the
session cache's put script, a sign-in's only Redis write). URLs are parsed by redis-py (redis://, rediss://,
unix://). Everything else (MULTI, pipelines, scans, script loading) goes through redis-py.

Behind Sentinel, ``locate`` names the current primary on every (re)connect, and the handshake's ROLE must say
``master`` (a stale answer naming a replica is refused). A failover is followed within ``recheck`` seconds: a
background task asks ``locate`` again and retires a connection to any other server (new calls reconnect; calls
already sent get their answers, then it closes). A demoted server also closes its clients (Sentinel's CLIENT
KILL), which is followed at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, cast

import hiredis
from redis.asyncio.connection import parse_url
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

__all__ = ["HotGetter", "PipelinedGetClient", "run_script"]


class HotGetter(Protocol):
    """What the hot path needs of a GET client (PipelinedGetClient; cluster_get.SlotRoutedGetClient)."""

    async def get(self, key: str) -> bytes | None:
        """The value of ``key`` or None."""

    async def get_many(self, *keys: str) -> list[bytes | None]:
        """The values of several keys."""

    async def close(self) -> None:
        """Close its connections."""


def _encode(*args: bytes) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.address: tuple[str, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                waiter = self._waiters.popleft()
                if waiter.done():
                    continue  # its caller timed out
                if isinstance(reply, hiredis.ReplyError):
                    waiter.set_exception(ResponseError(str(reply)))
                else:
                    waiter.set_result(reply)
            if self.closed and not self._waiters and self.transport is not None:
                self.transport.close()  # retired, and the last answer is in
        except (hiredis.ProtocolError, IndexError) as exc:  # out of sync: drop the connection
            self._fail(RedisConnectionError(f"protocol error: {exc}"))
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError("connection to Redis lost"))

    def _fail(self, error: Exception) -> None:
        self.closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def retire(self) -> None:
        """Take no new calls; close once the calls already sent are answered."""
        self.closed = True
        if not self._waiters and self.transport is not None:
            self.transport.close()

    def send(self, payload: bytes) -> asyncio.Future[Any]:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise RedisConnectionError("connection to Redis is closed")
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.transport.write(payload)
        return waiter


class PipelinedGetClient:
    """GET (and single commands) over one pipelined connection, (re)connected on demand."""

    def __init__(
        self,
        url: str,
        timeout: float,
        locate: Callable[[], Awaitable[tuple[str, int]]] | None = None,
        recheck: float = 1.0,
    ) -> None:
        self._options: dict[str, Any] = dict(parse_url(url))  # raises ValueError on a malformed URL
        self._timeout = timeout
        self._locate = locate
        self._recheck = recheck
        self._watcher: asyncio.Task[None] | None = None
        self._protocol: _Protocol | None = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        """Whether its connection is open."""
        return self._protocol is not None and not self._protocol.closed

    async def get(self, key: str) -> bytes | None:
        """The value of ``key`` or None; raises redis-py's ConnectionError / ResponseError, or TimeoutError."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        value = await self._answer(protocol, protocol.send(_encode(b"GET", key.encode())))
        assert value is None or isinstance(value, bytes)
        return value

    async def call(self, *args: bytes | str | int) -> Any:
        """One command's reply (an error reply raises ResponseError; as ``get`` for the connection's errors)."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        payload = _encode(*(a if isinstance(a, bytes) else str(a).encode() for a in args))
        return await self._answer(protocol, protocol.send(payload))

    async def _answer(self, protocol: _Protocol, waiter: asyncio.Future[Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await waiter
        except TimeoutError:
            self._stalled(protocol)
            raise

    def _stalled(self, protocol: _Protocol) -> None:
        """No answer in time, or the primary moved: new calls open another connection; this one closes once the
        calls already sent had their time (a connection dead without a FIN or RST, a lost NAT entry say, would
        otherwise time out every call until the kernel gives up on it)."""
        protocol.retire()
        if protocol.transport is not None:
            asyncio.get_running_loop().call_later(self._timeout, protocol.transport.close)

    async def get_many(self, *keys: str) -> list[bytes | None]:
        """The values of several keys, pipelined: one round trip."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        waiters = [protocol.send(_encode(b"GET", key.encode())) for key in keys]
        try:
            async with asyncio.timeout(self._timeout):
                values = [await waiter for waiter in waiters]
        except BaseException as exc:
            if isinstance(exc, TimeoutError):
                self._stalled(protocol)
            for waiter in waiters:  # the others' errors are the same one: seen here, not reported as unretrieved
                if waiter.done() and not waiter.cancelled():
                    waiter.exception()
            raise
        assert all(value is None or isinstance(value, bytes) for value in values)
        return values

    async def _connect(self) -> _Protocol:
        async with self._lock:  # one connect at a time; later callers reuse its connection
            if self._protocol is None or self._protocol.closed:
                self._protocol = await self._open()
                if self._locate is not None and self._watcher is None:
                    self._watcher = asyncio.create_task(self._watch(), name="redis-primary-watch")
            return self._protocol

    async def _watch(self) -> None:
        """Sentinel: every ``recheck`` seconds, retire the connection if the primary is now another server."""
        assert self._locate is not None
        while True:
            await asyncio.sleep(self._recheck)
            protocol = self._protocol
            if protocol is None or protocol.closed:
                continue
            try:
                async with asyncio.timeout(self._timeout):
                    address = await self._locate()
            except Exception:  # noqa: S112 - the sentinels are unreachable: keep what works, ask again later
                continue
            if protocol.address is not None and address != protocol.address:
                self._stalled(protocol)

    async def _open(self) -> _Protocol:
        o = self._options
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                if "path" in o:
                    _, protocol = await loop.create_unix_connection(_Protocol, o["path"])
                else:
                    context = None
                    if o.get("connection_class") is not None and "SSL" in o["connection_class"].__name__:
                        # The context redis-py's own connection builds from the same URL options and with its
                        # defaults (verification required, hostname checked): the same TLS as its clients.
                        settings = {k: v for k, v in o.items() if k != "connection_class"}
                        context = o["connection_class"](**settings).ssl_context.get()
                    host, port = o.get("host", "localhost"), o.get("port", 6379)
                    if self._locate is not None:
                        host, port = await self._locate()
                    _, protocol = await loop.create_connection(_Protocol, host, port, ssl=context)
                    protocol.address = (host, port)
                try:
                    await self._handshake(protocol)
                except BaseException:
                    if protocol.transport is not None:
                        protocol.transport.close()
                    raise
        except OSError as exc:
            why = exc.strerror or str(exc) or ("timed out" if isinstance(exc, TimeoutError) else type(exc).__name__)
            raise RedisConnectionError(f"cannot connect to Redis: {why}") from exc
        return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        o = self._options
        handshake: list[asyncio.Future[Any]] = []
        if o.get("password"):
            creds = [o["username"].encode()] if o.get("username") else []
            handshake.append(protocol.send(_encode(b"AUTH", *creds, o["password"].encode())))
        if int(o.get("db") or 0):
            handshake.append(protocol.send(_encode(b"SELECT", str(int(o["db"])).encode())))
        if self._locate is not None:
            handshake.append(protocol.send(_encode(b"ROLE")))
        for reply in handshake:
            await reply
        if self._locate is not None:
            role = await handshake[-1]
            if not role or role[0] != b"master":
                raise RedisConnectionError("the server the sentinels named is not the primary (a failover under way)")

    async def close(self) -> None:
        """Close the connection (and stop watching the primary)."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


async def run_script(
    client: HotGetter | None, script: AsyncScript, keys: Sequence[str], args: Sequence[bytes | str | int]
) -> Any:
    """``script``'s reply: EVALSHA over ``client``'s pipelined connection when it is a PipelinedGetClient (one
    server, or Sentinel's primary), else through redis-py, which also loads a script the server does not have."""
    if isinstance(client, PipelinedGetClient):
        try:
            return await client.call(b"EVALSHA", script.sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
    return await script(keys=list(keys), args=list(args))
