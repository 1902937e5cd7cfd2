"""The forward-auth HTTP endpoint (``AUTHSIDECAR_FORWARD_AUTH_LISTEN``): nginx ``auth_request``, Traefik
``forwardAuth``, Caddy ``forward_auth``.

Any method on any path (nginx's subrequest keeps the original method; Traefik and Caddy send GET with
X-Forwarded-*): the request's Authorization / Cookie headers are checked by the gateway and answered

- 200, empty body, with the identity headers (the proxy copies them to the upstream request);
- 401 with ``WWW-Authenticate: Bearer ...`` and a small JSON body: no, a bad, an expired or a revoked session;
- 503 with Retry-After when the session cannot be checked (database or Redis down), 500 on a bug: never 401,
  so an outage is not reported as "signed out", and never 2xx (nginx turns any other status into a 500).

HTTP/1.1 is parsed by h11 over asyncio streams. Bounds: the request head (``MAX_HEAD_BYTES``, else 431), a
request body is read and dropped up to ``MAX_BODY_BYTES`` (else 413), the head must arrive within
``HEAD_TIMEOUT`` seconds of its first byte (a new connection's first request must start within ``HEAD_TIMEOUT``
too) and the next request within ``IDLE_TIMEOUT`` (keep-alive), at most ``max_connections`` connections at once
and never more than a quarter of the open-file limit (when full, the keep-alive connection idle the longest is
closed to make room; else 503). Malformed requests get 400 and the connection is closed; CONNECT gets 405.
Headers and tokens are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
from dataclasses import dataclass
from http import HTTPStatus

import h11

from authsidecar.errors import AuthSidecarError, BackendUnavailable
from authsidecar.observability.logs import begin_request, request_id
from authsidecar.transport.gateway import Gateway, Verdict

__all__ = ["ForwardAuthServer"]

log = logging.getLogger("authsidecar.forward_auth")

MAX_HEAD_BYTES = 32 * 1024
MAX_BODY_BYTES = 64 * 1024
HEAD_TIMEOUT = 10.0
IDLE_TIMEOUT = 75.0  # longer than nginx's and Traefik's idle upstream keep-alive (60 s, 90 s is Traefik's max idle)
_READ_SIZE = 16 * 1024
_SERVER = b"authsidecar"


def _raw(status: int, phrase: bytes, extra: bytes = b"") -> bytes:
    """A complete response that closes the connection, for requests h11 could not parse."""
    return b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\nconnection: close\r\n%s\r\n" % (status, phrase, extra)


_BUSY = _raw(503, b"Service Unavailable", b"retry-after: 1\r\n")
_PHRASES = {400: b"Bad Request", 431: b"Request Header Fields Too Large"}


def _reason(status: int) -> bytes:
    """The standard reason phrase ("Unauthorized"), for people reading the answer with curl."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class _Close(Exception):
    """End this connection (after a raw response, when one was written)."""


@dataclass
class _Metadata:
    """What the request-id logging reads of a call (the X-Request-Id header, as gRPC metadata)."""

    given: str

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        """The caller's request id, when it sent one."""
        return (("x-request-id", self.given),) if self.given else ()


def _within_open_files(wanted: int) -> int:
    """At most a quarter of the process's open-file limit, so a flood of HTTP connections cannot take the
    descriptors the gRPC listener, the database and Redis need."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or wanted <= soft // 4:
        return wanted
    capped = max(soft // 4, 8)
    log.warning("forward-auth: at most %d connections (a quarter of the open-file limit %d)", capped, soft)
    return capped


class _Connection:
    """One client connection: requests one at a time, keep-alive until idle, closed, or the server stops."""

    def __init__(self, server: ForwardAuthServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._server = server
        self._reader = reader
        self._writer = writer
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.busy = False  # between a request's first byte and its response's last
        self.answered = 0  # requests answered on this connection
        self.answering = False  # a whole request head arrived and its answer is not sent yet
        self.idle_since = asyncio.get_running_loop().time()

    def close(self) -> None:
        """Close the transport (an idle connection at shutdown)."""
        self._writer.close()

    async def serve(self) -> None:
        """Answer requests until the client goes away, a request is malformed, or the server stops."""
        try:
            while not self._server.stopping:
                request = await self._request()
                if request is None:
                    return
                await self._answer(request)
                self.answered += 1
                self.answering = False
                self.idle_since = asyncio.get_running_loop().time()
                if self._h11.our_state is not h11.DONE or self._h11.their_state is not h11.DONE:
                    return  # MUST_CLOSE (HTTP/1.0, "connection: close") or an unread body
                self._h11.start_next_cycle()
        except _Close:
            pass
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a bug: this connection ends, the others go on
            log.exception("forward-auth: connection failed (request_id=%s)", request_id())
        finally:
            self.busy = False
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()

    async def _event(self, deadline: float | None) -> object:
        """The next h11 event, reading as needed; the first byte of a request starts the head timeout (``deadline``
        None: waiting for a request, whose head may take at most MAX_HEAD_BYTES)."""
        loop = asyncio.get_running_loop()
        head = deadline is None
        received = 0
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                status = 431 if exc.error_status_hint == 431 else 400
                await self._write_raw(_raw(status, _PHRASES[status]))
                raise _Close() from None
            if head and received > MAX_HEAD_BYTES:  # h11 checks its buffer only while a head is incomplete
                await self._write_raw(_raw(431, _PHRASES[431]))
                raise _Close()
            if event is not h11.NEED_DATA:
                return event
            if deadline is None:  # waiting for a request: until its first byte, the head timeout on a new
                # connection (one that never speaks holds a slot no longer than a slow head), the idle one after
                wait = IDLE_TIMEOUT if self.answered else HEAD_TIMEOUT
                data = await asyncio.wait_for(self._reader.read(_READ_SIZE), wait)
                deadline = loop.time() + HEAD_TIMEOUT
            else:
                data = await asyncio.wait_for(self._reader.read(_READ_SIZE), max(deadline - loop.time(), 0.001))
            if data:
                self.busy = True
                received += len(data)
            self._h11.receive_data(data)

    async def _request(self) -> h11.Request | None:
        """The next request's head and (dropped) body; None when the client closed the connection."""
        self.busy = False
        try:
            event = await self._event(None)
        except TimeoutError:
            if self.busy:  # a head that never completed
                await self._write_raw(_raw(408, b"Request Timeout"))
            return None
        if isinstance(event, h11.ConnectionClosed) or not isinstance(event, h11.Request):
            return None
        self.busy = self.answering = True
        names = {name for name, _ in event.headers}
        if b"content-length" in names and b"transfer-encoding" in names:  # ambiguous framing: request smuggling
            await self._write_raw(_raw(400, _PHRASES[400]))
            raise _Close()
        if self._h11.they_are_waiting_for_100_continue:  # the body is read (and dropped) before the answer
            await self._write_raw(self._h11.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
        deadline = asyncio.get_running_loop().time() + HEAD_TIMEOUT
        received = 0
        while True:
            try:
                part = await self._event(deadline)
            except TimeoutError:
                await self._write_raw(_raw(408, b"Request Timeout"))
                raise _Close() from None
            if isinstance(part, h11.Data):
                received += len(part.data)
                if received > MAX_BODY_BYTES:
                    await self._write_raw(_raw(413, b"Content Too Large"))
                    raise _Close()
            elif isinstance(part, h11.EndOfMessage):
                return event
            else:  # ConnectionClosed in the middle of a body
                return None

    async def _answer(self, request: h11.Request) -> None:
        authorization: list[str] = []
        cookies: list[str] = []
        given_id = ""
        for name, value in request.headers:
            if name == b"authorization":
                authorization.append(value.decode("latin-1"))
            elif name == b"cookie":
                cookies.append(value.decode("latin-1"))
            elif name == b"x-request-id":
                given_id = value.decode("latin-1")
        begin_request("ForwardAuth", _Metadata(given_id))
        if request.method == b"CONNECT":  # a 2xx would turn the connection into a tunnel: not a check to answer
            await self._send(405, [(b"allow", b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")], b"", False)
            raise _Close()
        head = request.method == b"HEAD"
        try:
            verdict = await self._server.gateway.check(authorization, cookies)
        except BackendUnavailable as exc:
            self._server.gateway.checks.count("forward_auth", "unavailable")
            log.warning("forward-auth: cannot check the session: %s", exc.message)
            retry = str(max(1, round(getattr(exc, "retry_after", 1) or 1)))
            await self._send(503, [(b"retry-after", retry.encode())], b"", head)
            return
        except AuthSidecarError as exc:
            self._server.gateway.checks.count("forward_auth", "error")
            log.error("forward-auth: internal error (request_id=%s): %s", request_id(), exc.message)
            await self._send(500, [], b"", head)
            return
        except Exception:
            self._server.gateway.checks.count("forward_auth", "error")
            log.exception("forward-auth: unexpected error (request_id=%s)", request_id())
            await self._send(500, [], b"", head)
            return
        self._server.gateway.checks.count("forward_auth", "allowed" if verdict.allowed else "denied")
        await self._send_verdict(verdict, head)

    async def _send_verdict(self, verdict: Verdict, head: bool) -> None:
        headers = [(name.encode(), value.encode()) for name, value in verdict.headers]
        if verdict.allowed:
            await self._send(200, headers, b"", head)
        else:
            await self._send(401, [*headers, (b"content-type", b"application/json")], verdict.body(), head)

    async def _send(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, head: bool) -> None:
        """One response (no body for HEAD, its length still given); ``connection: close`` once stopping."""
        fields = [
            *headers,
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"server", _SERVER),
        ]
        if self._server.stopping:
            fields.append((b"connection", b"close"))
        try:
            data = self._h11.send(h11.Response(status_code=status, headers=fields, reason=_reason(status)))
            if body and not head:
                data = (data or b"") + (self._h11.send(h11.Data(data=body)) or b"")
            data = (data or b"") + (self._h11.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:  # a header value HTTP cannot carry (a custom id with a line break)
            log.error("forward-auth: a response header could not be encoded (request_id=%s)", request_id())
            await self._write_raw(_raw(500, b"Internal Server Error"))
            raise _Close() from None
        self._writer.write(data)
        await self._writer.drain()

    async def _write_raw(self, data: bytes) -> None:
        with contextlib.suppress(ConnectionError):
            self._writer.write(data)
            await self._writer.drain()


class ForwardAuthServer:
    """The forward-auth listener: started after the gRPC listener, stopped with it."""

    def __init__(self, gateway: Gateway, listen: str, max_connections: int = 1024, reuse_port: bool = False) -> None:
        self.gateway = gateway
        host, _, port = listen.rpartition(":")
        self.host, self.port = host.strip("[]") or "127.0.0.1", int(port)
        self._max = _within_open_files(max_connections)
        self._reuse_port = reuse_port
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self.stopping = False

    async def start(self) -> None:
        """Bind and serve; raises OSError when the address cannot be bound."""
        try:
            self._server = await asyncio.start_server(
                self._accept, self.host, self.port, reuse_port=self._reuse_port or None, backlog=512
            )
        except OSError as exc:
            raise OSError(f"cannot listen on {self.host}:{self.port} (forward-auth): {exc.strerror}") from None
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("forward-auth listening on http://%s:%d", self.host, self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self._max and not self.stopping:
            self._close_longest_idle()
        if len(self._connections) >= self._max or self.stopping:
            with contextlib.suppress(ConnectionError):
                writer.write(_BUSY)
                await writer.drain()
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = asyncio.current_task()
        assert task is not None
        connection = _Connection(self, reader, writer)
        self._connections[task] = connection
        try:
            await connection.serve()
        finally:
            self._connections.pop(task, None)

    def _close_longest_idle(self) -> None:
        """Full: make room by closing the keep-alive connection idle the longest (none mid-request is touched)."""
        idle = [c for c in self._connections.values() if not c.busy]
        if idle:
            oldest = min(idle, key=lambda c: c.idle_since)
            oldest.close()
            self._connections = {task: c for task, c in self._connections.items() if c is not oldest}

    @property
    def open_connections(self) -> int:
        """Connections open now."""
        return len(self._connections)

    async def stop(self, grace: float) -> None:
        """Stop accepting, close connections with no request to answer, let requests in progress finish within ``grace``
        seconds (their responses say ``connection: close``), then cut the rest."""
        if self._server is None:
            return
        self.stopping = True
        self._server.close()
        for connection in list(self._connections.values()):
            if not connection.answering:  # idle, or a head still arriving: nothing to finish
                connection.close()
        pending = set(self._connections)
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace or 0.001)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1)
        self._server = None
