"""The TypeScript client (clients/typescript): compiled with its pinned tsc, then its `node --test` suite run against
the real server (TCP, and a unix socket). Missing node or packages fail with the command to run; nothing is skipped."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from tests.e2e.conftest import Server, clean_env, start_server

ROOT = Path(__file__).resolve().parents[2]
TS_DIR = ROOT / "clients" / "typescript"
TSC = TS_DIR / "node_modules" / "typescript" / "bin" / "tsc"
INSTALL = "`make ts-client` (or `npm ci --prefix clients/typescript`)"


def node_binary() -> str:
    """node (20+) from the PATH, or a failure that says what to install."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not on the PATH: install Node.js 20+, then run {INSTALL}")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    match = re.match(r"v(\d+)\.", version)
    if not match or int(match.group(1)) < 20:
        pytest.fail(f"the TypeScript client needs Node.js 20+, found {version.strip()} at {node}")
    return node


def readme_example() -> str:
    """The ```ts block of the README's "Use it from TypeScript" section."""
    section = (ROOT / "README.md").read_text().split("## Use it from TypeScript\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"^```ts\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert match, "README: no ```ts example under 'Use it from TypeScript'"
    return match.group(1)


def run_readme_example(node: str, folder: Path, address: str) -> str:
    """Compile the README example as an app would (importing "@authsidecar/client", strict), run it, return stdout."""
    folder.mkdir()
    (folder / "package.json").write_text('{"type": "module", "private": true}\n')
    (folder / "node_modules" / "@authsidecar").mkdir(parents=True)
    (folder / "node_modules" / "@authsidecar" / "client").symlink_to(TS_DIR, target_is_directory=True)
    code = readme_example()
    assert '"127.0.0.1:50051"' in code
    (folder / "example.ts").write_text(code.replace('"127.0.0.1:50051"', json.dumps(address)))
    compiled = subprocess.run(
        [node, str(TSC), "--strict", "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext",
         "--lib", "es2022,dom", "--types", "node", "--typeRoots", str(TS_DIR / "node_modules" / "@types"),
         "example.ts"],
        cwd=folder, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert compiled.returncode == 0, f"the README example does not compile:\n{compiled.stdout}{compiled.stderr}"
    ran = subprocess.run([node, "example.js"], cwd=folder, capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0, f"the README example failed:\n{ran.stdout}{ran.stderr}"
    return ran.stdout


def embedded_server(folder: Path, listen: str | None = None) -> Server:
    """The real server on its own SQLite file (migrated first)."""
    folder.mkdir()
    subprocess.run([sys.executable, "-m", "authsidecar", "migrate"], cwd=folder, env=clean_env(), check=True)
    server = start_server(folder, {"AUTHSIDECAR_SQLITE_PATH": str(folder / "authsidecar.db")}, listen=listen)
    server.wait_for(health_pb2.HealthCheckResponse.SERVING)
    return server


def test_typescript_client(tmp_path: Path) -> None:
    node = node_binary()
    for needed in (TSC, TS_DIR / "node_modules" / "@connectrpc" / "connect-node" / "package.json"):
        if not needed.exists():
            pytest.fail(f"the TypeScript client's npm packages are not installed ({needed} is missing): run {INSTALL}")

    build = subprocess.run(
        [node, str(TSC), "-p", str(TS_DIR)], cwd=TS_DIR, capture_output=True, text=True, timeout=300, check=False
    )
    assert build.returncode == 0, f"tsc failed:\n{build.stdout}{build.stderr}"

    tcp = embedded_server(tmp_path / "tcp")
    unix = embedded_server(tmp_path / "unix", listen=f"unix://{tmp_path / 'unix' / 'authsidecar.sock'}")
    try:
        env = {
            **os.environ,
            "AUTHSIDECAR_TEST_ADDRESS": tcp.address,
            "AUTHSIDECAR_TEST_UNIX_ADDRESS": unix.address,
        }
        run = subprocess.run(
            [node, "--test", "dist/test/"],
            cwd=TS_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        report = f"{run.stdout}{run.stderr}\n--- server log ---\n{tcp.log()}"
        assert run.returncode == 0, report
        assert re.search(r"^# pass [1-9]", run.stdout, re.MULTILINE), report
        assert re.search(r"^# fail 0$", run.stdout, re.MULTILINE), report
        assert re.search(r"^# skipped 0$", run.stdout, re.MULTILINE), report

        printed = run_readme_example(node, tmp_path / "readme", tcp.address).splitlines()
        assert printed[0].startswith("grace@example.com "), printed
        assert printed[-1] == "UNAUTHENTICATED INVALID_TOKEN", printed
    finally:
        assert tcp.stop() == 0, tcp.log()
        assert unix.stop() == 0, unix.log()


def test_typescript_stubs_match_proto(tmp_path: Path) -> None:
    """clients/typescript/src/gen is what its buf.gen.yaml makes from proto/ now (regenerate with `make proto-ts`)."""
    node_binary()
    buf = TS_DIR / "node_modules" / ".bin" / "buf"
    if not buf.exists():
        pytest.fail(f"the TypeScript client's npm packages are not installed ({buf} is missing): run {INSTALL}")
    out = tmp_path / "regen"
    generated = subprocess.run(
        [str(buf), "generate", "--output", str(out)],
        cwd=TS_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert generated.returncode == 0, generated.stderr
    committed = TS_DIR / "src" / "gen"
    fresh = out / "src" / "gen"
    names = sorted(p.relative_to(committed).as_posix() for p in committed.rglob("*.ts"))
    assert names == sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*.ts"))
    stale = [name for name in names if (committed / name).read_bytes() != (fresh / name).read_bytes()]
    assert not stale, f"clients/typescript/src/gen is out of date with proto/ ({stale}): run `make proto-ts`"
