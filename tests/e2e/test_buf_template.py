"""proto/buf.gen.yaml: stubs for Go and TypeScript in one offline command (`buf generate --template buf.gen.yaml`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_generation_template_makes_go_and_typescript_stubs(tmp_path: Path) -> None:
    buf = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
    es = ROOT / "clients" / "typescript" / "node_modules" / ".bin"
    assert buf.exists() and (es / "protoc-gen-es").exists(), "installed by make test"
    assert shutil.which("protoc-gen-go") and shutil.which("protoc-gen-go-grpc"), "make go-tools (Debian packages)"
    env = {**os.environ, "PATH": f"{os.environ['PATH']}:{es}"}
    generated = subprocess.run(
        [str(buf), "generate", "--template", "buf.gen.yaml", "-o", str(tmp_path)],
        cwd=ROOT / "proto",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert generated.returncode == 0, generated.stderr
    go = {p.name for p in (tmp_path / "gen" / "go" / "authsidecar" / "v1").iterdir()}
    ts = {p.name for p in (tmp_path / "gen" / "ts" / "authsidecar" / "v1").iterdir()}
    protos = [p.stem for p in (ROOT / "proto" / "authsidecar" / "v1").glob("*.proto")]
    assert {f"{name}.pb.go" for name in protos} <= go
    assert {"auth_service_grpc.pb.go", "session_service_grpc.pb.go", "two_factor_service_grpc.pb.go"} <= go
    assert {f"{name}_pb.ts" for name in protos} <= ts
    assert not (tmp_path / "gen" / "go" / "google").exists()  # google/rpc comes from genproto
