"""The plugin interface from outside: the README's example plugin, installed as a distribution with an entry
point, adds a field and a renamed table (migrate, generate, migrate --check) and receives after events; bad plugin
configurations stop every command with one line."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from tests.e2e.conftest import clean_env, start_server, stubs_for

ROOT = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING


def _readme_plugin() -> str:
    """The Python block of the README's "Writing a plugin" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Writing a plugin", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found, "the README's plugin example is missing"
    return found.group(1)


def _install(site: Path) -> None:
    """Install the example as a distribution would be: the module and a dist-info with its entry point."""
    site.mkdir()
    (site / "audit_trail.py").write_text(_readme_plugin())
    info = site / "audit_trail-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: audit-trail\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[authsidecar.plugins]\naudit_trail = audit_trail:AuditTrail\n")


def _cli(folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authsidecar", *args],
        cwd=folder,
        env={**clean_env(), **env},
        capture_output=True,
        text=True,
        check=False,
    )


async def test_the_readme_plugin_adds_its_schema_and_gets_after_events(tmp_path: Path) -> None:
    _install(tmp_path / "site")
    config = tmp_path / "plugins.toml"
    config.write_text(
        '[plugins.audit_trail]\nlabel = "security"\n'
        '[plugins.audit_trail.schema.audit_entry]\nmodel_name = "audit_log"\nfields = { what = "description" }\n'
    )
    env = {
        "AUTHSIDECAR_CONFIG": str(config),
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]),
        "AUTHSIDECAR_SQLITE_PATH": str(tmp_path / "authsidecar.db"),
    }
    generated = _cli(tmp_path, env, "generate", "--dialect", "sqlite")
    assert generated.returncode == 0, generated.stderr
    assert "CREATE TABLE audit_log" in generated.stdout and '"auditLevel"' in generated.stdout
    assert _cli(tmp_path, {"AUTHSIDECAR_SQLITE_PATH": env["AUTHSIDECAR_SQLITE_PATH"]}, "migrate").returncode == 0
    check = _cli(tmp_path, env, "migrate", "--check")
    assert check.returncode == 1 and "audit_log" in check.stdout, check.stdout
    assert _cli(tmp_path, env, "migrate").returncode == 0
    assert _cli(tmp_path, env, "migrate", "--check").returncode == 0

    server = start_server(tmp_path, env)
    server.wait_for(SERVING)
    stubs = stubs_for(server.address)
    try:
        up = await stubs.auth.SignUp(
            auth_pb.SignUpRequest(email="plugin@example.com", password="pw-pw-pw-pw", name="P")
        )
        assert "auditLevel" in up.user.additional_fields  # the plugin's field, returned like any additional field
        await stubs.auth.SignOut(auth_pb.SignOutRequest(token=up.token))
        deadline = time.monotonic() + 15
        rows: list[tuple[str, str]] = []
        while time.monotonic() < deadline and not rows:
            with sqlite3.connect(tmp_path / "authsidecar.db") as db:
                rows = db.execute('SELECT "userId", description FROM audit_log').fetchall()
            await asyncio.sleep(0.1)
        assert rows == [(up.user.id, "security: session.delete by SignOut")]
    finally:
        await stubs.channel.close()
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[plugins.nope]\n", "plugins.nope: no plugin named 'nope' is installed"),
        ("[plugins.two_factor]\nissuer = 3\n", "plugins.two_factor: issuer"),
        ("[plugins.two_factor]\nfancy = true\n", "plugins.two_factor: fancy: unknown option"),
        (
            '[plugins.two_factor.schema.two_factor]\nmodel_name = "user"\n',
            "plugins.two_factor: plugins.two_factor.schema.two_factor.model_name: table 'user' is already used",
        ),
        (
            '[plugins.two_factor.schema.user]\nfields = { nothing = "x" }\n',
            "the plugin adds no field 'nothing' to user",
        ),
        (
            '[plugins.two_factor.schema.user]\nfields = { twoFactorEnabled = "email" }\n',
            "column 'email' is used by email and twoFactorEnabled",
        ),
        (
            '[plugins.two_factor.schema.two_factor]\nfields = { secret = "backupCodes" }\n',
            "column 'backupCodes' is used by",
        ),
        (
            '[plugins.two_factor.schema.two_factor]\nmodel_name = "authsidecar_outbox"\n',
            "table 'authsidecar_outbox' is already used",
        ),
    ],
)
def test_bad_plugin_configurations_stop_every_command(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    for command in (("migrate", "--check"), ("generate",), ("serve",)):
        result = _cli(tmp_path, {"AUTHSIDECAR_CONFIG": str(config)}, *command)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
