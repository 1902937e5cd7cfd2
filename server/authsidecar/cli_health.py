"""``authsidecar health``: ask the local server's gRPC health service whether it serves (container health checks).

It reads the same settings as ``serve`` (so it needs nothing but the container's environment), connects to the
listen address (a wildcard host becomes the loopback address), over TLS when the listener has a certificate
(trusting that certificate; ``--server-name`` when its names do not cover the address; ``--client-cert`` and
``--client-key`` when the listener requires client certificates), and exits 0 on SERVING, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsidecar.config import Settings

__all__ = ["add_health_command", "run_health"]

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}  # noqa: S104 - mapped away from, not bound


def add_health_command(sub: Any) -> None:
    """Register ``health`` on the ``authsidecar`` sub-command parser."""
    health = sub.add_parser("health", help="exit 0 if the server on the listen address is SERVING (health checks)")
    health.add_argument("--address", help="host:port or unix:///path (default: AUTHSIDECAR_LISTEN)")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default 3)")
    health.add_argument("--server-name", help="TLS: the name to expect in the listener's certificate")
    health.add_argument("--client-cert", help="TLS: PEM client certificate, when the listener requires one")
    health.add_argument("--client-key", help="TLS: PEM key of --client-cert")


def target_of(listen: str) -> str:
    """A dialable target for a listen address: a wildcard host becomes the loopback address."""
    if listen.startswith("unix://"):
        return listen
    host, _, port = listen.rpartition(":")
    return f"{_WILDCARDS.get(host, host)}:{port}"


def _channel(settings: Settings, args: argparse.Namespace, target: str) -> grpc.Channel:
    if not settings.tls_cert_file:
        return grpc.insecure_channel(target)
    key = Path(args.client_key).read_bytes() if args.client_key else None
    chain = Path(args.client_cert).read_bytes() if args.client_cert else None
    credentials = grpc.ssl_channel_credentials(Path(settings.tls_cert_file).read_bytes(), key, chain)
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(target, credentials, options=options)


def run_health(settings: Settings, args: argparse.Namespace) -> int:
    """Check the server's overall health; print one line; 0 when SERVING, 1 otherwise."""
    target = args.address or target_of(settings.listen)
    try:
        with _channel(settings, args, target) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=args.timeout)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        print(
            f"authsidecar health: {target}: {code.name if code else 'error'}: {exc.details() if isinstance(exc, grpc.Call) else exc}",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(f"authsidecar health: {exc}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(f"{target}: {status}")
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1
