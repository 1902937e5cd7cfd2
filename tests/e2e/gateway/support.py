"""Helpers of the gateway tests: Envoy's Check through xds-protos' stubs, plain HTTP to the forward-auth endpoint."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from dataclasses import dataclass

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc

USER_HEADER = "x-authsidecar-user-id"
SESSION_HEADER = "x-authsidecar-session-id"
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def check_request(
    headers: dict[str, str], path: str = "/orders/7", method: str = "GET"
) -> external_auth_pb2.CheckRequest:
    """What Envoy's ext_authz filter sends: the downstream request, header names lower-cased (repeated headers
    merged), pseudo-headers included."""
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        id="1234", method=method, path=path, host="app.example.com", scheme="https", protocol="HTTP/1.1"
    )
    http.headers.update(
        {":authority": "app.example.com", ":method": method, ":path": path, "user-agent": "curl/8", **headers}
    )
    attributes = attribute_context_pb2.AttributeContext(
        request=attribute_context_pb2.AttributeContext.Request(http=http)
    )
    return external_auth_pb2.CheckRequest(attributes=attributes)


def raw_check_request(headers: list[tuple[str, str]]) -> external_auth_pb2.CheckRequest:
    """Envoy with ``encode_raw_headers: true``: every header as it came, values as bytes in ``header_map``."""
    http = attribute_context_pb2.AttributeContext.HttpRequest(id="1", method="GET", path="/", host="a")
    for key, value in headers:
        http.header_map.headers.add(key=key, raw_value=value.encode())
    attributes = attribute_context_pb2.AttributeContext(
        request=attribute_context_pb2.AttributeContext.Request(http=http)
    )
    return external_auth_pb2.CheckRequest(attributes=attributes)


def authorization_stub(channel: grpc.aio.Channel) -> external_auth_pb2_grpc.AuthorizationStub:
    """envoy.service.auth.v3.Authorization over ``channel``."""
    return external_auth_pb2_grpc.AuthorizationStub(channel)


def ok_headers(reply: external_auth_pb2.CheckResponse) -> dict[str, str]:
    """The headers of an OK answer; every one must be set with overwrite semantics."""
    assert reply.status.code == 0, reply
    assert reply.WhichOneof("http_response") == "ok_response", reply
    headers = {}
    for option in reply.ok_response.headers:
        assert option.append_action == OVERWRITE, option
        assert not option.HasField("append"), option
        headers[option.header.key] = option.header.value
    return headers


def denial(reply: external_auth_pb2.CheckResponse) -> tuple[int, dict[str, str], dict[str, str]]:
    """(HTTP status, headers, JSON body) of a denial."""
    assert reply.status.code == grpc.StatusCode.UNAUTHENTICATED.value[0], reply
    assert reply.WhichOneof("http_response") == "denied_response", reply
    denied = reply.denied_response
    return denied.status.code, {o.header.key: o.header.value for o in denied.headers}, json.loads(denied.body)


@dataclass
class HttpReply:
    """What http.client saw."""

    status: int
    headers: dict[str, str]
    body: bytes


def http_request(
    port: int,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    path: str = "/",
    body: bytes | None = None,
    connection: http.client.HTTPConnection | None = None,
) -> HttpReply:
    """One request to 127.0.0.1:``port`` (on ``connection`` when given: keep-alive)."""
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return HttpReply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        if connection is None:
            conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # answered and closed before reading it all
            sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return received
