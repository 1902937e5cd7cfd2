"""The container image and compose file, checked as far as a machine without a Docker engine allows.

- hadolint lints the Dockerfile; docker compose's own parser (compose-go) validates compose.yaml; BuildKit's
  Dockerfile parser (the ``dockerfile`` package) reads the instructions the tests below reason about.
- The image's build is replayed outside Docker: the build stage's COPY instructions copy exactly what they name
  (through the Dockerfile's .dockerignore rules) into an empty folder standing for /src, its RUN instructions run
  there with /opt/authsidecar moved under the test's folder, and the final stage's ENV, WORKDIR, ENTRYPOINT/CMD and
  HEALTHCHECK are run from that virtualenv, away from the source tree. What this cannot check: the base image's
  Python (the host's 3.11 stands in), the non-root user at run time, and Docker's own build.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import compose as compose_go
import dockerfile
import pytest

from tests.e2e.conftest import FAST_ARGON2_ENV, clean_env, free_port

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = ROOT / "server" / "container"
BIN = Path(sys.executable).parent


@dataclass
class Stage:
    """One FROM ... of the Dockerfile: its name and instructions."""

    name: str | None
    commands: list[dockerfile.Command] = field(default_factory=list)

    def all(self, cmd: str) -> list[dockerfile.Command]:
        return [c for c in self.commands if c.cmd == cmd]


def stages() -> list[Stage]:
    found: list[Stage] = []
    for command in dockerfile.parse_file(str(CONTAINER / "Dockerfile")):
        if command.cmd == "FROM":
            found.append(Stage(command.value[2] if len(command.value) == 3 else None))
        elif found:
            found[-1].commands.append(command)
    return found


def test_hadolint_finds_nothing() -> None:
    linted = subprocess.run(
        [str(BIN / "hadolint"), str(CONTAINER / "Dockerfile")], capture_output=True, text=True, timeout=60, check=False
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_compose_file_is_valid_and_needs_a_secret() -> None:
    # The binary itself: the package's console script drops its exit status.
    compose = [str(Path(compose_go.__file__).parent / "docker-compose"), "-f", str(CONTAINER / "compose.yaml")]
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    valid = subprocess.run(
        [*compose, "config", "--format", "json"],
        env={**env, "AUTHSIDECAR_SECRET": "x" * 32},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert valid.returncode == 0, valid.stderr
    config = json.loads(valid.stdout)
    services = config["services"]
    assert set(services) == {"postgres", "redis", "migrate", "authsidecar"}
    assert services["authsidecar"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert [p["host_ip"] for p in services["authsidecar"]["ports"]] == ["127.0.0.1"]  # not published beyond the host
    assert "ports" not in services["postgres"] and "ports" not in services["redis"]
    missing = subprocess.run(
        [*compose, "config", "-q"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert missing.returncode != 0 and "set AUTHSIDECAR_SECRET" in missing.stderr


def test_the_image_is_multi_stage_unprivileged_and_checks_health_over_grpc() -> None:
    build, final = stages()
    assert build.name == "build" and final.name is None
    assert [c.flags for c in final.all("COPY")] == [("--from=build",)]  # nothing but the built virtualenv
    assert not final.all("RUN") or all("pip" not in c.value[0] for c in final.all("RUN"))
    [user] = final.all("USER")
    uid = user.value[0].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000  # numeric: Kubernetes' runAsNonRoot can verify it
    [health] = final.all("HEALTHCHECK")
    assert health.value == ("CMD", "authsidecar", "health")
    assert [c.value for c in final.all("ENTRYPOINT")] == [("authsidecar",)]


def _ignored(relative: Path) -> bool:
    return "__pycache__" in relative.parts or relative.suffix == ".pyc"


def _copy(source: Path, target: Path) -> None:
    """COPY as Docker does it for a context filtered by Dockerfile.dockerignore (symlinks kept)."""
    if source.is_dir() and not source.is_symlink():
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if _ignored(relative) or (path.is_dir() and not path.is_symlink()):
                continue
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / relative, follow_symlinks=False)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


def _ignore_rules_admit(path: str) -> bool:
    admitted = [
        line[1:] for line in (CONTAINER / "Dockerfile.dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    return any(path == rule or path.startswith(rule.rstrip("/") + "/") for rule in admitted)


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage replayed into <root>/src and <root>/opt/authsidecar; returns <root>."""
    root = tmp_path_factory.mktemp("image")
    build, _ = stages()
    python_bin = root / "python-bin"
    python_bin.mkdir()
    (python_bin / "python").symlink_to(getattr(sys, "_base_executable", sys.executable))
    env = {
        **clean_env(),
        "PATH": f"{python_bin}:/usr/bin:/bin",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.pop("VIRTUAL_ENV", None)
    cwd = root
    for command in build.commands:
        if command.cmd == "WORKDIR":
            cwd = root / command.value[0].lstrip("/")
            cwd.mkdir(parents=True, exist_ok=True)
        elif command.cmd == "COPY":
            *sources, dest = command.value
            for source in sources:
                assert _ignore_rules_admit(source), f"{source} is COPY'd but excluded by Dockerfile.dockerignore"
                target = cwd / dest / Path(source).name if dest.endswith("/") else cwd / dest
                _copy(ROOT / source, target)
        elif command.cmd == "RUN":
            script = command.value[0].replace("/opt/authsidecar", str(root / "opt" / "authsidecar"))
            ran = subprocess.run(
                ["bash", "-ec", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
            )
            assert ran.returncode == 0, f"RUN {command.value[0]}\n{ran.stdout}\n{ran.stderr}"
    return root


def _final_env(root: Path) -> dict[str, str]:
    _, final = stages()
    values: dict[str, str] = {}
    for command in final.all("ENV"):
        pairs = command.value
        for key, value in zip(pairs[::2], pairs[1::2], strict=True):
            values[key] = value.replace("/opt/authsidecar", str(root / "opt" / "authsidecar")).replace(
                "/var/lib/authsidecar", str(root / "var" / "lib" / "authsidecar")
            )
    values["PATH"] = values["PATH"].replace("$PATH", "/usr/bin:/bin")
    return values


def _run(root: Path, env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    workdir = root / "var" / "lib" / "authsidecar"
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        ["authsidecar", *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_built_image_migrates_serves_and_reports_health(image_root: Path) -> None:
    env = {**clean_env(), **FAST_ARGON2_ENV, **_final_env(image_root)}
    env.pop("PYTHONPATH", None)
    installed = subprocess.run(
        ["python", "-c", "import authsidecar, authsidecar_client, sys; print(authsidecar.__file__); print(sys.prefix)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    assert str(image_root / "opt" / "authsidecar") in installed.stdout and str(ROOT / "server") not in installed.stdout

    port = free_port()
    env["AUTHSIDECAR_LISTEN"] = env["AUTHSIDECAR_LISTEN"].replace("50051", str(port))
    assert env["AUTHSIDECAR_LISTEN"] == f"0.0.0.0:{port}"
    # As shipped, a plaintext listener on every interface is refused, with what to do.
    refused = _run(image_root, env, "serve", timeout=60)
    assert refused.returncode == 2 and "AUTHSIDECAR_ALLOW_INSECURE" in refused.stderr, refused.stderr

    env["AUTHSIDECAR_ALLOW_INSECURE"] = "true"
    assert _run(image_root, env, "migrate").returncode == 0
    down = _run(image_root, env, "health")
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr
    workdir = image_root / "var" / "lib" / "authsidecar"
    with (image_root / "serve.log").open("wb") as log:
        server = subprocess.Popen(["authsidecar", "serve"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while (healthy := _run(image_root, env, "health")).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert healthy.returncode == 0, healthy.stderr + (image_root / "serve.log").read_text()
        assert healthy.stdout.strip() == f"127.0.0.1:{port}: SERVING"
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0
    assert (workdir / "authsidecar.db").stat().st_size > 0
