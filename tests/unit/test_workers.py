"""The settings each worker of ``serve --workers N`` runs with, and what the supervisor refuses before starting any."""

from __future__ import annotations

import pytest

from authsidecar.config import ConfigError, Settings
from authsidecar.supervisor import check_workers
from authsidecar.worker import WorkerRole, metrics_address

PG = "postgresql://postgres@127.0.0.1:5432/app"
REDIS = "redis://127.0.0.1:6379/0"


def settings(**values: object) -> Settings:
    base: dict[str, object] = {"database_url": PG, "redis_url": REDIS, "secret": "s" * 32, "workers": 2}
    return Settings(**(base | values))


def test_metrics_port_plus_index() -> None:
    assert metrics_address("127.0.0.1:9464", 0) == "127.0.0.1:9464"
    assert metrics_address("127.0.0.1:9464", 3) == "127.0.0.1:9467"
    assert metrics_address("[::1]:9464", 1) == "[::1]:9465"
    assert metrics_address("127.0.0.1:0", 2) == "127.0.0.1:0"  # any free port, each its own


def test_each_worker_shares_the_port_and_only_worker_0_cleans_up() -> None:
    base = settings(metrics_listen="127.0.0.1:9464", cleanup_interval=600, hash_workers=3)
    first, second = (WorkerRole(i, 2, 99, 1).settings(base) for i in range(2))
    assert first.reuse_port and second.reuse_port and first.workers == second.workers == 1
    assert (first.cleanup_interval, second.cleanup_interval) == (600, 0)
    assert (first.metrics_listen, second.metrics_listen) == ("127.0.0.1:9464", "127.0.0.1:9465")
    assert first.hash_workers == second.hash_workers == 3  # set explicitly: kept per worker


def test_default_hashing_threads_are_split_between_the_workers() -> None:
    base = settings()
    per_worker = WorkerRole(0, 2, 99, 1).settings(base).hash_workers
    assert per_worker == max(1, -(-base.hash_workers // 2))
    assert WorkerRole(0, 64, 99, 1).settings(base).hash_workers == 1


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"listen": "unix:///run/a.sock"}, "cannot share a unix socket"),
        ({"listen": "127.0.0.1:0"}, "need a fixed port in AUTHSIDECAR_LISTEN"),
        ({"forward_auth_listen": "127.0.0.1:0"}, "need a fixed port in AUTHSIDECAR_FORWARD_AUTH_LISTEN"),
        ({"database_url": None, "redis_url": None}, "the embedded SQLite database serves one process"),
        ({"database_url": "sqlite:///tmp/x.db"}, "the embedded SQLite database serves one process"),
        ({"redis_url": None}, "without REDIS_URL each of the 2 workers would count rate limits"),
        ({"metrics_listen": "127.0.0.1:65535"}, "65536 is not a port"),
        ({"listen": "127.0.0.1:9465", "metrics_listen": "127.0.0.1:9464"}, "takes 9465, the gRPC port"),
    ],
)
def test_refused_set_ups(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        check_workers(settings(**values))
    assert str(caught.value).startswith("invalid configuration: AUTHSIDECAR_")


def test_accepted_set_ups() -> None:
    check_workers(settings())
    check_workers(settings(redis_url=None, rate_limit_enabled=False))  # limits left to something in front
    check_workers(settings(listen="0.0.0.0:50051", metrics_listen="127.0.0.1:9464", workers=8))
