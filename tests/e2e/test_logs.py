"""Log lines through the real server: JSON when asked, each line of a call carrying its RPC and request id (the
caller's x-request-id when it sends one), and text lines with the id in brackets."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.e2e.conftest import clean_env, start_server


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_call_log_lines_carry_the_rpc_and_request_id(tmp_path: Path, fmt: str) -> None:
    env = {"AUTHSIDECAR_SQLITE_PATH": str(tmp_path / "a.db"), "AUTHSIDECAR_LOG_FORMAT": fmt}
    subprocess.run(
        [sys.executable, "-m", "authsidecar", "migrate"], cwd=tmp_path, env={**clean_env(), **env}, check=True
    )
    server = start_server(tmp_path, env)
    try:
        server.wait_for(health_pb2.HealthCheckResponse.SERVING)
        with grpc.insecure_channel(server.address) as channel:
            raw = channel.unary_unary("/authsidecar.v1.AuthService/SignIn")
            for metadata in ((("x-request-id", "gateway-trace-42"),), ()):
                with pytest.raises(grpc.RpcError):  # bytes that are no SignInRequest: refused, and logged
                    raw(b"\xff\xff\xff", metadata=metadata, timeout=5)
        time.sleep(0.2)
    finally:
        assert server.stop() == 0
    lines = [line for line in server.log().splitlines() if "not a valid SignInRequest" in line]
    assert len(lines) == 2, server.log()
    if fmt == "json":
        records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
        refused = [r for r in records if "not a valid SignInRequest" in r["message"]]
        assert refused[0]["rpc"] == "SignIn" and refused[0]["request_id"] == "gateway-trace-42"
        assert len(refused[1]["request_id"]) == 16 and refused[1]["request_id"] != "gateway-trace-42"
    else:
        assert "[gateway-trace-42]" in lines[0]
        assert "[-]" in next(line for line in server.log().splitlines() if "listening on" in line)
