"""When tracing is on (the standard OTEL_* variables), what a configuration that cannot work is told, and that with
tracing off the OpenTelemetry tracing SDK is never imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from authsidecar.observability.tracing import otlp_endpoint

# Imported only for tracing: the SDK's tracing, the exporter, the propagators and our modules that use them.
# (redis-py imports opentelemetry.sdk.metrics by itself whenever the SDK is installed: not ours to avoid.)
TRACING_MODULES = (
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter.otlp.proto.grpc",
    "opentelemetry.propagate",
    "authsidecar.observability.otel",
    "authsidecar.observability.traced",
    "authsidecar.transport.grpc.tracing",
)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, None),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, None),  # no endpoint: off
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, "http://collector:4317"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector"}, "http://collector:4317"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:443/"}, "https://collector.example:443"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://[::1]:4317"}, "http://[::1]:4317"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:pw@collector:4317"}, "http://collector:4317"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4317"},
            "http://b:4317",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "http://a:4317"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_TRACES_EXPORTER": "otlp"}, "http://a:4317"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_SDK_DISABLED": "true"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_TRACES_EXPORTER": "none"}, None),
    ],
)
def test_endpoint_decides_whether_tracing_is_on(environ: dict[str, str], expected: str | None) -> None:
    assert otlp_endpoint(environ) == expected


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://collector:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:notaport"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317?x=1"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "console"}, "OTEL_TRACES_EXPORTER"),
    ],
)
def test_a_configuration_that_cannot_work_is_refused_by_name(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=f"^{named}: "):
        otlp_endpoint(environ)


_BUILD = """
import json, sys
from authsidecar.app import App
from authsidecar.config import Settings
app = App.build(Settings())
print(json.dumps({"modules": sorted(sys.modules), "tracing": app.parts.tracing is not None}))
"""


def _build_app(tmp_path: Path, extra: dict[str, str]) -> tuple[set[str], bool]:
    """Wire the whole application in a fresh interpreter; the modules it imported and whether it traces."""
    env = {
        "PATH": "/usr/bin:/bin",
        "AUTHSIDECAR_ARGON2_MEMORY_KIB": "8192",
        "AUTHSIDECAR_ARGON2_TIME_COST": "1",
        **extra,
    }
    out = subprocess.run(
        [sys.executable, "-c", _BUILD], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return set(result["modules"]), bool(result["tracing"])


def test_with_no_endpoint_the_tracing_sdk_is_never_imported(tmp_path: Path) -> None:
    modules, tracing = _build_app(tmp_path, {})
    assert not tracing
    assert "authsidecar.transport.grpc.server" in modules  # the server was wired
    assert [m for m in TRACING_MODULES if m in modules] == []


def test_with_an_endpoint_the_tracing_sdk_is_wired(tmp_path: Path) -> None:
    # The same check, on: it sees the modules when they are there (nothing is sent: no span is made).
    modules, tracing = _build_app(tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert tracing
    assert [m for m in TRACING_MODULES if m not in modules] == []


def test_the_otlp_exporter_imports() -> None:
    # Guards the installation: xds-protos ships an old copy of opentelemetry.proto that, installed after
    # opentelemetry-proto, replaces its modules and breaks the exporter's import.
    from opentelemetry.proto.common.v1 import common_pb2

    from authsidecar.observability import otel

    assert hasattr(common_pb2, "InstrumentationScope")
    assert otel.Tracing
