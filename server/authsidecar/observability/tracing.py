"""Whether to trace, read from the standard OpenTelemetry variables; the SDK is loaded only when it is on.

Tracing is on when an OTLP endpoint is configured: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or else
``OTEL_EXPORTER_OTLP_ENDPOINT`` (``http://host:4317`` plaintext, ``https://...`` TLS), unless
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. Everything else (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_BSP_*``, ``OTEL_EXPORTER_OTLP_HEADERS``,
``_CERTIFICATE``, ``_TIMEOUT``, ``_COMPRESSION``, ``OTEL_PROPAGATORS``) is read by the SDK itself.

This module imports nothing from OpenTelemetry: with no endpoint, the SDK is never imported and nothing is
added to any call (the server registers its handlers untouched and no port is wrapped).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from authsidecar.observability.otel import Tracing

__all__ = ["otlp_endpoint", "start_tracing"]

_TRUE = ("true", "1", "yes", "on")


def _get(environ: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """The first of ``names`` set to a non-blank value, and that value."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def otlp_endpoint(environ: Mapping[str, str] = os.environ) -> str | None:
    """The OTLP/gRPC endpoint spans go to, or None when tracing is off.

    Raises ValueError (naming the variable) for a configuration that cannot work: another protocol or exporter
    than OTLP over gRPC (the only one shipped), or an endpoint that is not ``http(s)://host[:port]``.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return None
    exporter = _get(environ, "OTEL_TRACES_EXPORTER")
    if exporter is not None and exporter[1].lower() == "none":
        return None
    found = _get(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    if found is None:
        return None
    name, endpoint = found
    if exporter is not None and exporter[1].lower() != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER: {exporter[1]!r} is not available; use otlp (gRPC) or none")
    protocol = _get(environ, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol is not None and protocol[1] != "grpc":
        raise ValueError(
            f"{protocol[0]}: {protocol[1]!r} is not available; spans are sent with OTLP over gRPC"
            " (grpc, usually port 4317)"
        )
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        raise ValueError(f"{name}: not a URL (expected http://host:4317 or https://host:4317)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name}: expected http://host:4317 (plaintext) or https://host:4317 (TLS)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"{name}: an OTLP/gRPC endpoint has no path (http://host:4317); /v1/traces is OTLP/HTTP's, not available"
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port or 4317}"


def start_tracing(version: str, environ: Mapping[str, str] = os.environ) -> Tracing | None:
    """The tracer provider and its OTLP exporter when an endpoint is configured (imports the SDK), else None.

    Raises ValueError as ``otlp_endpoint`` does.
    """
    endpoint = otlp_endpoint(environ)
    if endpoint is None:
        return None
    try:
        from authsidecar.observability.otel import Tracing  # the SDK is imported only now
    except ImportError as exc:
        # Seen: xds-protos (Envoy's protos) carries an old copy of opentelemetry.proto that overwrites
        # opentelemetry-proto's when both are installed (the project keeps it out of the virtualenv).
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT: tracing cannot start, OpenTelemetry does not import ({exc}); reinstall"
            " opentelemetry-proto, opentelemetry-sdk and opentelemetry-exporter-otlp-proto-grpc"
            " (pip install --force-reinstall --no-deps opentelemetry-proto==<its locked version>)"
        ) from None
    return Tracing(endpoint, version)
