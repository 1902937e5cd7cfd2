"""`generate --format drizzle`: the TypeScript compiles against the real drizzle-orm (tsc --strict), drizzle-kit
generates SQL from it, and once that SQL is applied `migrate --check` accepts the database; then the server
serves on it. The npm packages are pinned and installed by the Makefile into .tools/ (as buf is)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import auth_service_pb2_grpc
from tests.e2e.conftest import start_server
from tests.migrations.test_schema_sync import CONFIGS, cli, configured, empty_pg  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".tools" / "node_modules" / ".bin"


@pytest.fixture
def node_project(tmp_path: Path) -> Path:
    assert (BIN / "drizzle-kit").exists(), "drizzle-kit is installed by `make test` (Makefile: $(DRIZZLE_KIT))"
    project = tmp_path / "app"
    project.mkdir()
    (project / "node_modules").symlink_to(ROOT / ".tools" / "node_modules")
    return project


def _tool(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NODE_OPTIONS"}
    return subprocess.run(
        [str(BIN / name), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False
    )


@pytest.mark.parametrize("config", list(CONFIGS))
def test_drizzle_schema_compiles_and_drizzle_kit_sql_passes_the_check(
    empty_pg: str,  # noqa: F811
    node_project: Path,
    config: str,
) -> None:
    env = configured({"DATABASE_URL": empty_pg}, node_project, config)
    generated = cli("generate", "--format", "drizzle", "--output", "schema.ts", env=env, cwd=node_project)
    assert generated.returncode == 0, generated.stderr

    compiled = _tool(
        "tsc", "--noEmit", "--strict", "--skipLibCheck", "--module", "esnext", "--moduleResolution", "bundler",
        "--target", "es2022", "schema.ts", cwd=node_project,
    )  # fmt: skip
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr

    kit = _tool(
        "drizzle-kit",
        "generate",
        "--dialect",
        "postgresql",
        "--schema",
        "./schema.ts",
        "--out",
        "./drizzle",
        cwd=node_project,
    )
    assert kit.returncode == 0, kit.stdout + kit.stderr
    [migration] = sorted((node_project / "drizzle").glob("*.sql"))
    subprocess.run(
        ["psql", empty_pg, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(migration)], check=True, capture_output=True
    )

    check = cli("migrate", "--check", env=env, cwd=node_project)
    assert check.returncode == 0, check.stdout + check.stderr

    server = start_server(node_project, env)  # drizzle-kit made no counter row for the invalidation log
    try:
        server.wait_for(health_pb2.HealthCheckResponse.SERVING)
        with grpc.insecure_channel(server.address) as channel:
            auth = auth_service_pb2_grpc.AuthServiceStub(channel)
            up = auth.SignUp(auth_pb.SignUpRequest(email="drizzle@example.com", password="correct horse", name="D"))
            auth.SignOut(auth_pb.SignOutRequest(token=up.token))  # a revocation: logs an invalidation
    finally:
        assert server.stop() == 0, server.log()
