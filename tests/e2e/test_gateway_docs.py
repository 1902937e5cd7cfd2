"""The README's gateway samples: the Envoy configuration parses into Envoy's own Bootstrap message (every field,
enum and type name exists; it was not run against a real Envoy), and the nginx sample is the configuration
tests/e2e/test_gateway_nginx.py runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401 - registers the type of an Any
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401 - registers the type
from google.protobuf import json_format

from tests.e2e.test_gateway_nginx import NGINX_CONF

README = Path(__file__).resolve().parents[2] / "README.md"


def _section() -> str:
    text = README.read_text()
    start = text.index("## Gateways")
    return text[start : text.index("\n## ", start + 1)]


def _block(language: str) -> str:
    found = re.search(rf"```{language}\n(.*?)```", _section(), re.S)
    assert found, f"no {language} sample in the README's Gateways section"
    return found.group(1)


def test_envoy_sample_is_a_valid_envoy_bootstrap() -> None:
    bootstrap = json_format.ParseDict(json.loads(_block("json")), bootstrap_pb2.Bootstrap())
    listener = bootstrap.static_resources.listeners[0]
    manager = http_connection_manager_pb2.HttpConnectionManager()
    assert listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    ext_authz = ext_authz_pb2.ExtAuthz()
    assert manager.http_filters[0].typed_config.Unpack(ext_authz)
    assert ext_authz.grpc_service.envoy_grpc.cluster_name == "authsidecar"
    assert not ext_authz.failure_mode_allow
    assert ext_authz.status_on_error.code == 503
    clusters = {cluster.name: cluster for cluster in bootstrap.static_resources.clusters}
    address = clusters["authsidecar"].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert address.socket_address.port_value == 50051  # AUTHSIDECAR_LISTEN's default


def test_nginx_sample_is_the_tested_configuration() -> None:
    tested = {line.split("#")[0].strip() for line in NGINX_CONF.splitlines()}
    sample = [line.split("#")[0].strip() for line in _block("nginx").splitlines()]
    directives = [
        line
        for line in sample
        if line.startswith(("auth_request", "proxy_set_header", "proxy_pass_request_body", "proxy_http_version"))
        or line in ("internal;", "proxy_pass http://authsidecar;", "keepalive 8;")
    ]
    assert len(directives) >= 12
    missing = [line for line in directives if line not in tested]
    assert not missing, f"README nginx lines not run by test_gateway_nginx.py: {missing}"
