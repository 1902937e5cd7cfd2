"""What a newcomer meets first: the start-up line says what the server uses, and a database that does not exist,
a wrong port or host, refused credentials or an unmigrated database are one line saying what to do, never a
traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from tests.e2e.conftest import clean_env, free_port, start_server

pytestmark = [pytest.mark.postgres]


def _run(folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authsidecar", *args],
        cwd=folder,
        env={**clean_env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/no_such_database_here",
            "the database 'no_such_database_here' does not exist on postgresql 127.0.0.1:5432: create it",
        ),
        ("postgresql://nobody_at_all@127.0.0.1:5432/postgres", "refused the credentials of user 'nobody_at_all'"),
        ("mysql://root@127.0.0.1:3306/no_such_database_here", "`CREATE DATABASE no_such_database_here`"),
    ],
)
def test_a_database_that_cannot_be_used_is_one_line_for_migrate_and_serve(
    tmp_path: Path, url: str, expected: str
) -> None:
    for command in (("migrate",), ("migrate", "--check"), ("serve",)):
        env = {"DATABASE_URL": url, "AUTHSIDECAR_LISTEN": f"127.0.0.1:{free_port()}"}
        result = _run(tmp_path, env, *command)
        assert result.returncode == 1, (command, result.stderr)
        assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) <= 3, result.stderr


def test_a_wrong_port_or_host_is_named(tmp_path: Path) -> None:
    port = free_port()
    refused = _run(tmp_path, {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/app"}, "migrate")
    assert (
        refused.returncode == 1 and f"nothing accepts connections at postgresql 127.0.0.1:{port}/app" in refused.stderr
    )
    unknown = _run(tmp_path, {"DATABASE_URL": "postgresql://postgres@no-such-host.invalid/app"}, "migrate")
    assert unknown.returncode == 1 and "cannot resolve the database host 'no-such-host.invalid'" in unknown.stderr
    assert "Traceback" not in refused.stderr + unknown.stderr
    # serve waits for a database that is not up yet (NOT_SERVING), saying where it looks
    server = start_server(tmp_path, {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/app"})
    try:
        server.wait_for(health_pb2.HealthCheckResponse.NOT_SERVING)
        assert f"nothing accepts connections at postgresql 127.0.0.1:{port}/app" in server.log()
    finally:
        server.stop()


def test_an_unmigrated_database_and_the_start_up_line(tmp_path: Path) -> None:
    env = {"AUTHSIDECAR_SQLITE_PATH": str(tmp_path / "new.db")}
    (tmp_path / "new.db").write_bytes(b"")  # an empty file: exists, has no tables
    unmigrated = _run(tmp_path, {**env, "AUTHSIDECAR_LISTEN": f"127.0.0.1:{free_port()}"}, "serve")
    assert unmigrated.returncode == 1 and "run `authsidecar migrate`" in unmigrated.stderr
    assert "Traceback" not in unmigrated.stderr
    assert _run(tmp_path, env, "migrate").returncode == 0
    server = start_server(tmp_path, env)
    try:
        server.wait_for(health_pb2.HealthCheckResponse.SERVING)
        line = next(line for line in server.log().splitlines() if ": database " in line)
        assert f"database sqlite {tmp_path / 'new.db'}" in line
        assert "cache in-process" in line and "delivery log" in line and "plugins none" in line
        assert "listening on 127.0.0.1:" in server.log()
    finally:
        assert server.stop() == 0
