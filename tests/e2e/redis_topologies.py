"""Private Redis Cluster and Sentinel deployments for the tests, started from redis-server on free ports in temporary
directories (no Docker, nothing shared with other tests); in plaintext, or TLS-only when given a ``RedisTls``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on the PATH: install redis-server 7 (Debian: apt-get install redis-server)")
    return path


@dataclass(frozen=True)
class RedisTls:
    """TLS-only nodes (``--port 0``): every node serves TLS on its port with ``cert``/``key``, presents
    ``client_cert``/``client_key`` when it connects to another node (replication, the cluster bus, a sentinel's
    links), and trusts ``ca``; with ``auth_clients`` every client must present a certificate signed by ``ca`` too.
    redis-cli talks to the nodes with ``ca`` and the client certificate."""

    ca: str
    cert: str
    key: str
    client_cert: str
    client_key: str
    auth_clients: bool = True

    def settings(self, port: int) -> list[tuple[str, str]]:
        """The node's TLS settings (name, value): as ``--name value`` arguments or config-file lines."""
        return [
            ("port", "0"),
            ("tls-port", str(port)),
            ("tls-cert-file", self.cert),
            ("tls-key-file", self.key),
            ("tls-client-cert-file", self.client_cert),
            ("tls-client-key-file", self.client_key),
            ("tls-ca-cert-file", self.ca),
            ("tls-auth-clients", "yes" if self.auth_clients else "no"),
            ("tls-replication", "yes"),  # replicas to their primary, sentinels to everyone: TLS
            ("tls-cluster", "yes"),  # the cluster bus (ignored outside a cluster)
        ]

    def arguments(self, port: int) -> list[str]:
        return [arg for name, value in self.settings(port) for arg in (f"--{name}", value)]

    def config(self, port: int) -> str:
        return "".join(f"{name} {value}\n" for name, value in self.settings(port))

    def cli_arguments(self) -> list[str]:
        return ["--tls", "--cacert", self.ca, "--cert", self.client_cert, "--key", self.client_key]


def cli(port: int, *args: str, tls: RedisTls | None = None) -> str:
    """redis-cli against 127.0.0.1:port (over TLS with ``tls``); its stdout, stripped."""
    command = [_binary("redis-cli"), *(tls.cli_arguments() if tls else ()), "-p", str(port), *args]
    out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    return out.stdout.strip()


def info_field(port: int, section: str, name: str, tls: RedisTls | None = None) -> str:
    """One field of INFO <section> (empty when absent)."""
    for line in cli(port, "info", section, tls=tls).splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return ""


def _wait(condition: object, what: str, deadline: float = 15.0) -> None:
    assert callable(condition)
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


class _Servers:
    def __init__(self, root: Path, tls: RedisTls | None = None) -> None:
        self.root = root
        self.tls = tls
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def cli(self, port: int, *args: str) -> str:
        """redis-cli against one of these nodes (over TLS when they speak only TLS)."""
        return cli(port, *args, tls=self.tls)

    def info_field(self, port: int, section: str, name: str) -> str:
        """One field of a node's INFO <section>."""
        return info_field(port, section, name, tls=self.tls)

    def spawn(self, port: int, *args: str) -> None:
        workdir = self.root / str(port)
        workdir.mkdir(parents=True, exist_ok=True)
        listen = self.tls.arguments(port) if self.tls else ["--port", str(port)]
        self.processes[port] = subprocess.Popen(
            [
                _binary("redis-server"),
                *args,
                *listen,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--logfile",
                str(workdir / "redis.log"),
            ],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
        )
        process = self.processes[port]
        end = time.monotonic() + 15
        # Its own answer: PONG could come from another server that holds the port (this one then fails to bind).
        while self.info_field(port, "server", "process_id") != str(process.pid):
            log = workdir / "redis.log"
            if process.poll() is not None or time.monotonic() > end:
                tail = log.read_text()[-800:] if log.exists() else "(no log)"
                pytest.fail(f"redis-server on port {port} did not start: {tail}")
            time.sleep(0.05)

    def kill(self, port: int) -> None:
        process = self.processes.get(port)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()

    def keys_on(self, port: int, pattern: str) -> list[str]:
        """Matching keys on one server."""
        return [k for k in self.cli(port, "--scan", "--pattern", pattern).splitlines() if k]


class RedisCluster(_Servers):
    """Three masters, no replicas, every slot assigned; TLS-only (clients and the cluster bus) with ``tls``."""

    def __init__(self, root: Path, tls: RedisTls | None = None) -> None:
        super().__init__(root, tls)
        self.ports: list[int] = []
        while len(self.ports) < 3:
            port = _cluster_port()
            if port not in self.ports:
                self.ports.append(port)

    @property
    def url(self) -> str:
        """``redis+cluster://`` (``rediss+cluster://`` with TLS: the caller adds its ``?ssl_...`` parameters)."""
        scheme = "rediss+cluster" if self.tls else "redis+cluster"
        return f"{scheme}://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])  # the third is discovered

    def start(self) -> None:
        for port in self.ports:
            self.spawn(port, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        out = subprocess.run(
            [
                _binary("redis-cli"),
                *(self.tls.cli_arguments() if self.tls else ()),
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        _wait(
            lambda: all(info_field_cluster(p, self.tls) == "ok" for p in self.ports),
            "cluster_state:ok on every node",
        )

    def total(self, section: str, name: str) -> int:
        """The sum of an INFO field over the masters."""
        return sum(int(self.info_field(p, section, name) or 0) for p in self.ports)

    def keys(self, pattern: str) -> list[str]:
        """Matching keys on every master."""
        return [k for p in self.ports for k in self.keys_on(p, pattern)]


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    pytest.fail("no free port pair for a cluster node")


def info_field_cluster(port: int, tls: RedisTls | None = None) -> str:
    for line in cli(port, "cluster", "info", tls=tls).splitlines():
        key, _, value = line.partition(":")
        if key == "cluster_state":
            return value.strip()
    return ""


class RedisSentinel(_Servers):
    """A primary, one replica and three sentinels (quorum 2) watching service ``authsidecar``.

    ``down_after_ms`` is how long the primary must not answer before a sentinel deems it down (a crash is
    detected that much later); ``failover_timeout_ms`` bounds a failover, and twice it is the wait before the
    sentinels try again after an election that produced no leader. With ``tls`` every node, sentinels included,
    speaks only TLS, and the sentinels reach the data nodes and each other over TLS.
    """

    service = "authsidecar"

    def __init__(
        self, root: Path, down_after_ms: int = 1000, failover_timeout_ms: int = 5000, tls: RedisTls | None = None
    ) -> None:
        super().__init__(root, tls)
        self.primary, self.replica, *self.sentinels = (free_port() for _ in range(5))  # five distinct ports
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    @property
    def url(self) -> str:
        """``redis+sentinel://`` (``rediss+sentinel://`` with TLS: the caller adds its ``?ssl_...`` parameters)."""
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        return f"{scheme}://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinels) + f"/{self.service}/0"

    def spawn_data_node(self, port: int, *args: str) -> None:
        """A primary or replica. A primary serves a replica's full sync at once (the default waits 5 s for more
        replicas to share a diskless transfer)."""
        self.spawn(port, "--repl-diskless-sync-delay", "0", *args)

    def start(self) -> None:
        self.spawn_data_node(self.primary)
        self.spawn_data_node(self.replica, "--replicaof", "127.0.0.1", str(self.primary))
        _wait(lambda: self.info_field(self.replica, "replication", "master_link_status") == "up", "the replica's link")
        for port in self.sentinels:
            conf = self.root / f"sentinel-{port}.conf"
            listen = self.tls.config(port) if self.tls else f"port {port}\n"
            conf.write_text(
                f"{listen}bind 127.0.0.1\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary} 2\n"
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {self.service} 1\n"
            )
            self.spawn(port, str(conf), "--sentinel")
        _wait(
            lambda: all(
                self.cli(s, "sentinel", "get-master-addr-by-name", self.service).split()
                == ["127.0.0.1", str(self.primary)]
                and "num-other-sentinels" in self.cli(s, "sentinel", "master", self.service)
                for s in self.sentinels
            ),
            "the sentinels",
        )
        _wait(
            lambda: all(_sentinel_knows(s, self.service, 2, 1, self.tls) for s in self.sentinels),
            "the sentinels to see each other and the replica",
        )

    def current_primary(self) -> int:
        """The port the sentinels name."""
        return int(self.cli(self.sentinels[0], "sentinel", "get-master-addr-by-name", self.service).split()[1])

    def fail_over(self) -> int:
        """SENTINEL FAILOVER; returns the new primary's port once it serves as one and the sentinels agree."""
        old = self.current_primary()
        assert self.cli(self.sentinels[0], "sentinel", "failover", self.service) == "OK"
        return self.await_new_primary(old)

    def await_new_primary(self, old: int, deadline: float = 15.0) -> int:
        """Once every sentinel names another primary than ``old`` and it serves as one: its port."""
        _wait(
            lambda: all(
                self.cli(s, "sentinel", "get-master-addr-by-name", self.service).split()[1:] not in ([], [str(old)])
                for s in self.sentinels
            ),
            "the sentinels to name a new primary",
            deadline,
        )
        new = self.current_primary()
        _wait(lambda: self.info_field(new, "replication", "role") == "master", "the new primary")
        return new

    def restart(self, port: int) -> None:
        """Start a data node again on its port, empty and, until a sentinel reconfigures it, a primary."""
        self.spawn_data_node(port)

    def await_replica_of(self, port: int, primary: int, deadline: float = 20.0) -> None:
        """Until ``port`` replicates ``primary`` with its link up (a sentinel turns a returning old primary into a
        replica only after it has reported itself a primary for 8 s: Redis' SENTINEL_PUBLISH_PERIOD x 4)."""
        _wait(
            lambda: (
                self.info_field(port, "replication", "role") == "slave"
                and self.info_field(port, "replication", "master_port") == str(primary)
                and self.info_field(port, "replication", "master_link_status") == "up"
            ),
            f"{port} to replicate {primary}",
            deadline,
        )


def _sentinel_knows(port: int, service: str, others: int, replicas: int, tls: RedisTls | None = None) -> bool:
    fields = cli(port, "sentinel", "master", service, tls=tls).splitlines()
    info = dict(zip(fields[::2], fields[1::2], strict=False))
    return int(info.get("num-other-sentinels", 0)) >= others and int(info.get("num-slaves", 0)) >= replicas


def connections_by_remote_port(pid: int) -> Counter[int]:
    """The established TCP connections of a process, counted by the port they go to (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    counts: Counter[int] = Counter()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == "01" and fields[9] in inodes:  # ESTABLISHED, ours
                    counts[int(fields[2].rsplit(":", 1)[1], 16)] += 1
    return counts
