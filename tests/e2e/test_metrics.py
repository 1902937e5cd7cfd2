"""The Prometheus endpoint through the real server: per-RPC counts by status code and latency histograms, cache
hits and misses, hashing, delivery and outbox figures (a receiver that is down leaves a backlog and a lag)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import session_service_pb2 as session_pb
from tests.conftest import REDIS_URL
from tests.e2e.conftest import free_port, start_server, stubs_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(url, timeout=5)).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_rpcs_cache_and_outbox(tmp_path: Path, pg_url: str, redis_prefix: str) -> None:
    metrics_port = free_port()
    config = tmp_path / "hooks.toml"
    config.write_text(f'[[hooks]]\nevents = ["user.*"]\nwhen = "after"\nurl = "http://127.0.0.1:{free_port()}/x"\n')
    env = {
        "DATABASE_URL": pg_url,
        "REDIS_URL": REDIS_URL,
        "AUTHSIDECAR_REDIS_KEY_PREFIX": redis_prefix,
        "AUTHSIDECAR_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        "AUTHSIDECAR_CONFIG": str(config),
        "AUTHSIDECAR_WEBHOOK_SECRET": "metrics-test-secret-0123456789abcdef",
    }
    server = start_server(tmp_path, env)
    server.wait_for(health_pb2.HealthCheckResponse.SERVING)
    stubs = stubs_for(server.address)
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        email = f"metrics-{secrets.token_hex(4)}@example.com"
        up = await stubs.auth.SignUp(auth_pb.SignUpRequest(email=email, password="pw-pw-pw-pw", name="M"))
        for _ in range(3):
            await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=up.token))
        with pytest.raises(grpc.aio.AioRpcError):
            await stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password="wrong-wrong"))
        samples = await _samples(url)
        for _ in range(30):  # the outbox figures are refreshed every 5 s
            if samples.get(("authsidecar_outbox_backlog", ()), 0) >= 1:
                break
            await asyncio.sleep(0.5)
            samples = await _samples(url)
        assert samples[("authsidecar_rpc_total", (("code", "OK"), ("rpc", "ValidateSession")))] == 3
        assert samples[("authsidecar_rpc_total", (("code", "UNAUTHENTICATED"), ("rpc", "SignIn")))] == 1
        assert samples[("authsidecar_rpc_duration_seconds_count", (("rpc", "ValidateSession"),))] == 3
        assert samples[("authsidecar_rpc_duration_seconds_bucket", (("le", "+Inf"), ("rpc", "SignUp")))] == 1
        assert samples[("authsidecar_session_cache_hits_total", ())] >= 2  # SignUp wrote it through
        assert samples[("authsidecar_password_hash_pending", ())] == 0
        assert samples[("authsidecar_delivery_queue", ())] == 0
        assert samples[("authsidecar_outbox_backlog", ())] >= 1  # the receiver is down
        assert samples[("authsidecar_outbox_lag_seconds", ())] >= 0
        assert ("authsidecar_session_cache_fallbacks_total", ()) in samples
    finally:
        await stubs.channel.close()
        assert server.stop() == 0, server.log()
