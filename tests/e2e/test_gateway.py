"""Gateways through the real server: Envoy's ext_authz Check (xds-protos' generated stubs, sending what Envoy
sends) and the forward-auth HTTP endpoint (http.client and raw sockets), on Postgres + Redis and on the embedded
SQLite default; the Better Auth profile's signed cookie; an unreachable database (UNAVAILABLE / 503, never 401)."""

from __future__ import annotations

import asyncio
import http.client
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import session_service_pb2 as session_pb
from tests.better_auth.harness import SECRET as BETTER_AUTH_SECRET
from tests.conftest import REDIS_URL, create_pg_database, drop_pg_database, migrate
from tests.e2e.conftest import (
    Server,
    Stubs,
    clean_env,
    error_details,
    free_port,
    start_server,
    stubs_for,
    wait_for,
)
from tests.e2e.gateway.support import (
    SESSION_HEADER,
    USER_HEADER,
    HttpReply,
    authorization_stub,
    check_request,
    denial,
    http_request,
    ok_headers,
    raw_check_request,
    raw_exchange,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SERVING = health_pb2.HealthCheckResponse.SERVING
PASSWORD = "correct horse battery"


@dataclass
class Gateway:
    """A server with ext_authz on and a forward-auth listener."""

    server: Server
    forward_port: int
    metrics_port: int
    backend: str


def _gateway_env(forward_port: int, metrics_port: int) -> dict[str, str]:
    return {
        "AUTHSIDECAR_EXT_AUTHZ": "true",
        "AUTHSIDECAR_FORWARD_AUTH_LISTEN": f"127.0.0.1:{forward_port}",
        "AUTHSIDECAR_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
    }


@pytest.fixture(scope="module", params=["postgres+redis", "sqlite+memory"])
def gateway(request: pytest.FixtureRequest, module_tmp: Path, pg_url: str, redis_prefix: str) -> Iterator[Gateway]:
    forward_port, metrics_port = free_port(), free_port()
    env = _gateway_env(forward_port, metrics_port)
    if request.param == "postgres+redis":
        env |= {"DATABASE_URL": pg_url, "REDIS_URL": REDIS_URL, "AUTHSIDECAR_REDIS_KEY_PREFIX": redis_prefix}
    else:
        folder = module_tmp / "embedded"
        folder.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-m", "authsidecar", "migrate"], cwd=folder, env=clean_env(), check=True)
        env["AUTHSIDECAR_SQLITE_PATH"] = str(folder / "authsidecar.db")
    server = start_server(module_tmp, env)
    server.wait_for(SERVING)
    yield Gateway(server, forward_port, metrics_port, request.param)
    assert server.stop() == 0, server.log()


@pytest.fixture
async def stubs(gateway: Gateway) -> AsyncIterator[Stubs]:
    s = stubs_for(gateway.server.address)
    yield s
    await s.channel.close()


async def _sign_up(stubs: Stubs) -> auth_pb.SignUpResponse:
    email = f"gw-{secrets.token_hex(5)}@example.com"
    reply: auth_pb.SignUpResponse = await stubs.auth.SignUp(
        auth_pb.SignUpRequest(email=email, password=PASSWORD, name="Gate Keeper")
    )
    return reply


async def _forward(
    gateway: Gateway, headers: dict[str, str], method: str = "GET", path: str = "/", body: bytes | None = None
) -> HttpReply:
    return await asyncio.to_thread(http_request, gateway.forward_port, headers, method, path, body)


# --- Envoy ext_authz -------------------------------------------------------------------------------------------


async def test_bearer_token_is_allowed_with_identity_headers(gateway: Gateway, stubs: Stubs) -> None:
    up = await _sign_up(stubs)
    reply = await authorization_stub(stubs.channel).Check(check_request({"authorization": f"Bearer {up.token}"}))
    assert ok_headers(reply) == {USER_HEADER: up.user.id, SESSION_HEADER: up.session.id}


async def test_session_cookie_is_allowed(gateway: Gateway, stubs: Stubs) -> None:
    up = await _sign_up(stubs)
    cookie = f"theme=dark; authsidecar.session_token={up.token}; lang=en"
    reply = await authorization_stub(stubs.channel).Check(check_request({"cookie": cookie}))
    assert ok_headers(reply)[USER_HEADER] == up.user.id


async def test_no_session_is_denied_with_401_and_a_challenge(gateway: Gateway, stubs: Stubs) -> None:
    stub = authorization_stub(stubs.channel)
    for headers in ({}, {"cookie": "theme=dark"}, {"authorization": "Basic YWxhZGRpbjpvcGVuc2VzYW1l"}):
        status, denied_headers, body = denial(await stub.Check(check_request(headers)))
        assert status == 401
        assert denied_headers["www-authenticate"] == 'Bearer realm="authsidecar"'
        assert denied_headers["content-type"] == "application/json"
        assert body["reason"] == "INVALID_TOKEN"
        assert "no session" in body["message"]


async def test_bad_tokens_are_denied(gateway: Gateway, stubs: Stubs) -> None:
    stub = authorization_stub(stubs.channel)
    up = await _sign_up(stubs)
    for headers in (
        {"authorization": "Bearer " + secrets.token_urlsafe(32)},  # unknown
        {"authorization": f"Bearer {up.token[:-1]}"},  # one character short
        {"authorization": "Bearer " + "x" * 300},  # too long
        {"authorization": "Bearer a b"},  # not a token
        {"authorization": "Bearer "},
        {"authorization": f"Bearer {up.token},Bearer {up.token}"},  # two Authorization headers, merged by Envoy
        {"cookie": "authsidecar.session_token=" + secrets.token_urlsafe(32)},
        {"cookie": "authsidecar.session_token=\x01"},
        {"cookie": f"authsidecar.session_token={up.token}; pad=" + "x" * 17_000},  # over the Cookie bound
    ):
        status, denied_headers, body = denial(await stub.Check(check_request(headers)))
        assert status == 401, headers
        assert denied_headers["www-authenticate"] == 'Bearer realm="authsidecar", error="invalid_token"'
        assert body["reason"] == "INVALID_TOKEN"
        assert up.token not in str(body)


async def test_an_explicit_bearer_token_decides_over_the_cookie(gateway: Gateway, stubs: Stubs) -> None:
    stub = authorization_stub(stubs.channel)
    up = await _sign_up(stubs)
    cookie = f"authsidecar.session_token={up.token}"
    bad_bearer = {"authorization": "Bearer " + secrets.token_urlsafe(32), "cookie": cookie}
    assert denial(await stub.Check(check_request(bad_bearer)))[0] == 401
    basic = {"authorization": "Basic dXNlcjpwYXNz", "cookie": cookie}  # another scheme: left to the upstream
    assert ok_headers(await stub.Check(check_request(basic)))[USER_HEADER] == up.user.id


async def test_revoked_sessions_are_denied_at_once(gateway: Gateway, stubs: Stubs) -> None:
    stub = authorization_stub(stubs.channel)
    up = await _sign_up(stubs)
    bearer = {"authorization": f"Bearer {up.token}"}
    assert ok_headers(await stub.Check(check_request(bearer)))  # now cached
    await stubs.auth.SignOut(auth_pb.SignOutRequest(token=up.token))
    assert denial(await stub.Check(check_request(bearer)))[2]["reason"] == "INVALID_TOKEN"

    first = await _sign_up(stubs)
    second = await stubs.auth.SignIn(auth_pb.SignInRequest(email=first.user.email, password=PASSWORD))
    cookie = {"cookie": f"authsidecar.session_token={second.token}"}
    assert ok_headers(await stub.Check(check_request(cookie)))[SESSION_HEADER] == second.session.id
    await stubs.sessions.RevokeSession(session_pb.RevokeSessionRequest(token=first.token, session_id=second.session.id))
    assert denial(await stub.Check(check_request(cookie)))[0] == 401
    assert ok_headers(await stub.Check(check_request({"authorization": f"Bearer {first.token}"})))


async def test_identity_headers_sent_by_the_client_are_overwritten(gateway: Gateway, stubs: Stubs) -> None:
    stub = authorization_stub(stubs.channel)
    up = await _sign_up(stubs)
    spoofed = {USER_HEADER: "admin", SESSION_HEADER: "forged", "authorization": f"Bearer {up.token}"}
    headers = ok_headers(await stub.Check(check_request(spoofed)))  # every option says OVERWRITE_IF_EXISTS_OR_ADD
    assert headers == {USER_HEADER: up.user.id, SESSION_HEADER: up.session.id}
    assert denial(await stub.Check(check_request({USER_HEADER: "admin"})))[0] == 401
    # Underscore spellings pass Envoy by default and read as the real header in CGI/WSGI/Rack/PHP: removed
    lookalike = USER_HEADER.replace("-", "_")
    reply = await stub.Check(check_request({lookalike: "admin", "authorization": f"Bearer {up.token}"}))
    assert list(reply.ok_response.headers_to_remove) == [lookalike]
    plain = await stub.Check(check_request({"x-other_header": "1", "authorization": f"Bearer {up.token}"}))
    assert list(plain.ok_response.headers_to_remove) == []


async def test_raw_header_map_is_read(gateway: Gateway, stubs: Stubs) -> None:
    """Envoy's encode_raw_headers: headers in header_map, repeated ones apart."""
    stub = authorization_stub(stubs.channel)
    up = await _sign_up(stubs)
    allowed = await stub.Check(raw_check_request([("Authorization", f"Bearer {up.token}")]))
    assert ok_headers(allowed)[USER_HEADER] == up.user.id
    cookies = [("cookie", "a=1"), ("cookie", f"authsidecar.session_token={up.token}")]  # HTTP/2 splits cookies
    assert ok_headers(await stub.Check(raw_check_request(cookies)))[SESSION_HEADER] == up.session.id
    twice = [("authorization", f"Bearer {up.token}"), ("authorization", "Bearer other")]
    assert denial(await stub.Check(raw_check_request(twice)))[0] == 401


async def test_malformed_check_request_is_invalid_argument(gateway: Gateway, stubs: Stubs) -> None:
    call = stubs.channel.unary_unary("/envoy.service.auth.v3.Authorization/Check")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(b"\xff\xff\xff\xff")
    details = error_details(caught.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")


# --- forward-auth ----------------------------------------------------------------------------------------------


async def test_forward_auth_allows_with_identity_headers(gateway: Gateway, stubs: Stubs) -> None:
    up = await _sign_up(stubs)
    bearer = {"Authorization": f"Bearer {up.token}", "X-Forwarded-Uri": "/orders/7", USER_HEADER: "admin"}
    for method in ("GET", "HEAD", "POST", "DELETE"):  # nginx's subrequest keeps the method
        reply = await _forward(gateway, headers=bearer, method=method, path="/anything?x=1")
        assert reply.status == 200, (method, reply)
        assert reply.headers[USER_HEADER] == up.user.id
        assert reply.headers[SESSION_HEADER] == up.session.id
        assert reply.headers["cache-control"] == "no-store"
    cookie = {"Cookie": f"authsidecar.session_token={up.token}"}
    reply = await _forward(gateway, headers=cookie, method="POST", body=b'{"order": 7}')
    assert reply.status == 200


async def test_forward_auth_denies_with_401(gateway: Gateway, stubs: Stubs) -> None:
    up = await _sign_up(stubs)
    missing = await _forward(gateway, headers={})
    assert missing.status == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="authsidecar"'
    assert b'"reason":"INVALID_TOKEN"' in missing.body
    bad = await _forward(gateway, headers={"Authorization": "Bearer " + secrets.token_urlsafe(32)})
    assert bad.status == 401
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]
    head = await _forward(gateway, headers={}, method="HEAD")
    assert (head.status, head.body) == (401, b"")
    assert USER_HEADER not in bad.headers

    await stubs.auth.SignOut(auth_pb.SignOutRequest(token=up.token))
    revoked = await _forward(gateway, headers={"Authorization": f"Bearer {up.token}"})
    assert revoked.status == 401


async def test_forward_auth_keeps_connections_alive(gateway: Gateway, stubs: Stubs) -> None:
    up = await _sign_up(stubs)
    conn = http.client.HTTPConnection("127.0.0.1", gateway.forward_port, timeout=10)
    try:
        statuses = []
        for headers in ({"Authorization": f"Bearer {up.token}"}, {}, {"Authorization": f"Bearer {up.token}"}):
            reply = await asyncio.to_thread(http_request, gateway.forward_port, headers=headers, connection=conn)
            statuses.append(reply.status)
            sock = conn.sock
            assert sock is not None  # still open: the same connection answers the next request
        assert statuses == [200, 401, 200]
    finally:
        conn.close()


async def test_forward_auth_refuses_malformed_and_oversized_requests(gateway: Gateway) -> None:
    port = gateway.forward_port
    silent = socket.create_connection(("127.0.0.1", port))  # never sends a byte: closed after HEAD_TIMEOUT
    connect = b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nAuthorization: Bearer x\r\n\r\n"
    tunnel = await asyncio.to_thread(raw_exchange, port, connect)
    assert tunnel.startswith(b"HTTP/1.1 405 "), tunnel  # a 2xx would make the connection a tunnel
    garbage = await asyncio.to_thread(raw_exchange, port, b"\x16\x03\x01 not http at all\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 "), garbage
    huge = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"x" * 40_000 + b"\r\n\r\n"
    too_large = await asyncio.to_thread(raw_exchange, port, huge)
    assert too_large.startswith(b"HTTP/1.1 431 "), too_large[:100]
    body = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n" + b"x" * 200_000
    assert (await asyncio.to_thread(raw_exchange, port, body)).startswith(b"HTTP/1.1 413 ")
    smuggle = b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert (await asyncio.to_thread(raw_exchange, port, smuggle)).startswith(b"HTTP/1.1 400 ")
    # a client that sends half a head and stops is cut off (HEAD_TIMEOUT), it does not hold the slot forever: the
    # server answers 408 and closes, long before the client's own 30 s read timeout would have ended the wait
    slow = await asyncio.to_thread(raw_exchange, port, b"GET / HTTP/1.1\r\nHost: a\r\n", 30)
    assert slow.startswith(b"HTTP/1.1 408 "), slow
    silent.settimeout(5)  # opened before the 10 s above: a connection that never speaks holds its slot no longer
    assert silent.recv(10) == b""
    silent.close()
    # Expect: 100-continue is answered before the body is sent
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        head = b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
        sock.sendall(head)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"hello")
        assert sock.recv(100).startswith(b"HTTP/1.1 401 ")


async def test_checks_are_counted_and_tokens_never_logged(gateway: Gateway, stubs: Stubs) -> None:
    up = await _sign_up(stubs)
    stub = authorization_stub(stubs.channel)
    await stub.Check(check_request({"authorization": f"Bearer {up.token}"}))
    await stub.Check(check_request({}))
    await _forward(gateway, headers={"Authorization": f"Bearer {up.token}"})
    await _forward(gateway, headers={"Authorization": "Bearer nope"})
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=5)).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    for via in ("envoy", "forward_auth"):
        for decision in ("allowed", "denied"):
            key = ("authsidecar_gateway_checks_total", (("decision", decision), ("via", via)))
            assert samples.get(key, 0) >= 1, (key, text)
    assert samples[("authsidecar_rpc_total", (("code", "OK"), ("rpc", "Check")))] >= 2
    log = gateway.server.log()
    assert f"gateways envoy ext_authz, forward-auth 127.0.0.1:{gateway.forward_port}" in log
    assert up.token not in log


# --- the Better Auth profile: its signed cookie --------------------------------------------------------------


@pytest.fixture(scope="module")
def better_auth_gateway(module_tmp: Path) -> Iterator[Gateway]:
    url = create_pg_database("authsidecar_gw")
    server = None
    try:
        migrate(url)
        forward_port, metrics_port = free_port(), free_port()
        env = {
            **_gateway_env(forward_port, metrics_port),
            "DATABASE_URL": url,
            "AUTHSIDECAR_COMPAT": "better-auth",
            "BETTER_AUTH_SECRET": BETTER_AUTH_SECRET,
        }
        server = start_server(module_tmp, env)
        server.wait_for(SERVING)
        yield Gateway(server, forward_port, metrics_port, "better-auth")
    finally:
        if server is not None:
            assert server.stop() == 0, server.log()
        drop_pg_database(url)


async def test_better_auth_signed_cookie(better_auth_gateway: Gateway) -> None:
    stubs = stubs_for(better_auth_gateway.server.address)
    try:
        up = await _sign_up(stubs)
        stub = authorization_stub(stubs.channel)
        assert unquote(up.session_cookie).startswith(up.token + ".")
        for headers in (
            {"cookie": f"theme=dark; better-auth.session_token={up.session_cookie}"},
            {"cookie": f"__Secure-better-auth.session_token={up.session_cookie}"},
            {"authorization": f"Bearer {up.token}"},  # Better Auth's bearer plugin: the token, or signed
            {"authorization": f"Bearer {up.session_cookie}"},
        ):
            assert ok_headers(await stub.Check(check_request(headers))) == {
                USER_HEADER: up.user.id,
                SESSION_HEADER: up.session.id,
            }, headers
        signature = unquote(up.session_cookie).rpartition(".")[2]
        forged = quote(f"{secrets.token_hex(16)}.{signature}", safe="")
        for headers in (
            {"cookie": f"better-auth.session_token={forged}"},
            {"cookie": f"better-auth.session_token={up.token}"},  # a bare token is no Better Auth cookie
            {"cookie": f"authsidecar.session_token={up.token}"},  # not the profile's cookie
        ):
            assert denial(await stub.Check(check_request(headers)))[0] == 401, headers
        port = better_auth_gateway.forward_port
        cookie = {"Cookie": f"better-auth.session_token={up.session_cookie}"}
        assert (await asyncio.to_thread(http_request, port, headers=cookie)).status == 200
        await stubs.auth.SignOut(auth_pb.SignOutRequest(token=up.token))
        assert (await asyncio.to_thread(http_request, port, headers=cookie)).status == 401
        assert denial(await stub.Check(check_request({"cookie": cookie["Cookie"]})))[0] == 401
    finally:
        await stubs.channel.close()


# --- outages, configuration, shutdown ------------------------------------------------------------------------


async def test_an_unreachable_database_is_unavailable_not_unauthenticated(tmp_path: Path) -> None:
    forward_port = free_port()
    env = {
        **_gateway_env(forward_port, free_port()),
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere",  # nothing listens there
        "AUTHSIDECAR_DB_CONNECT_TIMEOUT": "1",
    }
    server = start_server(tmp_path, env)
    try:
        server.wait_for(health_pb2.HealthCheckResponse.NOT_SERVING)
        async with grpc.aio.insecure_channel(server.address) as channel:
            check = check_request({"authorization": "Bearer " + secrets.token_urlsafe(32)})
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await authorization_stub(channel).Check(check)
            details = error_details(caught.value)
            assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE")
            # no credential needs no database: still a plain denial
            assert denial(await authorization_stub(channel).Check(check_request({})))[0] == 401
        headers = {"Authorization": "Bearer " + secrets.token_urlsafe(32)}
        reply = await asyncio.to_thread(http_request, forward_port, headers=headers)
        assert reply.status == 503
        assert int(reply.headers["retry-after"]) >= 1
    finally:
        assert server.stop() == 0, server.log()


def test_gateway_settings_are_checked(tmp_path: Path) -> None:
    def refused(env: dict[str, str]) -> str:
        process = subprocess.run(
            [sys.executable, "-m", "authsidecar", "serve"],
            env={**clean_env(), **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert process.returncode != 0
        return process.stderr.strip().splitlines()[-1]

    assert "AUTHSIDECAR_FORWARD_AUTH_LISTEN: 0.0.0.0:9191 is reachable from other machines" in refused(
        {"AUTHSIDECAR_FORWARD_AUTH_LISTEN": "0.0.0.0:9191"}
    )
    assert "AUTHSIDECAR_GATEWAY_USER_ID_HEADER" in refused({"AUTHSIDECAR_GATEWAY_USER_ID_HEADER": "Cookie"})
    assert "AUTHSIDECAR_GATEWAY_USER_ID_HEADER" in refused({"AUTHSIDECAR_GATEWAY_USER_ID_HEADER": "x user"})
    assert "AUTHSIDECAR_GATEWAY_COOKIE_NAME" in refused(
        {"AUTHSIDECAR_COMPAT": "better-auth", "BETTER_AUTH_SECRET": "s" * 32, "AUTHSIDECAR_GATEWAY_COOKIE_NAME": "x"}
    )


async def test_custom_names_and_ext_authz_off(tmp_path: Path, pg_url: str) -> None:
    forward_port = free_port()
    env = {
        "DATABASE_URL": pg_url,
        "AUTHSIDECAR_FORWARD_AUTH_LISTEN": f"127.0.0.1:{forward_port}",
        "AUTHSIDECAR_GATEWAY_USER_ID_HEADER": "X-User",
        "AUTHSIDECAR_GATEWAY_SESSION_ID_HEADER": "x-session",
        "AUTHSIDECAR_GATEWAY_EMAIL_HEADER": "x-email",
        "AUTHSIDECAR_GATEWAY_COOKIE_NAME": "sid",
        "AUTHSIDECAR_FORWARD_AUTH_MAX_CONNECTIONS": "2",
        # Longer than server.stop waits (20 s): a connection that held the shutdown would get the server killed.
        "AUTHSIDECAR_SHUTDOWN_GRACE": "60",
    }
    server = start_server(tmp_path, env)
    server.wait_for(SERVING)
    stubs = stubs_for(server.address)
    held: list[socket.socket] = []
    keep_alive = [http.client.HTTPConnection("127.0.0.1", forward_port, timeout=10) for _ in range(3)]
    try:
        up = await _sign_up(stubs)
        reply = await asyncio.to_thread(http_request, forward_port, headers={"Cookie": f"sid={up.token}"})
        assert reply.status == 200
        assert (reply.headers["x-user"], reply.headers["x-session"]) == (up.user.id, up.session.id)
        assert reply.headers["x-email"] == up.user.email
        default_cookie = {"Cookie": f"authsidecar.session_token={up.token}"}
        assert (await asyncio.to_thread(http_request, forward_port, headers=default_cookie)).status == 401
        with pytest.raises(grpc.aio.AioRpcError) as caught:  # ext_authz is off by default
            await authorization_stub(stubs.channel).Check(check_request({}))
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # idle connections cannot lock the endpoint: when full, the one idle the longest is closed to make room.
        # Two keep-alive connections, each answered once (so the server holds both), idle in that order.
        oldest, newer, last = keep_alive
        for conn in (oldest, newer):
            assert (await asyncio.to_thread(http_request, forward_port, connection=conn)).status == 401
        request = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        served = await asyncio.to_thread(raw_exchange, forward_port, request)
        assert served.startswith(b"HTTP/1.1 401 "), served
        assert oldest.sock is not None
        oldest.sock.settimeout(5)
        assert oldest.sock.recv(10) == b""  # the oldest idle connection was closed
        oldest.close()
        newer.close()
        # two connections in the middle of a request take both slots: a third is answered 503 and closed. Each
        # sends a head asking for 100-continue and gets it: the server has the head and waits for the body. (Those
        # closed just now are idle to the server, so they make room for these two if they are still counted.)
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", forward_port), timeout=10)
            held.append(sock)
            sock.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
            assert (await asyncio.to_thread(sock.recv, 100)).startswith(b"HTTP/1.1 100 ")
        busy = await asyncio.to_thread(raw_exchange, forward_port, request)
        assert busy.startswith(b"HTTP/1.1 503 "), busy
        for sock in held:
            sock.close()
        held.clear()

        # idle keep-alive connections do not hold the shutdown: once the two above are gone (503 until then), a
        # keep-alive connection is answered and left idle; SIGTERM closes it at once and the server exits 0 (with
        # the 60 s grace, a server that waited for it would be killed by server.stop and fail this).
        async def answered_and_idle() -> bool:
            try:
                reply = await asyncio.to_thread(http_request, forward_port, connection=last)
            except (ConnectionError, http.client.HTTPException):  # refused while full: reset before the 503 was read
                last.close()
                return False
            return reply.status == 401

        await wait_for(answered_and_idle, 10, "a free connection slot", server.log)
        assert server.stop() == 0, server.log()
        assert last.sock is not None
        last.sock.settimeout(5)
        assert last.sock.recv(10) == b""
    finally:
        await stubs.channel.close()
        if server.process.poll() is None:
            server.stop()
        for sock in held:
            sock.close()
        for conn in keep_alive:
            conn.close()


async def test_forward_auth_answers_through_the_drain_then_stops(tmp_path: Path, pg_url: str) -> None:
    forward_port = free_port()
    env = {
        "DATABASE_URL": pg_url,
        "AUTHSIDECAR_FORWARD_AUTH_LISTEN": f"127.0.0.1:{forward_port}",
        "AUTHSIDECAR_DRAIN_DELAY": "2",
    }
    server = start_server(tmp_path, env)
    server.wait_for(SERVING)
    stubs = stubs_for(server.address)
    try:
        up = await _sign_up(stubs)
        bearer = {"Authorization": f"Bearer {up.token}"}
        conn = http.client.HTTPConnection("127.0.0.1", forward_port, timeout=10)
        assert (await asyncio.to_thread(http_request, forward_port, bearer, connection=conn)).status == 200
        server.process.send_signal(signal.SIGTERM)
        # draining: health NOT_SERVING, both listeners still answer
        await asyncio.to_thread(server.wait_for, health_pb2.HealthCheckResponse.NOT_SERVING, 5)
        assert (await asyncio.to_thread(http_request, forward_port, bearer, connection=conn)).status == 200
        assert (await asyncio.to_thread(http_request, forward_port, bearer)).status == 200
        assert server.process.wait(15) == 0, server.log()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.to_thread(http_request, forward_port, bearer)
        conn.close()
    finally:
        await stubs.channel.close()
        server.stop()
