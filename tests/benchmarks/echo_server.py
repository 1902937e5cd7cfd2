"""The floor: a bare grpc.aio server whose ValidateSession returns a prebuilt response and does nothing else.

Run as ``python -m tests.benchmarks.echo_server HOST:PORT RESPONSE_HEX`` where RESPONSE_HEX is a serialized
ValidateSessionResponse captured from the real server (so both reply with messages of the same size). It uses the
same event loop (uvloop) and server options as the real server, and serves grpc.health.v1 for readiness.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from authsidecar_client.v1 import session_service_pb2, session_service_pb2_grpc


class EchoSessionServicer(session_service_pb2_grpc.SessionServiceServicer):
    """ValidateSession answers with the same prebuilt message every time."""

    def __init__(self, response: session_service_pb2.ValidateSessionResponse) -> None:
        self._response = response

    async def ValidateSession(
        self, request: session_service_pb2.ValidateSessionRequest, context: Any
    ) -> session_service_pb2.ValidateSessionResponse:
        """No lookup, no checks: the cost of the gRPC stack alone."""
        return self._response


async def serve(listen: str, response: session_service_pb2.ValidateSessionResponse) -> None:
    """Serve until SIGTERM/SIGINT."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 1 << 20), ("grpc.so_reuseport", 1)])
    session_service_pb2_grpc.add_SessionServiceServicer_to_server(EchoSessionServicer(response), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(listen) == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main() -> None:
    """Parse argv, install uvloop (as authsidecar's CLI does) and serve."""
    listen, response_hex = sys.argv[1], sys.argv[2]
    response = session_service_pb2.ValidateSessionResponse.FromString(bytes.fromhex(response_hex))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the real server would run on asyncio's loop too
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(serve(listen, response))


if __name__ == "__main__":
    main()
