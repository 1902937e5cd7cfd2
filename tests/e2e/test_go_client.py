"""The Go client (clients/go): `go test ./...` against the real server, on each backend, and over TLS with a service
key. Go, protoc's Go plugins and the Go libraries come from Debian's packages (`make go-tools`); the module builds
offline from a vendor/ folder that clients/go/vendor.sh assembles from them."""

from __future__ import annotations

import hashlib
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Server, clean_env, start_server
from tests.e2e.test_transport_security import Pki

GO_DIR = Path(__file__).resolve().parents[2] / "clients" / "go"
INSTALL_HINT = "run `make go-tools` (as root: installs golang-go, protoc-gen-go-grpc and the Go libraries from Debian)"


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        pytest.fail(f"`go` is not on the PATH; {INSTALL_HINT}")
    vendored = subprocess.run(["bash", str(GO_DIR / "vendor.sh")], capture_output=True, text=True, check=False)
    if vendored.returncode != 0:
        pytest.fail(f"clients/go/vendor.sh failed ({INSTALL_HINT}):\n{vendored.stdout}{vendored.stderr}")
    return go


def _go_test(env: dict[str, str]) -> str:
    """Run `go test -v ./...` in clients/go offline with ``env``; returns its output, fails the test on failure."""
    full_env = {**clean_env(), "GOFLAGS": "-mod=vendor", "GOPROXY": "off", "GOTOOLCHAIN": "local", **env}
    if "HOME" not in full_env and "GOCACHE" not in full_env:
        full_env["GOCACHE"] = str(GO_DIR.parents[1] / ".tools" / "go-build")
    out = subprocess.run(
        [_go(), "test", "-count=1", "-v", "./..."],
        cwd=GO_DIR,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = out.stdout + out.stderr
    assert out.returncode == 0, output
    return output


def test_go_client_against_server(server: Server) -> None:
    output = _go_test({"AUTHSIDECAR_TEST_ADDRESS": server.address})
    for name in ("TestAgainstServer", "TestFromErrorDecodesDetails", "TestErrorsAsIsAndHelpers"):
        assert f"--- PASS: {name}" in output, output


def test_go_client_tls_and_service_key(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    pki.make_ca("ca")
    pki.issue("server", "ca", "authsidecar", server=True)
    key = secrets.token_urlsafe(32)
    config = tmp_path / "authsidecar.toml"
    config.write_text(
        f'[callers.go]\nkey_sha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\nallow = ["ValidateSession"]\n'
    )
    subprocess.run([sys.executable, "-m", "authsidecar", "migrate"], cwd=tmp_path, env=clean_env(), check=True)
    env = {
        "AUTHSIDECAR_CONFIG": str(config),
        "AUTHSIDECAR_TLS_CERT_FILE": pki.path("server.pem"),
        "AUTHSIDECAR_TLS_KEY_FILE": pki.path("server.key"),
    }
    server = start_server(tmp_path, env)
    try:
        end = time.monotonic() + 20
        while server.process.poll() is None and time.monotonic() < end and "listening on" not in server.log():
            time.sleep(0.05)
        assert "listening on" in server.log(), server.log()
        output = _go_test(
            {
                "AUTHSIDECAR_TEST_TLS_ADDRESS": server.address,
                "AUTHSIDECAR_TEST_CA_FILE": pki.path("ca.pem"),
                "AUTHSIDECAR_TEST_SERVICE_KEY": key,
            }
        )
        assert "--- PASS: TestTLSAndServiceKey" in output, output
    finally:
        assert server.stop() == 0, server.log()


def test_go_generated_code_is_current(tmp_path: Path) -> None:
    """clients/go/authsidecarv1 is what clients/go/generate.sh makes from proto/ now (same protoc and plugins)."""
    _go()
    for tool in ("protoc", "protoc-gen-go", "protoc-gen-go-grpc"):
        if shutil.which(tool) is None:
            pytest.fail(f"`{tool}` is not on the PATH; {INSTALL_HINT}")
    root = GO_DIR.parents[1]
    module = "github.com/authsidecar/authsidecar/clients/go"
    protos = sorted(str(p.relative_to(root / "proto")) for p in (root / "proto" / "authsidecar" / "v1").glob("*.proto"))
    subprocess.run(
        ["protoc", "-I", "proto", f"--go_out={tmp_path}", f"--go_opt=module={module}",
         f"--go-grpc_out={tmp_path}", f"--go-grpc_opt=module={module}", *protos],
        cwd=root, check=True,
    )  # fmt: skip
    fresh = {p.name: p.read_text() for p in (tmp_path / "authsidecarv1").iterdir()}
    committed = {p.name: p.read_text() for p in (GO_DIR / "authsidecarv1").iterdir()}
    assert fresh == committed, "clients/go/authsidecarv1 is stale: run `make proto-go`"
