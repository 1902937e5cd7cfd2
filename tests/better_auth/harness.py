"""A real Better Auth app (tests/better_auth/app.mjs on the pinned better-auth package) and an HTTP client for it,
shared by the compatibility tests and the benchmark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools"
APP = Path(__file__).with_name("app.mjs")
SECRET = "better-auth-test-secret-" + "fedcba9876543210" * 2
# Made by better-auth 1.7.25's default scrypt for the password "password123".
SCRYPT_HASH = (
    "54b3c2a9a699aefd2da13b71c4438ac4:810ded63d7d9526fcb36d85673997220b82615e128754541cd349ad20dde793c"
    "93710c116bd9812cc75fb4515f525ba4648ef6fd10701a6b10653cce3bd0be54"
)


def installed() -> bool:
    """Whether `make` installed better-auth into .tools."""
    return (TOOLS / "node_modules" / "better-auth" / "package.json").is_file()


@dataclass
class Reply:
    """An HTTP answer from the app."""

    status: int
    headers: HTTPMessage
    body: Any

    def cookie(self, name: str = "better-auth.session_token") -> str | None:
        """The value a Set-Cookie header gives ``name`` (URL-encoded, as sent)."""
        for header in self.headers.get_all("set-cookie") or []:
            first = header.split(";", 1)[0]
            key, _, value = first.partition("=")
            if key.strip() == name:
                return value
        return None


class BetterAuthApp:
    """The Node process and its HTTP API."""

    def __init__(self, port: int, env: dict[str, str], log_path: Path) -> None:
        if not installed():  # a missing app is a failure, not a skip: the tests exist to run against it
            raise RuntimeError("better-auth is not installed in .tools/: run `make test`, which installs it (npm)")
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        full = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", str(ROOT)),
            "BA_TOOLS": str(TOOLS),
            "BA_PORT": str(port),
            "BETTER_AUTH_SECRET": SECRET,
            "NODE_ENV": "test",
            **env,
        }
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(["node", str(APP)], env=full, stdout=log, stderr=subprocess.STDOUT)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if f"ready {port}" in self.log():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the Better Auth app did not start:\n{self.log()}")

    def log(self) -> str:
        """What the app printed."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if needed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, cookie: str | None = None) -> Reply:
        """One request to /api/auth<path> (JSON in and out), as a browser on the app's origin would send it."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}/api/auth{path}", data=data, method=method)  # noqa: S310 - http://127.0.0.1
        request.add_header("origin", self.base)
        if data is not None:
            request.add_header("content-type", "application/json")
        if cookie:
            request.add_header("cookie", cookie)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http://127.0.0.1
                raw = response.read()
                return Reply(response.status, response.headers, json.loads(raw) if raw else None)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return Reply(exc.code, exc.headers, json.loads(raw) if raw else None)

    def session(self, cookie_value: str) -> Any:
        """get-session with the session cookie: {session, user} or None."""
        reply = self.call("GET", "/get-session", cookie=f"better-auth.session_token={cookie_value}")
        assert reply.status == 200, reply
        return reply.body

    def outbox(self) -> list[dict[str, str]]:
        """Every message the app would have sent."""
        with urllib.request.urlopen(f"{self.base}/test/outbox", timeout=10) as response:  # noqa: S310 - local
            messages: list[dict[str, str]] = json.loads(response.read())
            return messages

    def last_token(self, kind: str, email: str) -> str:
        """The token of the latest ``kind`` message to ``email``."""
        end = time.monotonic() + 10
        while time.monotonic() < end:
            found = [m for m in self.outbox() if m["kind"] == kind and m["email"] == email]
            if found:
                return found[-1]["token"]
            time.sleep(0.05)
        raise AssertionError(f"no {kind} message for {email}")


def token_in_log(log: str, purpose: str, email: str) -> str:
    """The token of the latest link authsidecar's delivery=log wrote for ``purpose`` and ``email``."""
    marker = f"delivery=log: {purpose} message for {email}: "
    lines = [line for line in log.splitlines() if marker in line]
    assert lines, f"no {purpose} link for {email} in the server log"
    url = lines[-1].split(marker, 1)[1].strip()
    return parse_qs(urlsplit(url).query)["token"][0]
