"""Private Redis Cluster and Sentinel deployments for the tests, started from redis-server on free ports in temporary
directories (no Docker, nothing shared with other tests)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on the PATH: install redis-server 7 (Debian: apt-get install redis-server)")
    return path


def cli(port: int, *args: str) -> str:
    """redis-cli against 127.0.0.1:port; its stdout, stripped."""
    out = subprocess.run(
        [_binary("redis-cli"), "-p", str(port), *args], capture_output=True, text=True, timeout=10, check=False
    )
    return out.stdout.strip()


def info_field(port: int, section: str, name: str) -> str:
    """One field of INFO <section> (empty when absent)."""
    for line in cli(port, "info", section).splitlines():
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
    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(self, port: int, *args: str) -> None:
        workdir = self.root / str(port)
        workdir.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [
                _binary("redis-server"),
                *args,
                "--port",
                str(port),
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
        while info_field(port, "server", "process_id") != str(process.pid):
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
        return [k for k in cli(port, "--scan", "--pattern", pattern).splitlines() if k]


class RedisCluster(_Servers):
    """Three masters, no replicas, every slot assigned."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.ports: list[int] = []
        while len(self.ports) < 3:
            port = _cluster_port()
            if port not in self.ports:
                self.ports.append(port)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])  # the third is discovered

    def start(self) -> None:
        for port in self.ports:
            self.spawn(port, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        out = subprocess.run(
            [
                _binary("redis-cli"),
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
            lambda: all(info_field_cluster(p) == "ok" for p in self.ports),
            "cluster_state:ok on every node",
        )

    def total(self, section: str, name: str) -> int:
        """The sum of an INFO field over the masters."""
        return sum(int(info_field(p, section, name) or 0) for p in self.ports)

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


def info_field_cluster(port: int) -> str:
    for line in cli(port, "cluster", "info").splitlines():
        key, _, value = line.partition(":")
        if key == "cluster_state":
            return value.strip()
    return ""


class RedisSentinel(_Servers):
    """A primary, one replica and three sentinels (quorum 2) watching service ``authsidecar``.

    ``down_after_ms`` is how long the primary must not answer before a sentinel deems it down (a crash is
    detected that much later); ``failover_timeout_ms`` bounds a failover, and twice it is the wait before the
    sentinels try again after an election that produced no leader.
    """

    service = "authsidecar"

    def __init__(self, root: Path, down_after_ms: int = 1000, failover_timeout_ms: int = 5000) -> None:
        super().__init__(root)
        ports: list[int] = []
        while len(ports) < 5:  # free_port() can name the same port twice
            port = free_port()
            if port not in ports:
                ports.append(port)
        self.primary, self.replica, *self.sentinels = ports
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinels) + f"/{self.service}/0"

    def spawn_data_node(self, port: int, *args: str) -> None:
        """A primary or replica. A primary serves a replica's full sync at once (the default waits 5 s for more
        replicas to share a diskless transfer)."""
        self.spawn(port, "--repl-diskless-sync-delay", "0", *args)

    def start(self) -> None:
        self.spawn_data_node(self.primary)
        self.spawn_data_node(self.replica, "--replicaof", "127.0.0.1", str(self.primary))
        _wait(lambda: info_field(self.replica, "replication", "master_link_status") == "up", "the replica's link")
        for port in self.sentinels:
            conf = self.root / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary} 2\n"
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {self.service} 1\n"
            )
            self.spawn(port, str(conf), "--sentinel")
        _wait(
            lambda: all(
                cli(s, "sentinel", "get-master-addr-by-name", self.service).split() == ["127.0.0.1", str(self.primary)]
                and "num-other-sentinels" in cli(s, "sentinel", "master", self.service)
                for s in self.sentinels
            ),
            "the sentinels",
        )
        _wait(
            lambda: all(_sentinel_knows(s, self.service, 2, 1) for s in self.sentinels),
            "the sentinels to see each other and the replica",
        )

    def current_primary(self) -> int:
        """The port the sentinels name."""
        return int(cli(self.sentinels[0], "sentinel", "get-master-addr-by-name", self.service).split()[1])

    def fail_over(self) -> int:
        """SENTINEL FAILOVER; returns the new primary's port once it serves as one and the sentinels agree."""
        old = self.current_primary()
        assert cli(self.sentinels[0], "sentinel", "failover", self.service) == "OK"
        return self.await_new_primary(old)

    def await_new_primary(self, old: int, deadline: float = 15.0) -> int:
        """Once every sentinel names another primary than ``old`` and it serves as one: its port."""
        _wait(
            lambda: all(
                cli(s, "sentinel", "get-master-addr-by-name", self.service).split()[1:] not in ([], [str(old)])
                for s in self.sentinels
            ),
            "the sentinels to name a new primary",
            deadline,
        )
        new = self.current_primary()
        _wait(lambda: info_field(new, "replication", "role") == "master", "the new primary")
        return new

    def restart(self, port: int) -> None:
        """Start a data node again on its port, empty and, until a sentinel reconfigures it, a primary."""
        self.spawn_data_node(port)

    def await_replica_of(self, port: int, primary: int, deadline: float = 20.0) -> None:
        """Until ``port`` replicates ``primary`` with its link up (a sentinel turns a returning old primary into a
        replica only after it has reported itself a primary for 8 s: Redis' SENTINEL_PUBLISH_PERIOD x 4)."""
        _wait(
            lambda: (
                info_field(port, "replication", "role") == "slave"
                and info_field(port, "replication", "master_port") == str(primary)
                and info_field(port, "replication", "master_link_status") == "up"
            ),
            f"{port} to replicate {primary}",
            deadline,
        )


def _sentinel_knows(port: int, service: str, others: int, replicas: int) -> bool:
    fields = cli(port, "sentinel", "master", service).splitlines()
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
