"""TLS, mutual TLS with certificate reload, caller authentication, the unix socket's mode and the refusal of
plaintext on a non-loopback address: through the real server, the generated stubs and the real grpcurl, with
certificates made by openssl for each test."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from authsidecar_client import AuthClient, AuthSidecarError
from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import session_service_pb2 as session_pb
from authsidecar_client.v1 import session_service_pb2_grpc
from tests.e2e.conftest import Server, clean_env, error_details, free_port, start_server
from tests.e2e.test_grpcurl import grpcurl_binary

SERVING = health_pb2.HealthCheckResponse.SERVING
OPENSSL = shutil.which("openssl")  # part of the test environment, as Postgres and Redis are (see README)


@dataclass
class Pki:
    """A CA, a server certificate for 127.0.0.1 / localhost, and client certificates, as PEM files."""

    folder: Path

    def path(self, name: str) -> str:
        return str(self.folder / name)

    def _run(self, *args: str) -> None:
        subprocess.run([OPENSSL or "openssl", *args], check=True, capture_output=True, cwd=self.folder)

    def make_ca(self, name: str) -> None:
        self._run(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        )  # fmt: skip

    def issue(self, name: str, ca: str, cn: str, server: bool) -> None:
        ext = self.folder / f"{name}.ext"
        if server:
            ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        else:
            ext.write_text(f"subjectAltName=DNS:{cn}\nextendedKeyUsage=clientAuth\n")
        self._run(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
        )  # fmt: skip
        self._run(
            "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", ext.name,
        )  # fmt: skip

    def read(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    pki = Pki(tmp_path)
    pki.make_ca("ca")
    pki.make_ca("other-ca")
    pki.issue("server", "ca", "authsidecar", server=True)
    pki.issue("gateway", "ca", "gateway.internal", server=False)
    pki.issue("backend", "ca", "backend.internal", server=False)
    pki.issue("intruder", "other-ca", "gateway.internal", server=False)
    return pki


def _channel(address: str, pki: Pki, client: str | None = None, ca: str = "ca.pem") -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.read(ca),
        private_key=pki.read(f"{client}.key") if client else None,
        certificate_chain=pki.read(f"{client}.pem") if client else None,
    )
    return grpc.secure_channel(address, credentials)


def _validate(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.StatusCode:
    stub = session_service_pb2_grpc.SessionServiceStub(channel)
    try:
        stub.ValidateSession(session_pb.ValidateSessionRequest(token="x" * 43), timeout=5, metadata=metadata)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _reason(channel: grpc.Channel, request: object, method: str, metadata: tuple[tuple[str, str], ...] = ()) -> str:
    call = channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString(), response_deserializer=None)
    try:
        call(request, timeout=5, metadata=metadata)
    except grpc.RpcError as exc:
        return error_details(exc).reason  # type: ignore[arg-type]
    return "OK"


def _start(tmp_path: Path, env: dict[str, str]) -> Server:
    """The embedded default in ``tmp_path`` (migrated first), listening with ``env``'s security."""
    subprocess.run([sys.executable, "-m", "authsidecar", "migrate"], cwd=tmp_path, env=clean_env(), check=True)
    server = start_server(tmp_path, env)
    end = time.monotonic() + 20
    while server.process.poll() is None and time.monotonic() < end and "listening on" not in server.log():
        time.sleep(0.05)
    assert "listening on" in server.log(), server.log()
    return server


def test_tls_with_grpcurl_and_stubs(pki: Pki, tmp_path: Path) -> None:
    env = {"AUTHSIDECAR_TLS_CERT_FILE": pki.path("server.pem"), "AUTHSIDECAR_TLS_KEY_FILE": pki.path("server.key")}
    server = _start(tmp_path, env)
    try:
        assert "(TLS)" in server.log()
        with _channel(server.address, pki) as channel:
            assert _validate(channel) == grpc.StatusCode.UNAUTHENTICATED  # reached the service over TLS
        out = subprocess.run(
            [grpcurl_binary(), "-cacert", pki.path("ca.pem"), server.address, "list"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert out.returncode == 0 and "authsidecar.v1.SessionService" in out.stdout, out.stderr
        plain = subprocess.run(
            [grpcurl_binary(), "-plaintext", server.address, "list"], capture_output=True, text=True, timeout=30
        )
        assert plain.returncode != 0
    finally:
        assert server.stop() == 0


def test_mtls_requires_a_client_certificate_and_reloads_certificates(pki: Pki, tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    for name in ("server.pem", "server.key", "ca.pem"):
        shutil.copy(pki.path(name), live / name)
    env = {
        "AUTHSIDECAR_TLS_CERT_FILE": str(live / "server.pem"),
        "AUTHSIDECAR_TLS_KEY_FILE": str(live / "server.key"),
        "AUTHSIDECAR_TLS_CLIENT_CA_FILE": str(live / "ca.pem"),
    }
    server = _start(tmp_path, env)
    try:
        with _channel(server.address, pki, "gateway") as channel:
            assert _validate(channel) == grpc.StatusCode.UNAUTHENTICATED  # in, and answered
        with _channel(server.address, pki) as channel:
            assert _validate(channel) == grpc.StatusCode.UNAVAILABLE  # no client certificate: no handshake
        with _channel(server.address, pki, "intruder") as channel:
            assert _validate(channel) == grpc.StatusCode.UNAVAILABLE  # a certificate from another CA
        out = subprocess.run(
            [grpcurl_binary(), "-cacert", pki.path("ca.pem"), "-cert", pki.path("gateway.pem"),
             "-key", pki.path("gateway.key"), server.address, "list"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        # A key that does not match the certificate is not taken: logged, the previous certificates stay.
        shutil.copy(pki.path("gateway.key"), live / "server.key")
        with _channel(server.address, pki, "gateway") as channel:
            assert _validate(channel) == grpc.StatusCode.UNAUTHENTICATED
        assert "cannot be loaded" in server.log() and "TLS certificates reloaded" not in server.log()
        # Rotate to the other CA (server certificate and client CA), without a restart.
        pki.issue("server2", "other-ca", "authsidecar", server=True)
        shutil.copy(pki.path("server2.key"), live / "server.key")
        shutil.copy(pki.path("server2.pem"), live / "server.pem")
        shutil.copy(pki.path("other-ca.pem"), live / "ca.pem")
        with _channel(server.address, pki, "intruder", ca="other-ca.pem") as channel:
            assert _validate(channel) == grpc.StatusCode.UNAUTHENTICATED
        assert "TLS certificates reloaded" in server.log()
    finally:
        assert server.stop() == 0


@pytest.fixture
def callers_config(tmp_path: Path) -> tuple[Path, str]:
    key = secrets.token_urlsafe(32)
    digest = hashlib.sha256(key.encode()).hexdigest()
    config = tmp_path / "authsidecar.toml"
    config.write_text(
        f"""
[callers.edge]
key_sha256 = "{digest}"
allow = ["ValidateSession"]

[callers.backend]
certificate_names = ["backend.internal"]
allow = ["*"]
"""
    )
    return config, key


def test_callers_by_key_and_by_certificate(pki: Pki, tmp_path: Path, callers_config: tuple[Path, str]) -> None:
    config, key = callers_config
    env = {
        "AUTHSIDECAR_CONFIG": str(config),
        "AUTHSIDECAR_TLS_CERT_FILE": pki.path("server.pem"),
        "AUTHSIDECAR_TLS_KEY_FILE": pki.path("server.key"),
        "AUTHSIDECAR_TLS_CLIENT_CA_FILE": pki.path("ca.pem"),
    }
    server = _start(tmp_path, env)
    validate = "/authsidecar.v1.SessionService/ValidateSession"
    sign_up = "/authsidecar.v1.AuthService/SignUp"
    bearer = (("authorization", f"Bearer {key}"),)
    up = auth_pb.SignUpRequest(email=f"caller-{secrets.token_hex(4)}@example.com", password="correct horse", name="C")
    try:
        with _channel(server.address, pki, "gateway") as channel:  # a valid certificate, but not a named caller
            assert (
                _reason(channel, session_pb.ValidateSessionRequest(token="x"), validate) == "CALLER_NOT_AUTHENTICATED"
            )
            assert _reason(channel, session_pb.ValidateSessionRequest(token="x"), validate, bearer) == "INVALID_TOKEN"
            assert _reason(channel, up, sign_up, bearer) == "CALLER_NOT_ALLOWED"
            wrong = (("authorization", "Bearer not-the-key"),)
            assert _reason(channel, session_pb.ValidateSessionRequest(token="x"), validate, wrong) == (
                "CALLER_NOT_AUTHENTICATED"
            )
        with _channel(server.address, pki, "backend") as channel:  # named by its certificate, allowed everything
            assert _reason(channel, up, sign_up) == "OK"
        asyncio.run(_python_client(server.address, pki, key))
    finally:
        assert server.stop() == 0


async def _python_client(address: str, pki: Pki, key: str) -> None:
    """The README's Python example: mTLS credentials and a service key."""
    credentials = grpc.ssl_channel_credentials(pki.read("ca.pem"), pki.read("gateway.key"), pki.read("gateway.pem"))
    async with AuthClient(address, credentials=credentials, service_key=key) as auth:
        with pytest.raises(AuthSidecarError) as info:
            await auth.validate_session("not-a-session-token")
        assert info.value.reason == "INVALID_TOKEN"  # through: authenticated and allowed
        with pytest.raises(AuthSidecarError) as info:
            await auth.sign_up(f"py-{secrets.token_hex(4)}@example.com", "correct horse", name="P")
        assert info.value.reason == "CALLER_NOT_ALLOWED"


def _refused_at_start(tmp_path: Path, env: dict[str, str]) -> str:
    """``serve`` with ``env`` must exit 2 with one clean line; that line."""
    out = subprocess.run(
        [sys.executable, "-m", "authsidecar", "serve"],
        env={**clean_env(), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    return out.stderr


def test_plaintext_on_a_public_address_is_refused(tmp_path: Path) -> None:
    assert "AUTHSIDECAR_ALLOW_INSECURE" in _refused_at_start(tmp_path, {"AUTHSIDECAR_LISTEN": f"0.0.0.0:{free_port()}"})


def test_unix_socket_mode(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "authsidecar", "migrate"], cwd=tmp_path, env=clean_env(), check=True)
    path = tmp_path / "a.sock"
    old = os.umask(0)  # the most permissive umask: the mode must not come from it
    try:
        server = start_server(tmp_path, {"AUTHSIDECAR_SOCKET_MODE": "0600"}, listen=f"unix://{path}")
    finally:
        os.umask(old)
    try:
        server.wait_for(SERVING)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        assert server.stop() == 0


def test_rate_limit_rules_are_validated(tmp_path: Path) -> None:
    rules = json.dumps({"SignIn": {"ip": "3 per second"}})
    assert "AUTHSIDECAR_RATE_LIMITS" in _refused_at_start(tmp_path, {"AUTHSIDECAR_RATE_LIMITS": rules})
