"""Envoy's external authorization: ``envoy.service.auth.v3.Authorization/Check`` (the ext_authz filter, gRPC).

Envoy sends the downstream request's headers (lower-case names; repeated headers merged, or as ``header_map``
with ``encode_raw_headers``). The answer:

- a session: status OK and an OkHttpResponse whose headers carry the user and session ids, each set with
  OVERWRITE_IF_EXISTS_OR_ADD, so a value the client sent under those names never reaches the upstream;
- no, a bad, an expired or a revoked session: status UNAUTHENTICATED and a DeniedHttpResponse, HTTP 401 with a
  ``WWW-Authenticate: Bearer`` challenge and a small JSON body;
- the session cannot be checked (database or Redis down): no verdict but the call's own gRPC status,
  UNAVAILABLE / BACKEND_UNAVAILABLE (INTERNAL for a bug), so Envoy applies its failure mode
  (``failure_mode_allow: false`` denies with ``status_on_error``, 403 unless set to 503); an outage never looks
  like "unauthenticated" to the client, nor lets a request through.

The server's CallGuard applies as to every RPC (interceptors.py): caller authentication (``Check`` in a caller's
``allow``), request ids, metrics, drain accounting.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import code_pb2, status_pb2

from authsidecar.errors import AuthSidecarError
from authsidecar.transport.gateway import Gateway, Verdict
from authsidecar.transport.grpc.ext_authz import authsidecar_ext_authz_pb2 as authz_pb

__all__ = ["SERVICE_NAME", "EnvoyAuthorizationServicer", "add_to_server"]

# Envoy's service and method; the messages are Envoy's on the wire (ext_authz/authsidecar_ext_authz.proto).
SERVICE_NAME = "envoy.service.auth.v3.Authorization"
_OVERWRITE = authz_pb.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_UNAUTHORIZED = 401

Context = grpc.aio.ServicerContext[Any, Any]


def _credentials(http: Any) -> tuple[list[str], list[str]]:
    """The Authorization and Cookie values of the request Envoy describes."""
    authorization: list[str] = []
    cookies: list[str] = []
    if http.headers:
        for name, value in http.headers.items():
            lowered = name.lower()
            if lowered == "authorization":
                authorization.append(value)
            elif lowered == "cookie":
                cookies.append(value)
    else:  # encode_raw_headers: true
        for header in http.header_map.headers:
            lowered = header.key.lower()
            if lowered in ("authorization", "cookie"):
                value = header.value or header.raw_value.decode("utf-8", "replace")
                (authorization if lowered == "authorization" else cookies).append(value)
    return authorization, cookies


def _header(name: str, value: str) -> authz_pb.HeaderValueOption:
    return authz_pb.HeaderValueOption(header=authz_pb.HeaderValue(key=name, value=value), append_action=_OVERWRITE)


def _lookalikes(http: Any, identity: set[str]) -> list[str]:
    """Request headers that spell an identity header with underscores (``x_authsidecar_user_id``): Envoy lets them
    through by default and many frameworks (CGI/WSGI/Rack/PHP) read them as the real one, so they are removed."""
    names = list(http.headers) if http.headers else [header.key for header in http.header_map.headers]
    return sorted({n for n in names if n.lower() not in identity and n.lower().replace("_", "-") in identity})


def _response(verdict: Verdict, http: Any) -> authz_pb.CheckResponse:
    if verdict.allowed:
        identity = {name.lower() for name, _ in verdict.headers}
        return authz_pb.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=authz_pb.OkHttpResponse(
                headers=[_header(name, value) for name, value in verdict.headers],
                headers_to_remove=_lookalikes(http, identity),
            ),
        )
    headers = [*verdict.headers, ("content-type", "application/json"), ("cache-control", "no-store")]
    return authz_pb.CheckResponse(
        status=status_pb2.Status(code=code_pb2.UNAUTHENTICATED, message=verdict.message),
        denied_response=authz_pb.DeniedHttpResponse(
            status=authz_pb.HttpStatus(code=_UNAUTHORIZED),
            headers=[_header(name, value) for name, value in headers],
            body=verdict.body().decode(),
        ),
    )


class EnvoyAuthorizationServicer:
    """envoy.service.auth.v3.Authorization."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def Check(self, request: authz_pb.CheckRequest, context: Context) -> authz_pb.CheckResponse:
        """Allow (identity headers) or deny (401) the request Envoy describes; UNAVAILABLE when it cannot tell."""
        http = request.attributes.request.http
        authorization, cookies = _credentials(http)
        try:
            verdict = await self._gateway.check(authorization, cookies)
        except AuthSidecarError as exc:
            self._gateway.checks.count("envoy", "unavailable" if exc.reason == "BACKEND_UNAVAILABLE" else "error")
            raise
        self._gateway.checks.count("envoy", "allowed" if verdict.allowed else "denied")
        return _response(verdict, http)


def add_to_server(servicer: EnvoyAuthorizationServicer, server: Any) -> None:
    """Register ``Check`` under Envoy's method path (what generated ``add_*_to_server`` functions do)."""
    handler = grpc.unary_unary_rpc_method_handler(
        servicer.Check,
        request_deserializer=authz_pb.CheckRequest.FromString,
        response_serializer=authz_pb.CheckResponse.SerializeToString,
    )
    server.add_registered_method_handlers(SERVICE_NAME, {"Check": handler})
