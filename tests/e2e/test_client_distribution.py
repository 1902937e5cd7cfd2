"""The Python client is its own distribution (clients/python): it needs only grpcio, protobuf and the googleapis
common protos, ships nothing of the server, and works from a fresh virtualenv against the real server."""

from __future__ import annotations

import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.e2e.conftest import Server

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DEPENDENCIES = {"grpcio", "protobuf", "googleapis-common-protos"}


def _wheel(source: Path, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = out.glob("*.whl")
    return wheel


def _requires(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    return {
        re.split(r"[\s<>=!;\[(]", line.split(":", 1)[1].strip())[0]
        for line in text.splitlines()
        if line.startswith("Requires-Dist:")
    }


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("wheels")
    return _wheel(ROOT / "clients" / "python", out / "client"), _wheel(ROOT, out / "server")


def test_the_client_wheel_holds_only_the_client(wheels: tuple[Path, Path]) -> None:
    client, _ = wheels
    assert client.name.startswith("authsidecar_client-")
    names = zipfile.ZipFile(client).namelist()
    packages = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert packages == {"authsidecar_client"}
    assert "authsidecar_client/v1/session_service_pb2_grpc.py" in names
    assert "authsidecar_client/py.typed" in names
    assert _requires(client) == CLIENT_DEPENDENCIES


def test_the_server_depends_on_the_client_not_the_other_way_round(wheels: tuple[Path, Path]) -> None:
    client, server = wheels
    assert "authsidecar-client" in _requires(server)
    assert "authsidecar" not in _requires(client)
    assert not [n for n in zipfile.ZipFile(server).namelist() if n.startswith("authsidecar_client/")]


def _locked(name: str) -> str:
    """The version requirements/runtime.lock pins ``name`` to (the fresh virtualenv uses the same)."""
    match = re.search(rf"(?m)^{re.escape(name)}==(\S+)", (ROOT / "requirements" / "runtime.lock").read_text())
    assert match, name
    return f"{name}=={match.group(1)}"


@pytest.mark.parametrize("server", ["sqlite+memory"], indirect=True)
def test_a_fresh_virtualenv_with_only_the_client_talks_to_the_server(
    wheels: tuple[Path, Path], server: Server, tmp_path: Path
) -> None:
    client, _ = wheels
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    pins = [_locked(name) for name in sorted(CLIENT_DEPENDENCIES)]
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(client), *pins],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    program = f"""
import asyncio, importlib.util, uuid
from authsidecar_client import AuthClient, AuthSidecarError
for heavy in ("authsidecar", "sqlalchemy", "asyncpg", "redis", "argon2", "pydantic"):
    assert importlib.util.find_spec(heavy) is None, heavy

async def main() -> None:
    async with AuthClient({server.address!r}) as auth:
        email = f"dist-{{uuid.uuid4().hex[:12]}}@example.com"
        signed_up = await auth.sign_up(email, "correct horse battery", name="Dist")
        assert (await auth.validate_session(signed_up.token)).user.email == email
        try:
            await auth.validate_session("not-a-token")
        except AuthSidecarError as error:
            print("reason", error.reason)

asyncio.run(main())
"""
    ran = subprocess.run(
        [str(python), "-I", "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "reason INVALID_TOKEN"
