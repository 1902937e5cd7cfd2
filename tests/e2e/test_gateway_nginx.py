"""A real nginx (Debian's package, tests/e2e/gateway/debian-deps.sh) with ``auth_request`` to the forward-auth
endpoint, in front of a small upstream that records what reaches it: allowed requests arrive with the identity
headers authsidecar set (never the client's own), denied ones get 401 and never reach the upstream. The nginx
configuration is the README's sample, with temporary paths and free ports."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import auth_service_pb2_grpc
from tests.conftest import REDIS_URL
from tests.e2e.conftest import Server, free_port, start_server
from tests.e2e.gateway.support import SESSION_HEADER, USER_HEADER, http_request

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

# The README's location blocks (kept in step with its "Gateways" section).
NGINX_CONF = """
{user}worker_processes 1;
error_log {tmp}/error.log info;
pid {tmp}/nginx.pid;
events {{ worker_connections 128; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

    upstream authsidecar {{
        server 127.0.0.1:{forward_port};
        keepalive 8;
    }}

    server {{
        listen 127.0.0.1:{port};

        location / {{
            auth_request /_authsidecar;
            auth_request_set $auth_user_id $upstream_http_x_authsidecar_user_id;
            auth_request_set $auth_session_id $upstream_http_x_authsidecar_session_id;
            proxy_set_header X-Authsidecar-User-Id $auth_user_id;        # replaces what the client sent
            proxy_set_header X-Authsidecar-Session-Id $auth_session_id;
            proxy_pass http://127.0.0.1:{upstream_port};
        }}

        location = /_authsidecar {{
            internal;
            proxy_pass http://authsidecar;
            proxy_http_version 1.1;
            proxy_set_header Connection "";                    # keep-alive to authsidecar
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
        }}
    }}
}}
"""


@dataclass
class Upstream:
    """A tiny HTTP app that records the headers and body of every request it gets."""

    port: int
    seen: list[dict[str, object]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                record = {
                    "method": self.command,
                    "path": self.path,
                    "headers": [(k.lower(), v) for k, v in self.headers.items()],
                    "body": body.decode(),
                }
                seen.append(record)
                reply = json.dumps(record).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        pytest.fail(
            "nginx is not installed: the gateway tests run a real nginx from Debian's packages;"
            " install it with `bash tests/e2e/gateway/debian-deps.sh` (as root; .ci/run does it)"
        )
    return found


@dataclass
class Stack:
    """nginx on ``port`` -> (auth_request) authsidecar's forward-auth -> upstream."""

    port: int
    upstream: Upstream
    server: Server
    tmp: Path


@pytest.fixture(scope="module")
def stack(module_tmp: Path, pg_url: str, redis_prefix: str) -> Iterator[Stack]:
    binary = nginx_binary()
    tmp = module_tmp / "nginx"
    tmp.mkdir()
    forward_port, port = free_port(), free_port()
    env = {
        "DATABASE_URL": pg_url,
        "REDIS_URL": REDIS_URL,
        "AUTHSIDECAR_REDIS_KEY_PREFIX": redis_prefix,
        "AUTHSIDECAR_FORWARD_AUTH_LISTEN": f"127.0.0.1:{forward_port}",
    }
    server = start_server(module_tmp, env)
    upstream = Upstream(free_port())
    upstream.start()
    nginx = None
    try:
        server.wait_for(health_pb2.HealthCheckResponse.SERVING)
        conf = NGINX_CONF.format(
            user="user root;\n" if os.geteuid() == 0 else "",  # workers may then read the temporary folder
            tmp=tmp,
            forward_port=forward_port,
            port=port,
            upstream_port=upstream.port,
        )
        (tmp / "nginx.conf").write_text(conf)
        test = subprocess.run(
            [binary, "-t", "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert test.returncode == 0, test.stderr
        with (tmp / "stderr.log").open("wb") as stderr:
            nginx = subprocess.Popen(
                [
                    binary,
                    "-p",
                    str(tmp),
                    "-c",
                    str(tmp / "nginx.conf"),
                    "-e",
                    str(tmp / "error.log"),
                    "-g",
                    "daemon off;",
                ],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        for _ in range(100):
            try:
                http_request(port, path="/")
                break
            except OSError:
                if nginx.poll() is not None:
                    pytest.fail(f"nginx exited: {(tmp / 'stderr.log').read_text()}{(tmp / 'error.log').read_text()}")
                time.sleep(0.05)
        yield Stack(port, upstream, server, tmp)
    finally:
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)  # graceful stop
            try:
                nginx.wait(10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
        upstream.stop()
        assert server.stop() == 0, server.log()


def _sign_up(stack: Stack) -> auth_pb.SignUpResponse:
    with grpc.insecure_channel(stack.server.address) as channel:
        reply: auth_pb.SignUpResponse = auth_service_pb2_grpc.AuthServiceStub(channel).SignUp(
            auth_pb.SignUpRequest(email=f"nginx-{secrets.token_hex(5)}@example.com", password="pw-pw-pw-pw", name="N")
        )
        return reply


def _sign_out(stack: Stack, token: str) -> None:
    with grpc.insecure_channel(stack.server.address) as channel:
        auth_service_pb2_grpc.AuthServiceStub(channel).SignOut(auth_pb.SignOutRequest(token=token))


def _values(record: dict[str, object], name: str) -> list[str]:
    headers = record["headers"]
    assert isinstance(headers, list)
    return [value for key, value in headers if key == name]


def test_allowed_requests_reach_the_upstream_with_authsidecars_identity(stack: Stack) -> None:
    up = _sign_up(stack)
    before = len(stack.upstream.seen)
    spoofed = {"Authorization": f"Bearer {up.token}", USER_HEADER: "admin", SESSION_HEADER: "forged"}
    reply = http_request(stack.port, headers=spoofed, path="/orders/7?x=1")
    assert reply.status == 200, reply
    record = json.loads(reply.body)
    assert record["path"] == "/orders/7?x=1"
    assert _values(record, USER_HEADER) == [up.user.id]  # only authsidecar's value, the client's is gone
    assert _values(record, SESSION_HEADER) == [up.session.id]

    cookie = {"Cookie": f"theme=dark; authsidecar.session_token={up.token}", "Content-Type": "application/json"}
    posted = http_request(stack.port, headers=cookie, method="POST", path="/orders", body=b'{"qty": 2}')
    assert posted.status == 200, posted
    record = json.loads(posted.body)
    assert (record["method"], record["body"]) == ("POST", '{"qty": 2}')  # the body goes upstream, not to the check
    assert _values(record, USER_HEADER) == [up.user.id]
    assert len(stack.upstream.seen) == before + 2


def test_denied_requests_get_401_and_never_reach_the_upstream(stack: Stack) -> None:
    up = _sign_up(stack)
    before = len(stack.upstream.seen)
    for headers in (
        {},
        {USER_HEADER: up.user.id, SESSION_HEADER: up.session.id},  # identity headers alone prove nothing
        {"Authorization": "Bearer " + secrets.token_urlsafe(32)},
        {"Cookie": "authsidecar.session_token=" + secrets.token_urlsafe(32)},
    ):
        reply = http_request(stack.port, headers=headers, path="/orders/7")
        assert reply.status == 401, (headers, reply)
        assert reply.headers["www-authenticate"].startswith('Bearer realm="authsidecar"')
    assert http_request(stack.port, headers={"Authorization": f"Bearer {up.token}"}).status == 200
    _sign_out(stack, up.token)
    revoked = http_request(stack.port, headers={"Authorization": f"Bearer {up.token}"}, method="POST", body=b"x")
    assert revoked.status == 401
    assert len(stack.upstream.seen) == before + 1  # only the one allowed request
    assert up.token not in stack.server.log()
