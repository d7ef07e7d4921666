from pathlib import Path

import pytest

import settings as settings_module
from app import build_provisioner, build_token_service
from db.session import default_database_url
from schema.limits import IntrospectionPolicy, QueryLimits
from services.google import GOOGLE_CERTS_URL
from services.metrics import MetricsAccess
from services.provisioning import NoopProvisioner, WebhookProvisioner
from services.rate_limit import Rate
from services.telemetry import tracing_wanted
from settings import ConfigError, Environment, Settings


@pytest.fixture(autouse=True)
def dev_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "instance" / "dev-jwt-secret"
    monkeypatch.setattr(settings_module, "DEV_SECRET_FILE", path)
    return path


def test_defaults(tmp_path: Path, dev_secret_file: Path) -> None:
    settings = Settings.from_env({}, dotenv_path=tmp_path / "missing.env")
    assert settings == Settings(
        database_url=default_database_url(),
        environment=Environment.DEVELOPMENT,
        provisioning_webhook_url=None,
        provisioning_timeout_seconds=3.0,
        log_level="INFO",
        jwt_secret=dev_secret_file.read_text(),
        jwt_algorithm="HS256",
        jwt_private_key_pem=None,
        jwt_public_keys_pem=(),
        jwt_ttl_seconds=3600,
        jwt_issuer="userql",
        jwt_audience="userql",
        jwt_leeway_seconds=30,
        google_client_ids=(),
        google_hosted_domain=None,
        google_signup_enabled=True,
        google_certs_url=GOOGLE_CERTS_URL,
        introspection=IntrospectionPolicy.EVERYONE,
        field_suggestions=True,
        graphiql=True,
        metrics_access=MetricsAccess.LOOPBACK,
    )
    assert settings.database_url.endswith("/instance/userql.sqlite3")
    assert isinstance(build_provisioner(settings), NoopProvisioner)


def test_production_hides_the_schema_by_default(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"USERQL_ENV": "production", "JWT_SECRET": "x" * 32}, dotenv_path=tmp_path / "x"
    )
    assert settings.introspection is IntrospectionPolicy.ADMIN
    assert (settings.field_suggestions, settings.graphiql) == (False, False)
    assert (settings.max_request_bytes, settings.batch_max) == (102_400, 0)
    assert settings.query_limits == QueryLimits()
    assert settings.rate_limits == {"sign_in": Rate(10, 60), "create_user": Rate(30, 60)}
    assert (settings.redis_url, settings.csrf_require_preflight) == (None, False)


def test_hardening_settings_are_read(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "JWT_SECRET": "x" * 32,
            "MAX_REQUEST_BYTES": "2048",
            "GRAPHQL_BATCH_MAX": "5",
            "QUERY_MAX_DEPTH": "4",
            "QUERY_MAX_ALIASES": "3",
            "QUERY_MAX_DIRECTIVES": "2",
            "QUERY_MAX_TOKENS": "100",
            "QUERY_MAX_COST": "50",
            "GRAPHQL_INTROSPECTION": "NOBODY",
            "GRAPHQL_FIELD_SUGGESTIONS": "false",
            "GRAPHIQL": "off",
            "RATE_LIMIT_SIGN_IN": "3/10",
            "RATE_LIMIT_CREATE_USER": "7/3600",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "CSRF_REQUIRE_PREFLIGHT": "yes",
            "TRUSTED_PROXIES": "1",
        },
        dotenv_path=tmp_path / "x",
    )
    assert (settings.max_request_bytes, settings.batch_max) == (2048, 5)
    assert settings.query_limits == QueryLimits(
        max_depth=4, max_aliases=3, max_directives=2, max_tokens=100, max_cost=50
    )
    assert settings.introspection is IntrospectionPolicy.NOBODY
    assert (settings.field_suggestions, settings.graphiql) == (False, False)
    assert settings.rate_limits == {"sign_in": Rate(3, 10), "create_user": Rate(7, 3600)}
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert (settings.csrf_require_preflight, settings.trusted_proxies) == (True, 1)


def test_development_keeps_one_random_secret(tmp_path: Path, dev_secret_file: Path) -> None:
    first = Settings.from_env({}, dotenv_path=tmp_path / "x").jwt_secret
    again = Settings.from_env({"USERQL_ENV": "test"}, dotenv_path=tmp_path / "x").jwt_secret
    assert first == again
    assert first is not None
    assert len(first) >= 32
    assert dev_secret_file.stat().st_mode & 0o777 == 0o600


def test_production_needs_a_real_secret(tmp_path: Path) -> None:
    production = {"USERQL_ENV": "production"}
    with pytest.raises(ConfigError, match="JWT_SECRET is required in production"):
        Settings.from_env(production, dotenv_path=tmp_path / "x")
    for example in settings_module.EXAMPLE_SECRETS:
        with pytest.raises(ConfigError, match="example value"):
            Settings.from_env({**production, "JWT_SECRET": example}, dotenv_path=tmp_path / "x")
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        build_token_service(
            Settings.from_env({**production, "JWT_SECRET": "short"}, dotenv_path=tmp_path / "x")
        )


def test_every_setting_is_read(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "mysql+pymysql://u@db/userql",
            "USERQL_ENV": "Production",
            "USER_PROVISIONING_WEBHOOK_URL": "https://hooks.example/users",
            "USER_PROVISIONING_TIMEOUT_SECONDS": "1.5",
            "LOG_LEVEL": "debug",
            "JWT_SECRET": "s" * 32,
            "JWT_TTL_SECONDS": "600",
            "JWT_ISSUER": "https://auth.example",
            "JWT_AUDIENCE": "api",
            "JWT_LEEWAY_SECONDS": "0",
            "GOOGLE_CLIENT_IDS": " one.apps.googleusercontent.com , two ",
            "GOOGLE_HOSTED_DOMAIN": "example.com",
            "GOOGLE_SIGNUP_ENABLED": "no",
            "GOOGLE_CERTS_URL": "http://127.0.0.1:9/certs",
        },
        dotenv_path=tmp_path / "missing.env",
    )
    assert settings.database_url == "mysql+pymysql://u@db/userql"
    assert settings.environment is Environment.PRODUCTION
    assert settings.provisioning_timeout_seconds == 1.5
    assert settings.log_level == "DEBUG"
    assert isinstance(build_provisioner(settings), WebhookProvisioner)
    assert settings.jwt_secret == "s" * 32
    assert (settings.jwt_ttl_seconds, settings.jwt_leeway_seconds) == (600, 0)
    assert (settings.jwt_issuer, settings.jwt_audience) == ("https://auth.example", "api")
    assert settings.google_client_ids == ("one.apps.googleusercontent.com", "two")
    assert settings.google_hosted_domain == "example.com"
    assert settings.google_signup_enabled is False
    assert settings.google_certs_url == "http://127.0.0.1:9/certs"


def test_the_environment_wins_over_the_dotenv_file(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("DATABASE_URL=sqlite:///from-file.db\nUSERQL_ENV=test\n")
    settings = Settings.from_env(
        {"USERQL_ENV": "production", "JWT_SECRET": "x" * 32}, dotenv_path=dotenv
    )
    assert settings.database_url == "sqlite:///from-file.db"
    assert settings.environment is Environment.PRODUCTION


def test_the_dotenv_file_in_the_working_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("LOG_LEVEL=WARNING\n")
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).log_level == "WARNING"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("USERQL_ENV", "staging", "USERQL_ENV must be one of development, production, test"),
        ("USER_PROVISIONING_TIMEOUT_SECONDS", "soon", "must be a number"),
        ("USER_PROVISIONING_TIMEOUT_SECONDS", "0", "must be from 0.1 to 60"),
        ("USER_PROVISIONING_TIMEOUT_SECONDS", "600", "must be from 0.1 to 60"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL must be"),
        ("JWT_TTL_SECONDS", "0", "JWT_TTL_SECONDS must be from 1"),
        ("JWT_LEEWAY_SECONDS", "3600", "JWT_LEEWAY_SECONDS must be from 0 to 300"),
        ("GOOGLE_SIGNUP_ENABLED", "maybe", "GOOGLE_SIGNUP_ENABLED must be true or false"),
        ("JWT_PRIVATE_KEY_FILE", "/nonexistent/key.pem", "cannot read key file"),
        ("GRAPHQL_INTROSPECTION", "sometimes", "GRAPHQL_INTROSPECTION must be one of everyone"),
        ("RATE_LIMIT_SIGN_IN", "ten per minute", "RATE_LIMIT_SIGN_IN must look like 10/60"),
        ("RATE_LIMIT_CREATE_USER", "0/60", "RATE_LIMIT_CREATE_USER must look like"),
        ("GRAPHQL_BATCH_MAX", "1000", "GRAPHQL_BATCH_MAX must be from 0 to 100"),
        ("DB_REPLICA_MAX_LAG_SECONDS", "-1", "DB_REPLICA_MAX_LAG_SECONDS must be from 0"),
        ("SHUTDOWN_DRAIN_SECONDS", "-1", "SHUTDOWN_DRAIN_SECONDS must be from 0.0 to 60.0"),
        ("SHUTDOWN_DRAIN_SECONDS", "61", "SHUTDOWN_DRAIN_SECONDS must be from 0.0 to 60.0"),
    ],
)
def test_bad_values_are_refused_at_startup(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({variable: value}, dotenv_path=tmp_path / "missing.env")


def test_a_replica_is_read_for_a_mysql_primary(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "mysql+pymysql://u@primary/userql",
            "DATABASE_READ_URL": "mysql+pymysql://u@replica/userql",
            "DB_REPLICA_MAX_LAG_SECONDS": "2.5",
        },
        dotenv_path=tmp_path / "missing.env",
    )
    assert settings.database_read_url == "mysql+pymysql://u@replica/userql"
    assert settings.replica_max_lag_seconds == 2.5


@pytest.mark.parametrize(
    ("primary", "read_url", "message"),
    [
        ("", "mysql+pymysql://u@replica/userql", "needs DATABASE_URL to be MySQL or MariaDB"),
        ("mysql+pymysql://u@db/userql", "sqlite:///replica.db", "needs DATABASE_READ_URL to be"),
        ("mysql+pymysql://u@db/userql", "replica.example", "DATABASE_READ_URL is not a database"),
    ],
)
def test_a_replica_needs_mysql_on_both_sides(
    tmp_path: Path, primary: str, read_url: str, message: str
) -> None:
    environ = {"DATABASE_URL": primary, "DATABASE_READ_URL": read_url}
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(environ, dotenv_path=tmp_path / "missing.env")


def test_the_drain_on_sigterm_is_off_unless_set(tmp_path: Path) -> None:
    missing = tmp_path / "missing.env"
    assert Settings.from_env({}, dotenv_path=missing).shutdown_drain_seconds == 0
    drained = Settings.from_env({"SHUTDOWN_DRAIN_SECONDS": "2.5"}, dotenv_path=missing)
    assert drained.shutdown_drain_seconds == 2.5


def test_a_webhook_url_that_is_not_http_is_refused(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"USER_PROVISIONING_WEBHOOK_URL": "file:///etc/passwd"}, dotenv_path=tmp_path / "x"
    )
    with pytest.raises(ConfigError, match="USER_PROVISIONING_WEBHOOK_URL"):
        build_provisioner(settings)


def test_asymmetric_keys_are_read_from_files(tmp_path: Path) -> None:
    private, public = tmp_path / "private.pem", tmp_path / "old.pem"
    private.write_bytes(b"PRIVATE")
    public.write_bytes(b"PUBLIC")
    settings = Settings.from_env(
        {
            "JWT_ALGORITHM": "rs256",
            "JWT_PRIVATE_KEY_FILE": str(private),
            "JWT_PUBLIC_KEY_FILES": f"{public}, {public}",
            "JWT_SECRET": "ignored-when-signing-with-keys-xxxxxxxxxx",
        },
        dotenv_path=tmp_path / "x",
    )
    assert settings.jwt_algorithm == "RS256"
    assert settings.jwt_secret is None
    assert settings.jwt_private_key_pem == b"PRIVATE"
    assert settings.jwt_public_keys_pem == (b"PUBLIC", b"PUBLIC")
    with pytest.raises(ConfigError, match="JWT settings: "):
        build_token_service(settings)  # not a real PEM key


def test_metrics_are_off_in_production_and_tracing_off_without_an_endpoint(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"USERQL_ENV": "production", "JWT_SECRET": "x" * 32}, dotenv_path=tmp_path / "x"
    )
    assert (settings.metrics_access, settings.metrics_token, settings.tracing) == (
        MetricsAccess.OFF,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("setting", "environ", "tracing"),
    [
        (None, {}, False),
        (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        (None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        (True, {}, True),
        (False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
        (True, {"OTEL_SDK_DISABLED": "true"}, False),
        (
            None,
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "TRUE"},
            False,
        ),
    ],
)
def test_tracing_follows_the_setting_then_the_sdk_s_environment(
    setting: bool | None, environ: dict[str, str], tracing: bool
) -> None:
    assert tracing_wanted(setting, environ) is tracing


def test_tracing_is_a_switch_or_unset(tmp_path: Path) -> None:
    read = [
        Settings.from_env({"TRACING": raw}, dotenv_path=tmp_path / "x").tracing
        for raw in ("on", "off", "")
    ]
    assert read == [True, False, None]


def test_metrics_token_mode_needs_a_long_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="METRICS_TOKEN"):
        Settings.from_env({"METRICS_ACCESS": "token"}, dotenv_path=tmp_path / "x")
    with pytest.raises(ConfigError, match="METRICS_TOKEN"):
        Settings.from_env(
            {"METRICS_ACCESS": "token", "METRICS_TOKEN": "short"}, dotenv_path=tmp_path / "x"
        )
    settings = Settings.from_env(
        {"METRICS_ACCESS": "TOKEN", "METRICS_TOKEN": "t" * 16}, dotenv_path=tmp_path / "x"
    )
    assert (settings.metrics_access, settings.metrics_token) == (MetricsAccess.TOKEN, "t" * 16)
    with pytest.raises(ConfigError, match="METRICS_ACCESS must be one of off, loopback, token"):
        Settings.from_env({"METRICS_ACCESS": "public"}, dotenv_path=tmp_path / "x")


def test_federation_is_off_unless_turned_on(tmp_path: Path) -> None:
    assert Settings.from_env({}, dotenv_path=tmp_path / "x").federation is False
    on = Settings.from_env({"FEDERATION": "true"}, dotenv_path=tmp_path / "x")
    assert on.federation is True
    with pytest.raises(ConfigError, match="FEDERATION"):
        Settings.from_env({"FEDERATION": "maybe"}, dotenv_path=tmp_path / "x")
