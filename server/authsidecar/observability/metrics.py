"""Prometheus metrics (``AUTHSIDECAR_METRICS_LISTEN``).

The hot path pays almost nothing: each RPC adds two clock reads and a few integer increments to plain Python
counters (no locks, no label lookups); everything else (cache hits and fallbacks, hashing queue and refusals,
delivery queue, outbox backlog and lag) is read from the components' own counters when Prometheus scrapes.
prometheus_client formats and serves them.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["BUCKETS", "GatewayChecks", "Gauges", "MetricsServer", "RpcMetrics", "RpcStats"]

log = logging.getLogger("authsidecar.metrics")

# Latency buckets (seconds): fine below a millisecond, where validation answers.
BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class RpcStats:
    """One RPC's counts by status code and its latency histogram."""

    __slots__ = ("buckets", "codes", "total")

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, code: str, seconds: float) -> None:
        """Count one call."""
        self.codes[code] = self.codes.get(code, 0) + 1
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds


class RpcMetrics:
    """Per-RPC statistics; the call guard records into them only when metrics are on (AUTHSIDECAR_METRICS_LISTEN)."""

    def __init__(self) -> None:
        self.stats: dict[str, RpcStats] = {}

    def record(self, rpc: str, code: str, started: float) -> None:
        """Count a call that started at ``started`` (perf_counter) and ended now with ``code``."""
        stats = self.stats.get(rpc)
        if stats is None:
            stats = self.stats[rpc] = RpcStats()
        stats.observe(code, time.perf_counter() - started)


class GatewayChecks:
    """Gateway checks (Envoy ext_authz, forward-auth) by transport and decision: always counted (one dict
    increment per check), reported when metrics are on. One per gateway (transport/gateway.py)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def count(self, via: str, decision: str) -> None:
        """One check through ``via`` ("envoy", "forward_auth") ended in ``decision`` ("allowed", "denied",
        "unavailable", "error")."""
        key = (via, decision)
        self.counts[key] = self.counts.get(key, 0) + 1


@dataclass
class Gauges:
    """Where the other figures come from, each a callable read at scrape time (None: not in this setup)."""

    counters: dict[str, tuple[str, Callable[[], float]]] = field(default_factory=dict)  # name -> (help, read)
    gauges: dict[str, tuple[str, Callable[[], float]]] = field(default_factory=dict)


class _Collector(Collector):
    def __init__(self, gauges: Gauges, rpcs: RpcMetrics, checks: GatewayChecks | None) -> None:
        self._gauges = gauges
        self._rpcs_seen = rpcs
        self._checks = checks

    def collect(self) -> Iterable[Metric]:
        yield from self._rpcs()
        checks = CounterMetricFamily(
            "authsidecar_gateway_checks", "gateway checks, by transport and decision", labels=["via", "decision"]
        )
        for (via, decision), count in sorted(self._checks.counts.items() if self._checks is not None else ()):
            checks.add_metric([via, decision], count)
        yield checks
        for name, (text, read) in self._gauges.counters.items():
            counter = CounterMetricFamily(name, text)
            counter.add_metric([], _safe(read))
            yield counter
        for name, (text, read) in self._gauges.gauges.items():
            gauge = GaugeMetricFamily(name, text)
            gauge.add_metric([], _safe(read))
            yield gauge

    def _rpcs(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "authsidecar_rpc", "RPCs handled, by method and gRPC status code", labels=["rpc", "code"]
        )
        latency = HistogramMetricFamily(
            "authsidecar_rpc_duration_seconds", "time spent in the RPC handler", labels=["rpc"]
        )
        for rpc, stats in sorted(self._rpcs_seen.stats.items()):
            for code, count in sorted(stats.codes.items()):
                calls.add_metric([rpc, code], count)
            cumulative, buckets = 0, []
            for bound, count in zip((*BUCKETS, float("inf")), stats.buckets, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([rpc], buckets, stats.total)
        yield calls
        yield latency


def _safe(read: Callable[[], float]) -> float:
    try:
        return float(read())
    except Exception:  # a figure that cannot be read now is reported as NaN, never as a failed scrape
        return float("nan")


class MetricsServer:
    """The /metrics endpoint (prometheus_client's HTTP server, in a thread)."""

    def __init__(self, listen: str, gauges: Gauges, rpcs: RpcMetrics, checks: GatewayChecks | None = None) -> None:
        host, _, port = listen.rpartition(":")
        self.host, self.port = host.strip("[]") or "127.0.0.1", int(port)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(gauges, rpcs, checks))
        self._server: Any = None

    def start(self) -> None:
        """Serve /metrics."""
        server, _thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        self._server = server
        self.port = server.server_address[1]
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
