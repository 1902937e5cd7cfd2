"""REDIS_URL forms: one server, Sentinel, Cluster; every malformed one is a one-line configuration error that never
echoes the URL (it may hold a password)."""

from __future__ import annotations

import pytest

from authsidecar.cache.topology import parse_redis_url
from authsidecar.config import ConfigError, load_settings


def test_one_server_forms_are_kept_as_given() -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://:pw@cache.example.com:6380/2", "unix:///run/redis.sock?db=1"):
        target = parse_redis_url(url)
        assert (target.mode, target.url) == ("server", url)
    assert parse_redis_url("rediss://h:1/0").tls


def test_sentinel_form() -> None:
    target = parse_redis_url(
        "redis+sentinel://app:data%40pw@10.0.0.1,10.0.0.2:26380,[::1]:26381/mymaster/3?sentinel_password=s3cret"
    )
    assert target.mode == "sentinel"
    assert target.nodes == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26381))
    assert (target.service, target.db) == ("mymaster", 3)
    assert (target.username, target.password) == ("app", "data@pw")
    assert (target.sentinel_username, target.sentinel_password) == (None, "s3cret")
    assert target.url == "redis://app:data%40pw@node/3"  # the data nodes' URL, host found at connect time
    assert "s3cret" not in target.describe() and "data" not in target.describe()
    assert parse_redis_url("rediss+sentinel://h/svc").url == "rediss://node/0"


def test_cluster_form() -> None:
    target = parse_redis_url("redis+cluster://:pw@h1:7000,h2")
    assert target.mode == "cluster"
    assert target.nodes == (("h1", 7000), ("h2", 6379))
    assert target.password == "pw"
    assert target.describe() == "redis cluster h1:7000,h2:6379"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memcached://h:1", "unsupported scheme 'memcached'"),
        ("redis://:hunter2@h/xx", "expected /<db number>"),
        ("redis://:hunter2@h/0?colour=blue", "unknown parameter 'colour'"),
        ("redis://:hunter2@h:abc/0", "Port could not be cast"),
        ("127.0.0.1:6379", "expected redis://host:port/db"),
        ("redis+sentinel://:hunter2@h1:26379", "the service name is missing"),
        ("redis+sentinel://:hunter2@h1:26379/svc/x", "expected /<db number>"),
        ("redis+sentinel://:hunter2@h1:99999/svc", "invalid port '99999'"),
        ("redis+sentinel://:hunter2@h1,/svc", "empty host"),
        ("redis+sentinel://:hunter2@h1/svc?password=x", "unknown parameter 'password'"),
        ("redis+cluster://:hunter2@h1:7000/1", "a Redis Cluster has only database 0"),
        ("redis+cluster://:hunter2@h1:7000?sentinel_password=x", "unknown parameter 'sentinel_password'"),
        ("redis+cluster://:hunter2@h1:7000?ssl_ca_certs=/ca.pem", "unknown parameter 'ssl_ca_certs'"),
    ],
)
def test_malformed_urls_are_one_line_errors_without_the_password(
    monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert text.startswith("invalid configuration: REDIS_URL: ") and message in text, text
    assert "\n" not in text and "hunter2" not in text


def test_tls_parameters_are_accepted_with_tls_schemes_only() -> None:
    target = parse_redis_url("rediss+cluster://h1:7000?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required")
    assert target.tls and dict(target.tls_options) == {"ssl_ca_certs": "/ca.pem", "ssl_cert_reqs": "required"}
