"""load_settings: defaults, environment, TOML file, one-line errors naming the setting, secrets kept secret."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from authsidecar.assembly import build_cache
from authsidecar.cache import NullSessionCache
from authsidecar.config import ConfigError, Settings, load_settings

DB_PASSWORD = "s3cr3t-db-pa55"
REDIS_PASSWORD = "s3cr3t-redis-pa55"
DB_URL = f"postgresql://app:{DB_PASSWORD}@db.internal:5432/auth"
REDIS_URL = f"redis://:{REDIS_PASSWORD}@cache.internal:6379/0"
SECRET = "s3cret-" + "x" * 40


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No AUTHSIDECAR_*, DATABASE_URL or REDIS_URL from the outside world."""
    for key in list(os.environ):
        if key.upper().startswith("AUTHSIDECAR_") or key.upper() in {"DATABASE_URL", "REDIS_URL"}:
            monkeypatch.delenv(key)


def config_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    """Set the variables, expect ConfigError, return its message."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith("invalid configuration: "), message
    return message


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "authsidecar.toml"
    path.write_text(text, encoding="utf-8")
    return path


class TestDefaults:
    def test_values(self) -> None:
        s = load_settings()
        assert s.listen == "127.0.0.1:50051"
        assert s.database_url is None
        assert s.redis_url is None
        assert s.sqlite_path == "authsidecar.db"
        assert s.redis_key_prefix == "authsidecar:"
        assert s.cache_enabled is True
        assert s.session_expires_in == 7 * 86_400
        assert s.session_update_age == 86_400
        assert s.session_short_expires_in == 86_400
        assert s.auto_sign_in is True
        assert (s.password_min_length, s.password_max_length) == (8, 128)
        assert (s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism) == (2, 19_456, 1)
        assert s.log_level == "INFO"
        assert s.hash_max_pending is None

    def test_hash_workers_follow_cores(self) -> None:
        assert load_settings().hash_workers == (os.cpu_count() or 2)

    def test_default_hash_max_pending_scales_with_workers(self) -> None:
        one = load_settings(hash_workers=1).effective_hash_max_pending
        three = load_settings(hash_workers=3).effective_hash_max_pending
        assert one >= 1
        assert three == 3 * one

    def test_explicit_hash_max_pending_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AUTHSIDECAR_HASH_WORKERS", "3")
        monkeypatch.setenv("AUTHSIDECAR_HASH_MAX_PENDING", "7")
        s = load_settings()
        assert (s.hash_workers, s.effective_hash_max_pending) == (3, 7)

    def test_frozen(self) -> None:
        s = load_settings()
        with pytest.raises(ValueError, match="frozen"):
            s.listen = "0.0.0.0:1"  # type: ignore[misc]


class TestEnvironment:
    def test_prefixed_variables(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AUTHSIDECAR_LISTEN", "0.0.0.0:6000")
        monkeypatch.setenv("AUTHSIDECAR_SESSION_EXPIRES_IN", "3600")
        monkeypatch.setenv("AUTHSIDECAR_CACHE_ENABLED", "false")
        monkeypatch.setenv("AUTHSIDECAR_REDIS_TIMEOUT", "0.25")
        monkeypatch.setenv("AUTHSIDECAR_LOG_LEVEL", "DEBUG")
        s = load_settings()
        assert s.listen == "0.0.0.0:6000"
        assert s.session_expires_in == 3600
        assert s.cache_enabled is False
        assert s.redis_timeout == 0.25
        assert s.log_level == "DEBUG"

    def test_variable_names_are_case_insensitive(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("authsidecar_listen", "10.0.0.1:7000")
        assert load_settings().listen == "10.0.0.1:7000"

    def test_unprefixed_urls(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DATABASE_URL", DB_URL)
        monkeypatch.setenv("REDIS_URL", REDIS_URL)
        monkeypatch.setenv("AUTHSIDECAR_SECRET", SECRET)
        s = load_settings()
        assert s.database_url is not None and s.database_url.get_secret_value() == DB_URL
        assert s.redis_url is not None and s.redis_url.get_secret_value() == REDIS_URL

    def test_prefixed_database_url(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AUTHSIDECAR_DATABASE_URL", DB_URL)
        s = load_settings()
        assert s.database_url is not None and s.database_url.get_secret_value() == DB_URL

    def test_overrides_beat_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AUTHSIDECAR_LISTEN", "0.0.0.0:6000")
        assert load_settings(listen="127.0.0.1:7000").listen == "127.0.0.1:7000"


class TestErrors:
    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("AUTHSIDECAR_SESSION_EXPIRES_IN", "5"),
            ("AUTHSIDECAR_SESSION_EXPIRES_IN", "seven days"),
            ("AUTHSIDECAR_SESSION_UPDATE_AGE", "-1"),
            ("AUTHSIDECAR_PASSWORD_MIN_LENGTH", "0"),
            ("AUTHSIDECAR_PASSWORD_MAX_LENGTH", "5000"),
            ("AUTHSIDECAR_ARGON2_MEMORY_KIB", "1024"),
            ("AUTHSIDECAR_HASH_WORKERS", "0"),
            ("AUTHSIDECAR_HASH_MAX_PENDING", "0"),
            ("AUTHSIDECAR_HASH_MAX_PENDING", "many"),
            ("AUTHSIDECAR_DB_POOL_SIZE", "0"),
            ("AUTHSIDECAR_REDIS_TIMEOUT", "0"),
            ("AUTHSIDECAR_REDIS_KEY_PREFIX", "x" * 65),
            ("AUTHSIDECAR_MEMORY_CACHE_MAX_ENTRIES", "10"),
            ("AUTHSIDECAR_CACHE_ENABLED", "maybe"),
            ("AUTHSIDECAR_LOG_LEVEL", "TRACE"),
            ("AUTHSIDECAR_SQLITE_PATH", ""),
        ],
    )
    def test_bad_value_names_the_setting(self, monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
        message = config_error(monkeypatch, **{name: value})
        assert message.startswith(f"invalid configuration: {name}: "), message

    @pytest.mark.parametrize(
        "listen",
        [
            "nope",
            "localhost",
            ":50051",
            "localhost:",
            "localhost:99999",
            "localhost:-1",
            "localhost:http",
            "unix://",
            "",
        ],
    )
    def test_bad_listen(self, monkeypatch: pytest.MonkeyPatch, listen: str) -> None:
        message = config_error(monkeypatch, AUTHSIDECAR_LISTEN=listen)
        assert "AUTHSIDECAR_LISTEN" in message

    @pytest.mark.parametrize("listen", ["0.0.0.0:0", "localhost:65535", "[::1]:50051", "unix:///run/authsidecar.sock"])
    def test_good_listen(self, monkeypatch: pytest.MonkeyPatch, listen: str) -> None:
        monkeypatch.setenv("AUTHSIDECAR_LISTEN", listen)
        assert load_settings().listen == listen

    def test_unknown_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        message = config_error(monkeypatch, AUTHSIDECAR_FOO="1")
        assert message == "invalid configuration: AUTHSIDECAR_FOO: unknown setting"

    def test_unknown_variable_lowercase(self, monkeypatch: pytest.MonkeyPatch) -> None:
        message = config_error(monkeypatch, authsidecar_sesion_expires_in="3600")
        assert "unknown setting" in message
        assert "sesion_expires_in".upper() in message.upper()

    def test_min_length_above_max_length(self, monkeypatch: pytest.MonkeyPatch) -> None:
        message = config_error(monkeypatch, AUTHSIDECAR_PASSWORD_MIN_LENGTH="64", AUTHSIDECAR_PASSWORD_MAX_LENGTH="32")
        assert "AUTHSIDECAR_PASSWORD_MIN_LENGTH" in message

    def test_error_is_not_chained(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # A chained ValidationError would print the raw input (a secret, possibly) in a traceback.
        monkeypatch.setenv("AUTHSIDECAR_SESSION_EXPIRES_IN", "5")
        with pytest.raises(ConfigError) as info:
            load_settings()
        assert info.value.__cause__ is None
        assert info.value.__suppress_context__ is True


class TestSecrets:
    def test_not_in_str_or_repr(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DATABASE_URL", DB_URL)
        monkeypatch.setenv("REDIS_URL", REDIS_URL)
        monkeypatch.setenv("AUTHSIDECAR_SECRET", SECRET)
        s = load_settings()
        for text in (str(s), repr(s), str(s.model_dump()), str(s.database_url), repr(s.redis_url), repr(s.secret)):
            assert DB_PASSWORD not in text
            assert REDIS_PASSWORD not in text
            assert SECRET not in text

    def test_serving_with_redis_needs_a_secret(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REDIS_URL", REDIS_URL)
        settings = load_settings()  # migrate, generate and cleanup do not need it
        with pytest.raises(ConfigError) as info:
            build_cache(settings)
        message = str(info.value)
        assert message.startswith("invalid configuration: AUTHSIDECAR_SECRET: required with REDIS_URL")
        assert REDIS_PASSWORD not in message and "\n" not in message

    def test_no_secret_needed_without_redis_or_without_caching(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert load_settings().secret is None
        monkeypatch.setenv("REDIS_URL", REDIS_URL)
        monkeypatch.setenv("AUTHSIDECAR_CACHE_ENABLED", "false")
        assert isinstance(build_cache(load_settings()), NullSessionCache)

    def test_short_secret_is_refused_without_echoing_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        message = config_error(monkeypatch, AUTHSIDECAR_SECRET="short-secret-value")
        assert message.startswith("invalid configuration: AUTHSIDECAR_SECRET:") and "32" in message
        assert "short-secret-value" not in message

    def test_not_in_error_message(self, monkeypatch: pytest.MonkeyPatch) -> None:
        message = config_error(monkeypatch, DATABASE_URL=DB_URL, REDIS_URL=REDIS_URL, AUTHSIDECAR_DB_POOL_SIZE="0")
        assert "AUTHSIDECAR_DB_POOL_SIZE" in message
        assert DB_PASSWORD not in message
        assert REDIS_PASSWORD not in message

    def test_not_in_error_for_a_wrongly_typed_url(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        path = write_toml(tmp_path, f'redis_url = ["{REDIS_URL}"]\n')
        message = config_error(monkeypatch, AUTHSIDECAR_CONFIG=str(path))
        assert "REDIS_URL" in message.upper()
        assert REDIS_PASSWORD not in message


class TestTomlFile:
    def test_values_from_file(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        path = write_toml(
            tmp_path,
            f'listen = "0.0.0.0:9000"\nsession_expires_in = 3600\ncache_enabled = false\ndatabase_url = "{DB_URL}"\n',
        )
        monkeypatch.setenv("AUTHSIDECAR_CONFIG", str(path))
        s = load_settings()
        assert s.listen == "0.0.0.0:9000"
        assert s.session_expires_in == 3600
        assert s.cache_enabled is False
        assert s.database_url is not None and s.database_url.get_secret_value() == DB_URL
        assert s.session_update_age == 86_400  # untouched default

    def test_environment_overrides_file(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        path = write_toml(tmp_path, 'listen = "0.0.0.0:9000"\nsession_expires_in = 3600\n')
        monkeypatch.setenv("AUTHSIDECAR_CONFIG", str(path))
        monkeypatch.setenv("AUTHSIDECAR_LISTEN", "127.0.0.1:9001")
        s = load_settings()
        assert s.listen == "127.0.0.1:9001"
        assert s.session_expires_in == 3600

    def test_environment_database_url_overrides_file(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        path = write_toml(tmp_path, 'database_url = "postgresql://from-file/db"\n')
        monkeypatch.setenv("AUTHSIDECAR_CONFIG", str(path))
        monkeypatch.setenv("DATABASE_URL", DB_URL)
        s = load_settings()
        assert s.database_url is not None and s.database_url.get_secret_value() == DB_URL

    def test_missing_file(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        missing = tmp_path / "nope.toml"
        message = config_error(monkeypatch, AUTHSIDECAR_CONFIG=str(missing))
        assert "AUTHSIDECAR_CONFIG" in message
        assert str(missing) in message

    def test_directory_is_not_a_file(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        message = config_error(monkeypatch, AUTHSIDECAR_CONFIG=str(tmp_path))
        assert "AUTHSIDECAR_CONFIG" in message

    def test_unknown_key(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        path = write_toml(tmp_path, "foo = 1\n")
        message = config_error(monkeypatch, AUTHSIDECAR_CONFIG=str(path))
        assert "FOO" in message.upper()
        assert "unknown setting" in message

    def test_bad_value_names_the_setting(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        path = write_toml(tmp_path, "session_expires_in = 5\n")
        message = config_error(monkeypatch, AUTHSIDECAR_CONFIG=str(path))
        assert "AUTHSIDECAR_SESSION_EXPIRES_IN" in message

    def test_malformed_file_names_the_setting(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """A TOML syntax error must still be one line that says which setting (the file) is wrong."""
        path = write_toml(tmp_path, "session_expires_in = = 5\n")
        message = config_error(monkeypatch, AUTHSIDECAR_CONFIG=str(path))
        assert "AUTHSIDECAR_CONFIG" in message, message


def test_settings_model_forbids_unknown_fields() -> None:
    with pytest.raises(ValueError, match=r"(?i)extra"):
        Settings(not_a_setting=1)  # type: ignore[call-arg]


class TestSchemaSection:
    """[schema]: every bad key gives one line naming it."""

    @pytest.mark.parametrize(
        ("toml", "expected"),
        [
            ("[schema]\nuse_plurals = true\n", "schema.use_plurals: unknown setting"),
            ("[schema.user]\nfields = { emial = 'mail' }\n", "schema: user.fields.emial: user has no field 'emial'"),
            ("[schema.user]\nmodel_name = 'bad name'\n", "schema.user.model_name: must be a plain identifier"),
            ("[schema.user]\nfields = { email = 'e-mail' }\n", "schema.user.fields: email = 'e-mail'"),
            ("[schema.user.additional_fields.role]\ntype = 'text'\n", "schema.user.additional_fields.role.type"),
            (
                "[schema.user.additional_fields.age]\ntype = 'number'\ndefault_value = 'x'\n",
                "schema.user.additional_fields.age: default_value does not match type number",
            ),
            (
                "[schema.user.additional_fields.role]\ntype = 'string'\ninput = false\n",
                "schema.user.additional_fields.role: a required field with input = false needs a default_value",
            ),
            (
                "[schema.user.additional_fields.email]\ntype = 'string'\n",
                "schema: user.additional_fields.email: 'email' is a built-in field",
            ),
            (
                "[schema.account.additional_fields.x]\ntype = 'string'\n",
                "schema: account.additional_fields: only user and session",
            ),
            (
                "[schema.session.additional_fields.device]\ntype = 'string'\n",
                "schema: session.additional_fields.device: clients cannot set",
            ),
            (
                "[schema.session]\nmodel_name = 'user'\n",
                "schema: session.model_name: 'user' is already the table of user",
            ),
            ("[schema.user]\nfields = { name = 'email' }\n", "schema: user: column 'email' is used by"),
            ("[schema]\ngenerate_id = 'nonsense'\n", "schema.generate_id: expected"),
            (  # its key in cached documents would overwrite the built-in emailVerified
                "[schema.user.additional_fields.emailVerified]\ntype = 'boolean'\n",
                "schema: user.additional_fields.emailVerified: 'emailVerified' is a built-in field",
            ),
            (
                "[schema.session.additional_fields.USERID]\ntype = 'string'\nrequired = false\n",
                "schema: session.additional_fields.USERID: 'USERID' is a built-in field",
            ),
            (
                "[schema.user.additional_fields.d]\ntype = 'date'\nrequired = false\ndefault_value = 2020-01-01T00:00:00\n",
                "schema.user.additional_fields.d: default_value does not match type date",
            ),
            (
                "[schema.user.additional_fields.j]\ntype = 'json'\nrequired = false\ndefault_value = { at = 2020-01-01T00:00:00Z }\n",
                "schema.user.additional_fields.j: default_value does not match type json",
            ),
            (
                "[schema.user.additional_fields.n]\ntype = 'number'\nrequired = false\ndefault_value = 1e30\n",
                "schema.user.additional_fields.n: default_value does not match type number",
            ),
            ("[schema]\ngenerate_id = 'no.such.module:f'\n", "schema.generate_id: cannot import no.such.module:f"),
            (
                "[schema.user.additional_fields.token]\ntype = 'string'\n",
                "schema.user.additional_fields: 'token' cannot be a field name",
            ),
        ],
    )
    def test_bad_key_is_named(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, toml: str, expected: str) -> None:
        message = config_error(monkeypatch, AUTHSIDECAR_CONFIG=str(write_toml(tmp_path, toml)))
        assert message.startswith(f"invalid configuration: {expected}"), message

    def test_a_custom_id_function_that_cannot_be_imported_stops_start_up(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        from authsidecar.app import App

        monkeypatch.setenv(
            "AUTHSIDECAR_CONFIG", str(write_toml(tmp_path, "[schema]\ngenerate_id = 'no.such.module:f'\n"))
        )
        monkeypatch.setenv("AUTHSIDECAR_SQLITE_PATH", str(tmp_path / "x.db"))
        with pytest.raises(
            ConfigError, match=r"^invalid configuration: schema.generate_id: cannot import no.such.module:f"
        ):
            App.build(load_settings())

    @pytest.mark.parametrize("listen", ["0.0.0.0:9464", "192.0.2.7:9464", "metrics.internal:9464"])
    def test_metrics_on_a_non_loopback_address_must_be_asked_for(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, listen: str
    ) -> None:
        from authsidecar.app import App

        monkeypatch.setenv("AUTHSIDECAR_SQLITE_PATH", str(tmp_path / "x.db"))
        monkeypatch.setenv("AUTHSIDECAR_METRICS_LISTEN", listen)
        with pytest.raises(ConfigError, match=r"^invalid configuration: AUTHSIDECAR_METRICS_LISTEN: .* not a loopback"):
            App.build(load_settings())
        monkeypatch.setenv("AUTHSIDECAR_METRICS_ALLOW_REMOTE", "true")
        assert App.build(load_settings()).parts.metrics is not None
        monkeypatch.delenv("AUTHSIDECAR_METRICS_ALLOW_REMOTE")
        monkeypatch.setenv("AUTHSIDECAR_METRICS_LISTEN", "127.0.0.1:9464")
        assert App.build(load_settings()).parts.metrics is not None

    def test_a_full_example_builds_the_registry(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from tests.conftest import CUSTOM_SCHEMA, CUSTOM_SCHEMA_TOML

        registry = CUSTOM_SCHEMA.registry()
        assert (registry.user.table, registry.session.table, registry.account.table) == (
            "members",
            "user_sessions",
            "accounts",
        )
        assert (
            registry.user["email"].column == "email_address" and registry.user["email_verified"].column == "is_verified"
        )
        assert [f.name for f in registry.user.additional][:2] == ["role", "lang"]
        assert registry.user["secretNote"].column == "secret_note" and not registry.user["secretNote"].returned
        assert registry.uuid_ids and CUSTOM_SCHEMA_TOML.count("[schema") > 3
