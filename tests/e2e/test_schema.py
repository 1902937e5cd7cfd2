"""A customised schema end to end: the real server configured with CUSTOM_SCHEMA_TOML (renamed plural tables,
renamed columns, additional fields, uuid ids), through grpcurl and the Python client, on Postgres, SQLite and
MariaDB."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from grpc_health.v1 import health_pb2

from authsidecar_client import AuthClient, AuthSidecarError, fields_of
from tests.conftest import CUSTOM_SCHEMA_TOML, REDIS_URL
from tests.e2e.conftest import Server, clean_env, start_server
from tests.e2e.test_grpcurl import grpcurl

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module", params=["postgres+redis", "sqlite+memory", "mariadb+redis"])
def custom_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pg_custom_url: str,
    mariadb_custom_url: str,
    redis_prefix: str,
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("custom-schema")
    config = folder / "authsidecar.toml"
    config.write_text(CUSTOM_SCHEMA_TOML)
    env = {"AUTHSIDECAR_CONFIG": str(config)}
    if request.param.endswith("+redis"):
        database = pg_custom_url if request.param.startswith("postgres") else mariadb_custom_url
        prefix = f"{redis_prefix}e2e-{request.param}:"
        env |= {"DATABASE_URL": database, "REDIS_URL": REDIS_URL, "AUTHSIDECAR_REDIS_KEY_PREFIX": prefix}
    else:
        env |= {"AUTHSIDECAR_SQLITE_PATH": str(folder / "custom.db")}
        subprocess.run(
            [sys.executable, "-m", "authsidecar", "migrate"], cwd=folder, env={**clean_env(), **env}, check=True
        )
    server = start_server(folder, env)
    server.wait_for(health_pb2.HealthCheckResponse.SERVING)
    server.env = env
    yield server
    assert server.stop() == 0, server.log()


def test_additional_fields_through_grpcurl(custom_server: Server) -> None:
    email = f"fields-{secrets.token_hex(4)}@example.com"
    data = {"email": email, "password": PASSWORD, "name": "Ada", "additionalFields": {"lang": "fr", "age": 36}}
    up = grpcurl(custom_server, "authsidecar.v1.AuthService/SignUp", data=data)
    assert up.returncode == 0, up.stderr
    reply = json.loads(up.stdout)
    fields = reply["user"]["additional_fields"]
    assert fields["role"] == "member" and fields["lang"] == "fr" and fields["age"] == 36 and fields["vip"] is False
    assert "secretNote" not in fields  # returned = false
    assert fields["prefs"] is None and fields["tags"] is None  # optional, unset
    assert reply["session"]["additional_fields"] == {"device": "unknown"}

    refused = grpcurl(
        custom_server,
        "authsidecar.v1.AuthService/SignUp",
        data={**data, "email": "x" + email, "additionalFields": {"role": "admin"}},
    )
    error = json.loads(refused.stderr)
    assert error["code"] == 3 and error["details"][0]["reason"] == "FIELD_NOT_ALLOWED"
    assert any(v["field"] == "additional_fields.role" for d in error["details"] for v in d.get("field_violations", []))

    for _ in range(2):  # from SQL, then from the cache
        valid = grpcurl(custom_server, "authsidecar.v1.SessionService/ValidateSession", data={"token": reply["token"]})
        assert valid.returncode == 0, valid.stderr
        assert json.loads(valid.stdout)["user"]["additional_fields"] == fields


async def test_additional_fields_through_the_python_client(custom_server: Server) -> None:
    async with AuthClient(custom_server.address) as auth:
        up = await auth.sign_up(
            f"py-{secrets.token_hex(4)}@example.com",
            PASSWORD,
            name="Grace",
            additional_fields={
                "tags": ["admin-ui"],
                "prefs": {"theme": "dark"},
                "birthday": "1906-12-09T00:00:00.000Z",
            },
        )
        assert fields_of(up.user)["tags"] == ["admin-ui"]
        assert fields_of(up.user)["birthday"] == "1906-12-09T00:00:00.000Z"
        updated = await auth.update_user(up.token, additional_fields={"age": 79, "tags": None})
        assert fields_of(updated.user)["age"] == 79 and fields_of(updated.user)["tags"] is None
        current = await auth.validate_session(up.token)
        assert fields_of(current.user) == fields_of(updated.user)
        with pytest.raises(AuthSidecarError) as info:
            await auth.update_user(up.token, additional_fields={"age": "old"})
        assert info.value.reason == "VALIDATION_ERROR"
        assert info.value.field_violations[0][0] == "additional_fields.age"
    if "REDIS_URL" in custom_server.env:  # cached in Better Auth's shape, under the field's own name
        client = redis.Redis.from_url(REDIS_URL)
        try:
            prefix = custom_server.env["AUTHSIDECAR_REDIS_KEY_PREFIX"]
            names = list(client.scan_iter(match=prefix + "{session:*", count=1000))
            documents = [
                json.loads((client.get(n) or b"").split(b":", 2)[2]) for n in names if not n.endswith(b":revoked")
            ]
        finally:
            client.close()
        assert any(doc["user"].get("age") == 79 and "secretNote" in doc["user"] for doc in documents)


def test_ids_are_uuids_and_tables_renamed(custom_server: Server, tmp_path: Path) -> None:
    up = grpcurl(
        custom_server,
        "authsidecar.v1.AuthService/SignUp",
        data={"email": f"uuid-{secrets.token_hex(4)}@example.com", "password": PASSWORD, "name": "U"},
    )
    reply = json.loads(up.stdout)
    assert len(reply["user"]["id"]) == 36 and reply["user"]["id"].count("-") == 4
    check = subprocess.run(
        [sys.executable, "-m", "authsidecar", "migrate", "--check"],
        env={**clean_env(), **custom_server.env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
