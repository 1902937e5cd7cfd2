"""What every RPC goes through, put around each handler when its service is registered (server.py).

Every service this server serves - AuthService, SessionService, a plugin's, Envoy's Check - is registered through
``GrpcServer``, which wraps each of its handlers with ``CallGuard.wrap``; a servicer has nothing to opt into and
nothing it can forget. In order, for each call:

1. drain accounting (``CallGuard.started``) and the request id of the call's log lines;
2. caller authentication: with callers configured, the call's service key or client certificate must name a
   caller whose ``allow`` list holds the RPC (CALLER_NOT_AUTHENTICATED / CALLER_NOT_ALLOWED otherwise);
3. a request that did not decode (``tolerant`` deserializer) is refused: INVALID_ARGUMENT / MALFORMED_REQUEST;
4. the hook context of the call (RPC, client IP and user agent), when hooks or events read it;
5. the handler; a domain error becomes its status with ErrorInfo (status.py, the only mapping), anything else
   INTERNAL with a request id that is logged with the traceback and never sent to the client;
6. per-RPC metrics when they are on.

Why a wrapper built at registration rather than a ``grpc.aio.ServerInterceptor``: an aio interceptor runs per call
before the handler exists and sees only the method name and metadata, not the peer's TLS identity (needed for
callers recognised by client certificate) nor the context to abort with; wrapping the handler once gives both, and
costs one Python call per RPC, the same as the per-method decorator it replaces. Health and reflection are not
guarded: load balancers probe health without a key, and reflection describes the API, nothing of its data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from authsidecar import errors
from authsidecar.hooks.context import begin_call
from authsidecar.observability.logs import begin_request, request_id
from authsidecar.observability.metrics import RpcMetrics
from authsidecar.transport.grpc.callers import CallerPolicy
from authsidecar.transport.grpc.status import grpc_code, to_status

__all__ = ["MALFORMED", "Behaviour", "CallGuard", "Started", "tolerant", "unimplemented"]

log = logging.getLogger("authsidecar.rpc")

# A unary handler's behaviour: (request, context) -> response.
Behaviour = Callable[[Any, Any], Awaitable[Any]]


class Started:
    """How many RPC handlers a server has started: the drain waits until it stops moving, i.e. until grpc core
    holds no received call that was not picked up."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class _Malformed:
    """What a request deserializer returns for bytes that are not a message of its type."""


MALFORMED: Any = _Malformed()


def tolerant(deserializer: Callable[[bytes], Any], fallback: Callable[[], Any] | None = None) -> Callable[[bytes], Any]:
    """A request deserializer that returns MALFORMED (or ``fallback()``) instead of raising (grpc would answer
    UNKNOWN without details and log a traceback each time); the guard then answers INVALID_ARGUMENT /
    MALFORMED_REQUEST."""

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return MALFORMED if fallback is None else fallback()

    return deserialize


def unimplemented(name: str, behaviour: Behaviour) -> Behaviour | None:
    """For a servicer method that is the generated base class's stub (the servicer does not override it), a
    behaviour answering UNIMPLEMENTED, as grpc would; None for a method of the servicer's own. Decided once, at
    registration: a NotImplementedError raised by real code stays an INTERNAL error with a request id."""
    function = getattr(behaviour, "__func__", None)
    if function is None or not function.__module__.endswith("_pb2_grpc"):
        return None

    async def stub(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented by this server")

    return stub


@dataclass(frozen=True, slots=True)
class CallGuard:
    """The cross-cutting steps of every RPC (module docstring), chosen once by the composition root: ``callers``
    (caller authentication, if configured), ``metrics`` (per-RPC statistics, if metrics are on), ``track_calls``
    (hooks or events read the call's context). ``started`` counts the calls begun, for the drain."""

    callers: CallerPolicy | None = None
    metrics: RpcMetrics | None = None
    track_calls: bool = False
    started: Started = field(default_factory=Started)

    def wrap(self, name: str, behaviour: Behaviour) -> Behaviour:
        """``behaviour`` (a servicer's bound method) for the RPC ``name``, guarded."""
        callers = self.callers if self.callers is not None and self.callers.enabled else None
        metrics, track_calls, count = self.metrics, self.track_calls, self.started

        async def guarded(request: Any, context: Any) -> Any:
            count.count += 1
            begin_request(name, context)
            started = time.perf_counter() if metrics is not None else 0.0
            code = "OK"
            try:
                if callers is not None:
                    callers.authorize(name, context.invocation_metadata() or (), context.auth_context() or {})
                if request is MALFORMED:
                    log.info("%s: refused a request that is not a valid %sRequest message", name, name)
                    raise errors.MalformedRequest()
                if track_calls:  # hooks read the call's context
                    client = getattr(request, "client", None)
                    begin_call(name, getattr(client, "ip_address", None), getattr(client, "user_agent", None))
                return await behaviour(request, context)
            except grpc.aio.AbortError:
                code = "ABORTED"
                raise
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except errors.AuthSidecarError as exc:
                metadata = None
                code = grpc_code(exc).name
                if code == "INTERNAL":
                    metadata = {"request_id": request_id()}
                    log.error("internal error in %s (request_id=%s): %s", name, metadata["request_id"], exc)
                await context.abort_with_status(to_status(exc, metadata))
                raise  # pragma: no cover
            except Exception:
                code = "INTERNAL"
                rid = request_id()
                log.exception("unexpected error in %s (request_id=%s)", name, rid)
                internal = errors.AuthSidecarError("internal error; quote request_id " + rid)
                await context.abort_with_status(to_status(internal, {"request_id": rid}))
                raise  # pragma: no cover
            finally:
                if metrics is not None:
                    metrics.record(name, code, started)

        guarded.__name__ = name
        guarded.__qualname__ = name
        guarded.__doc__ = behaviour.__doc__
        return guarded
