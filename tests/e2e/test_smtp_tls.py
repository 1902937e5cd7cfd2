"""Mail over STARTTLS and implicit TLS (aiosmtplib) to a real SMTP server with a certificate from a test CA,
trusted through AUTHSIDECAR_SMTP_CA_FILE; a server whose certificate the CA did not sign gets no mail."""

from __future__ import annotations

import asyncio
import secrets
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from grpc_health.v1 import health_pb2

from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from tests.e2e.conftest import Server, clean_env, free_port, start_server, stubs_for
from tests.e2e.test_delivery import Mailbox
from tests.e2e.test_transport_security import Pki

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    pki = Pki(tmp_path)
    pki.make_ca("ca")
    pki.make_ca("other-ca")
    pki.issue("smtp", "ca", "localhost", server=True)
    return pki


def _controller(box: Mailbox, pki: Pki, security: str) -> tuple[Controller, int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.path("smtp.pem"), pki.path("smtp.key"))
    port = free_port()
    if security == "starttls":
        controller = Controller(box, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True)
    else:
        controller = Controller(box, hostname="127.0.0.1", port=port, ssl_context=context)
    controller.start()
    return controller, port


def _server(tmp_path: Path, port: int, security: str, ca: str) -> Server:
    folder = tmp_path / f"srv-{secrets.token_hex(3)}"
    folder.mkdir()
    env = {
        "AUTHSIDECAR_DELIVERY": "smtp",
        "AUTHSIDECAR_SMTP_HOST": "localhost",
        "AUTHSIDECAR_SMTP_PORT": str(port),
        "AUTHSIDECAR_SMTP_SECURITY": security,
        "AUTHSIDECAR_SMTP_CA_FILE": ca,
        "AUTHSIDECAR_DELIVERY_ATTEMPTS": "1",
        "AUTHSIDECAR_SQLITE_PATH": str(folder / "authsidecar.db"),
    }
    subprocess.run([sys.executable, "-m", "authsidecar", "migrate"], cwd=folder, env={**clean_env(), **env}, check=True)
    server = start_server(folder, env)
    server.wait_for(SERVING)
    return server


@pytest.mark.parametrize("security", ["starttls", "ssl"])
async def test_mail_over_tls(pki: Pki, tmp_path: Path, security: str) -> None:
    box = Mailbox()
    controller, port = _controller(box, pki, security)
    servers: list[Server] = []
    try:
        for ca, delivered in ((pki.path("ca.pem"), True), (pki.path("other-ca.pem"), False)):
            server = _server(tmp_path, port, security, ca)
            servers.append(server)
            stubs = stubs_for(server.address)
            email = f"tls-{secrets.token_hex(4)}@example.com"
            try:
                await stubs.auth.SignUp(auth_pb.SignUpRequest(email=email, password="correct horse", name="T"))
                await stubs.auth.RequestPasswordReset(auth_pb.RequestPasswordResetRequest(email=email))
            finally:
                await stubs.channel.close()
            if delivered:
                assert box.wait_for(email, timeout=15)
            else:
                for _ in range(150):  # the refused handshake is logged as a failed delivery
                    if "failed after 1 attempts" in server.log():
                        break
                    await asyncio.sleep(0.1)
                assert "failed after 1 attempts" in server.log(), server.log()
                assert not [m for m in box.messages if m["To"] == email]
    finally:
        for server in servers:
            assert server.stop() == 0
        controller.stop()
