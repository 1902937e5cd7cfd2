"""The grpc.aio server: servicers, health, reflection, listening address, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from authsidecar.transport.grpc.interceptors import CallGuard, tolerant, unimplemented
from authsidecar.transport.grpc.servicers import AuthServicer, SessionServicer
from authsidecar.transport.grpc.tls import TlsFiles, server_credentials
from authsidecar_client.v1 import (
    auth_service_pb2,
    auth_service_pb2_grpc,
    session_service_pb2,
    session_service_pb2_grpc,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

__all__ = ["GrpcServer"]

log = logging.getLogger(__name__)

_SERVICES = (
    auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
    session_service_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
)
MAX_MESSAGE_BYTES = 1 << 20
# Before shutdown, wait at most PICK_UP_LIMIT seconds for the calls grpc core has queued to be picked up; the queue
# counts as empty after QUIET_ROUNDS sleeps of QUIET_ROUND seconds without a new call.
PICK_UP_LIMIT = 1.0
QUIET_ROUNDS = 4
QUIET_ROUND = 0.005


class _Captured:
    """Stands in for the server while generated code registers a servicer, to keep its method handlers."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        """Ignored: the handlers are re-registered from add_registered_method_handlers."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        """Keep the handlers."""
        self.service, self.handlers = service, handlers


def _described(service: str) -> bool:
    """Whether reflection can describe a service (Envoy's ext_authz is served without its own descriptors)."""
    try:
        descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        return False
    return True


def _guarded(name: str, handler: Any, guard: CallGuard) -> Any:
    """A method handler with the guard around its behaviour; only unary RPCs are served, so no kind of handler
    can slip past the guard unwrapped."""
    if handler.request_streaming or handler.response_streaming:
        raise ValueError(f"{name}: only unary RPCs can be served (every call goes through the call guard)")
    behaviour = unimplemented(name, handler.unary_unary) or handler.unary_unary
    return handler._replace(unary_unary=guard.wrap(name, behaviour))


def _register(
    add: Callable[[object, object], None],
    servicer: object,
    server: grpc.aio.Server,
    guard: CallGuard | None,
    fallback: Callable[[], object] | None = None,
    tracer: Tracer | None = None,
) -> frozenset[str]:
    """Register a servicer as the generated ``add_*_to_server`` would, with request deserializers that turn
    malformed bytes into MALFORMED_REQUEST (``fallback``: into that default request, for servicers that are not
    ours) instead of an UNKNOWN status and a logged traceback; with ``guard`` (every service but health), each
    handler inside the call guard; with ``tracer``, each RPC in a server span around it. Returns the method
    names."""
    captured = _Captured()
    add(servicer, captured)
    handlers = {
        name: handler._replace(request_deserializer=tolerant(handler.request_deserializer, fallback))
        for name, handler in captured.handlers.items()
    }
    if guard is not None:
        handlers = {name: _guarded(name, handler, guard) for name, handler in handlers.items()}
    if tracer is not None:  # tracing on: the only time OpenTelemetry is imported
        from authsidecar.transport.grpc.tracing import traced_handlers

        handlers = traced_handlers(captured.service, handlers, tracer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(captured.service, handlers),))
    server.add_registered_method_handlers(captured.service, handlers)  # type: ignore[attr-defined]
    return frozenset(handlers)


def _security(tls: TlsFiles | None) -> str:
    if tls is None:
        return "plaintext"
    return "TLS, client certificates required" if tls.client_ca_file else "TLS"


class GrpcServer:
    """Owns the grpc.aio server and the health status of every service."""

    def __init__(
        self,
        auth: AuthServicer,
        sessions: SessionServicer,
        listen: str,
        reuse_port: bool = False,
        tls: TlsFiles | None = None,
        socket_mode: int = 0o660,
        extra: Sequence[tuple[str, Callable[[Any, Any], None], object]] = (),
        tracer: Tracer | None = None,
        guard: CallGuard | None = None,
    ) -> None:
        self._tls = tls
        self._socket_mode = socket_mode
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 1 if reuse_port else 0),
            ],
        )
        guard = guard or CallGuard()
        self._started = guard.started
        names = _register(
            auth_service_pb2_grpc.add_AuthServiceServicer_to_server, auth, self._server, guard, tracer=tracer
        )
        names |= _register(
            session_service_pb2_grpc.add_SessionServiceServicer_to_server, sessions, self._server, guard, tracer=tracer
        )
        for service, add, servicer in extra:  # plugins' services and Envoy's: the same guard (and spans)
            added = _register(add, servicer, self._server, guard, tracer=tracer)
            if names & added:  # callers' allow lists name RPCs by method: one name, one RPC
                raise ValueError(
                    f"{service} serves {sorted(names & added)[0]}, an RPC name another service already serves"
                    " (callers' allow lists could not tell them apart)"
                )
            names |= added
        self.rpc_names = names  # every RPC behind the guard, by method name (what callers' allow lists name)
        self._services = (*_SERVICES, *(name for name, _, _ in extra))
        self.health = HealthServicer()
        # Health checks answer whatever they are sent (a malformed probe asks for the server's overall status).
        _register(
            health_pb2_grpc.add_HealthServicer_to_server,
            self.health,
            self._server,
            None,
            health_pb2.HealthCheckRequest,
        )
        reflection.enable_server_reflection(
            (
                *(name for name in self._services if _described(name)),
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self._server,
        )
        self.listen = listen
        self.port = 0

    async def start(self) -> None:
        """Bind and start serving; raises OSError when the address cannot be bound."""
        hint = "address already in use, or not available on this host (AUTHSIDECAR_REUSE_PORT=true lets servers share a port)"
        socket = self.listen.removeprefix("unix://") if self.listen.startswith("unix://") else None
        # The socket file is created with the configured mode (no window with the umask's), and set to it again.
        umask = os.umask(0o777 & ~self._socket_mode) if socket else None
        try:
            if self._tls is not None:
                self.port = self._server.add_secure_port(self.listen, server_credentials(self._tls))
            else:
                self.port = self._server.add_insecure_port(self.listen)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self.listen}: {hint}") from exc
        finally:
            if umask is not None:
                os.umask(umask)
        if socket:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(socket, self._socket_mode)
        if self.port == 0 and not self.listen.startswith("unix:"):
            raise OSError(f"cannot listen on {self.listen}: {hint}")
        await self._server.start()
        where = self.listen if self.listen.startswith("unix:") else f"{self.listen.rpartition(':')[0]}:{self.port}"
        log.info("authsidecar listening on %s (%s)", where, _security(self._tls))

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING / NOT_SERVING for the server as a whole and for each service."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self._services):
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        """Stop accepting, let in-flight calls finish within ``grace`` seconds, then cancel the rest."""
        await self.health.enter_graceful_shutdown()
        if grace:
            await self._pick_up_received_calls(min(grace, PICK_UP_LIMIT))
        await self._server.stop(grace)

    async def _pick_up_received_calls(self, within: float) -> None:
        """Wait until every call grpc core has received is in this process's hands, at most ``within`` seconds.

        grpc.aio takes received calls from core one at a time, so under a burst the rest wait in core's queue; and
        core's shutdown cancels whatever is still queued there (the client sees CANCELLED, grpc/grpc#41785) although
        those calls reached the server before it stopped accepting. Core's queue counts as empty once no new call
        has been picked up for QUIET_ROUNDS rounds of the event loop.
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        quiet = 0
        while quiet < QUIET_ROUNDS and loop.time() < end:
            seen = self._started.count
            await asyncio.sleep(QUIET_ROUND)
            quiet = quiet + 1 if self._started.count == seen else 0

    async def wait(self) -> None:
        """Until the server has stopped."""
        await self._server.wait_for_termination()
