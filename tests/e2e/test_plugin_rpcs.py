"""A third-party plugin's gRPC service from outside: installed as a distribution with an entry point, its RPC can be
named in a caller's ``allow`` list (least privilege, not ``*``), is refused to callers without a key or not allowed
it, before its handler runs, and an ``allow`` naming an RPC nobody serves stops start-up with one line."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.e2e.conftest import clean_env, error_details, start_server

SERVING = health_pb2.HealthCheckResponse.SERVING
APP_KEY = "echo-app-key-0123456789abcdef0123"
OTHER_KEY = "echo-other-key-0123456789abcdef012"

PLUGIN = """
from typing import Any

import grpc

from authsidecar.plugins.base import GrpcService, PluginHost, PluginParts, PluginSchema

SERVICE = "example.v1.Echo"


def add(servicer: Any, server: Any) -> None:
    handler = grpc.unary_unary_rpc_method_handler(servicer.Shout, request_deserializer=bytes, response_serializer=bytes)
    server.add_registered_method_handlers(SERVICE, {"Shout": handler})


class EchoServicer:
    calls = 0

    async def Shout(self, request: bytes, context: Any) -> bytes:
        EchoServicer.calls += 1
        return request.upper() + b" (call %d)" % EchoServicer.calls


class EchoPlugin:
    name = "echo"

    def __init__(self, options: dict[str, Any]) -> None:
        pass

    def schema(self) -> PluginSchema:
        return PluginSchema()

    def setup(self, host: PluginHost) -> PluginParts:
        return PluginParts([GrpcService(SERVICE, add, EchoServicer())])
"""


def _sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _install(site: Path) -> None:
    site.mkdir()
    (site / "echo_plugin.py").write_text(PLUGIN)
    info = site / "echo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[authsidecar.plugins]\necho = echo_plugin:EchoPlugin\n")


def _env(tmp_path: Path, allow_app: str) -> dict[str, str]:
    config = tmp_path / "echo.toml"
    config.write_text(
        "[plugins.echo]\n"
        f'[callers.app]\nkey_sha256 = "{_sha256(APP_KEY)}"\nallow = [{allow_app}]\n'
        f'[callers.other]\nkey_sha256 = "{_sha256(OTHER_KEY)}"\nallow = ["SignIn"]\n'
    )
    return {
        "AUTHSIDECAR_CONFIG": str(config),
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]),
        "AUTHSIDECAR_SQLITE_PATH": str(tmp_path / "authsidecar.db"),
    }


async def test_a_plugin_rpc_is_named_in_an_allow_list_and_guarded(tmp_path: Path) -> None:
    _install(tmp_path / "site")
    env = _env(tmp_path, '"Shout", "ValidateSession"')
    migrated = subprocess.run(
        [sys.executable, "-m", "authsidecar", "migrate"],
        env={**clean_env(), **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    server = start_server(tmp_path, env)
    server.wait_for(SERVING)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            shout = channel.unary_unary("/example.v1.Echo/Shout", request_serializer=None, response_deserializer=None)
            for metadata, reason in (
                ((), "CALLER_NOT_AUTHENTICATED"),
                ((("authorization", f"Bearer {OTHER_KEY}"),), "CALLER_NOT_ALLOWED"),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await shout(b"hello", metadata=metadata, timeout=5)
                assert error_details(caught.value).reason == reason
            reply = await shout(b"hello", metadata=(("authorization", f"Bearer {APP_KEY}"),), timeout=5)
            assert reply == b"HELLO (call 1)"  # the refused calls never reached the handler
    finally:
        assert server.stop() == 0, server.log()


def test_an_allow_list_naming_an_rpc_nobody_serves_stops_start_up(tmp_path: Path) -> None:
    _install(tmp_path / "site")
    env = _env(tmp_path, '"Shout", "Whisper"')
    result = subprocess.run(
        [sys.executable, "-m", "authsidecar", "serve"],
        env={**clean_env(), **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "AUTHSIDECAR_CALLERS.APP.ALLOW: unknown RPC 'Whisper'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
