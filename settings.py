"""Settings: read once, from the environment over an optional .env file, and handed on as
plain values. Empty means unset everywhere, so a template of empty lines is a valid config."""

import enum
import json
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dotenv import dotenv_values
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from db.session import (
    INSTANCE_DIR,
    PoolOptions,
    default_database_url,
)
from schema.limits import IntrospectionPolicy, QueryLimits
from schema.root import BATCH_CEILING
from services import auth, documents
from services.google import (
    GOOGLE_CERTS_URL,
)
from services.metrics import MetricsAccess
from services.rate_limit import Rate

DEV_SECRET_FILE = INSTANCE_DIR / "dev-jwt-secret"
# Values from documentation and templates: production refuses to sign with them.
EXAMPLE_SECRETS = frozenset(
    {
        "change-me-to-a-long-random-string-of-32-bytes-or-more",
        "changethis",
        "secret",
    }
)
# A scraper's bearer token: long enough that guessing it is hopeless.
MIN_METRICS_TOKEN = 16


class ConfigError(Exception):
    """A setting is missing or has a value the server cannot run with."""


class Environment(enum.StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"
    TEST = "test"


class _Layered:
    """Settings by name: the environment first, then the .env file; empty means unset."""

    def __init__(self, environ: Mapping[str, str], dotenv: Mapping[str, str | None]) -> None:
        self._environ = environ
        self._dotenv = dotenv

    def get(self, name: str, default: str = "") -> str:
        value = self._environ[name] if name in self._environ else self._dotenv.get(name)
        return value or default


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    """DATABASE_URL: an SQLAlchemy URL; default a SQLite file in instance/."""
    environment: Environment = Environment.DEVELOPMENT
    """USERQL_ENV: development (GraphiQL on), production or test."""
    provisioning_webhook_url: str | None = None
    """USER_PROVISIONING_WEBHOOK_URL: POSTed every new user; unset means no provisioning."""
    provisioning_timeout_seconds: float = 3.0
    """USER_PROVISIONING_TIMEOUT_SECONDS: how long the webhook may take before it fails."""
    log_level: str = "INFO"
    """LOG_LEVEL: DEBUG, INFO, WARNING or ERROR."""
    jwt_secret: str | None = None
    """JWT_SECRET: the HS256 key, at least 32 bytes; required in production."""
    jwt_algorithm: str = auth.SYMMETRIC_ALGORITHM
    """JWT_ALGORITHM: HS256, RS256 or ES256."""
    jwt_private_key_pem: bytes | None = None
    """JWT_PRIVATE_KEY_FILE: PEM private key that signs RS256/ES256 tokens."""
    jwt_public_keys_pem: tuple[bytes, ...] = ()
    """JWT_PUBLIC_KEY_FILES: comma-separated PEM public keys still accepted (rotation)."""
    jwt_ttl_seconds: int = 3600
    """JWT_TTL_SECONDS: lifetime of issued access tokens."""
    session_ttl_seconds: int = 2592000
    """SESSION_TTL_SECONDS: how long a session can be refreshed after sign-in (30 days)."""
    jwt_issuer: str = "userql"
    """JWT_ISSUER: the `iss` of issued tokens, and the only one accepted."""
    jwt_audience: str = "userql"
    """JWT_AUDIENCE: the `aud` of issued tokens, and the only one accepted."""
    jwt_leeway_seconds: int = 30
    """JWT_LEEWAY_SECONDS: clock skew allowed on exp, nbf and iat."""
    google_client_ids: tuple[str, ...] = ()
    """GOOGLE_CLIENT_IDS: comma-separated OAuth client ids; empty turns Google sign-in off."""
    google_hosted_domain: str | None = None
    """GOOGLE_HOSTED_DOMAIN: only accounts of this Google Workspace domain may sign in."""
    google_signup_enabled: bool = True
    audit_redact_email: bool = False
    idempotency_ttl_seconds: int = 86400
    """IDEMPOTENCY_TTL_SECONDS: how long a mutation's answer is kept for its Idempotency-Key."""
    """AUDIT_REDACT_EMAIL: audit events keep emails as their SHA-256, not as written."""
    """GOOGLE_SIGNUP_ENABLED: whether unknown people are registered on first sign-in."""
    google_certs_url: str = GOOGLE_CERTS_URL
    """GOOGLE_CERTS_URL: where Google's signing certificates are fetched."""
    database_pool: PoolOptions = field(default_factory=PoolOptions)
    """DB_POOL_SIZE, DB_MAX_OVERFLOW, DB_POOL_RECYCLE_SECONDS, DB_POOL_PRE_PING,
    DB_POOL_TIMEOUT_SECONDS, DB_CONNECT_TIMEOUT_SECONDS, DB_READ_TIMEOUT_SECONDS."""
    database_wait_seconds: float = 10.0
    """DB_WAIT_SECONDS: how long startup and `userql migrate` wait for the database."""
    database_read_url: str | None = None
    """DATABASE_READ_URL: a MySQL/MariaDB replica of DATABASE_URL for requests' reads
    (db.replica); unset, every read goes to DATABASE_URL."""
    replica_max_lag_seconds: float = 5.0
    """DB_REPLICA_MAX_LAG_SECONDS: a replica further behind than this loses its reads to the
    primary until it catches up."""
    request_timeout_seconds: float = 10.0
    """REQUEST_TIMEOUT_SECONDS: a request's whole budget from its arrival, queueing included;
    bounds every database statement, the webhook and the wait for a worker."""
    fast_execution: bool = True
    """FAST_EXECUTION: run operations on the fast path (schema/fast); false runs Strawberry's
    stock execution, e.g. to rule the fast path out after an upgrade."""
    federation: bool = False
    """FEDERATION: serve the schema as an Apollo Federation 2 subgraph (`_service`,
    `_entities`, `User @key(fields: "id")`); see docs/federation.md."""
    health_port: int = 8081
    """HEALTH_PORT: where each gunicorn worker also answers /livez and /readyz from a thread
    of its own; 0 turns it off."""
    shutdown_drain_seconds: float = 0.0
    """SHUTDOWN_DRAIN_SECONDS: after SIGTERM, how long each worker keeps serving while /readyz
    answers 503 draining, so that a balancer takes the instance out of rotation before it
    stops accepting; 0 stops at once."""
    cors_origins: tuple[str, ...] = ()
    """CORS_ORIGINS: comma-separated origins allowed to call the API from a browser."""
    cors_allow_credentials: bool = False
    """CORS_ALLOW_CREDENTIALS: let those origins send cookies and HTTP auth."""
    max_request_bytes: int = 102_400
    """MAX_REQUEST_BYTES: larger request bodies get 413."""
    batch_max: int = 0
    """GRAPHQL_BATCH_MAX: operations allowed in one batched request; 0 turns batching off."""
    query_limits: QueryLimits = field(default_factory=QueryLimits)
    """QUERY_MAX_DEPTH, QUERY_MAX_ALIASES, QUERY_MAX_DIRECTIVES, QUERY_MAX_TOKENS,
    QUERY_MAX_COST."""
    introspection: IntrospectionPolicy = IntrospectionPolicy.ADMIN
    """GRAPHQL_INTROSPECTION: everyone, admin or nobody (development: everyone)."""
    field_suggestions: bool = False
    """GRAPHQL_FIELD_SUGGESTIONS: "Did you mean …" in errors (development: on)."""
    graphiql: bool = False
    """GRAPHIQL: serve GraphiQL on GET /graphql (development: on)."""
    rate_limits: Mapping[str, Rate] = field(
        default_factory=lambda: {"sign_in": Rate(10, 60), "create_user": Rate(30, 60)}
    )
    """RATE_LIMIT_SIGN_IN, RATE_LIMIT_CREATE_USER: 'count/seconds' per address and per user."""
    redis_url: str | None = None
    """REDIS_URL: where rate-limit counters are shared; unset keeps them per process."""
    csrf_require_preflight: bool = False
    """CSRF_REQUIRE_PREFLIGHT: GET requests must carry a header that forces a CORS preflight."""
    trusted_proxies: int = 0
    """TRUSTED_PROXIES: how many proxies in front set X-Forwarded-For (for client addresses)."""
    trusted_documents: Mapping[str, str] | None = None
    """TRUSTED_DOCUMENTS: a JSON manifest {sha256: document}; non-admins may run only these."""
    metrics_access: MetricsAccess = MetricsAccess.OFF
    """METRICS_ACCESS: off, loopback or token: who may read /metrics (development: loopback)."""
    metrics_token: str | None = None
    """METRICS_TOKEN: the bearer token /metrics asks for when METRICS_ACCESS=token."""
    tracing: bool | None = None
    """TRACING: export OpenTelemetry traces over OTLP/HTTP; unset, the SDK's environment
    decides (services.telemetry.tracing_wanted)."""

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, dotenv_path: Path | None = None
    ) -> "Settings":
        """Settings from the process environment, over the values of an optional .env file."""
        values = _Layered(
            os.environ if environ is None else environ,
            dotenv_values(dotenv_path or Path.cwd() / ".env"),
        )
        environment = _parse_environment(values.get("USERQL_ENV", "development"))
        development = environment is Environment.DEVELOPMENT
        algorithm = values.get("JWT_ALGORITHM", auth.SYMMETRIC_ALGORITHM).strip().upper()
        private_key_file = values.get("JWT_PRIVATE_KEY_FILE", "").strip()
        cors_credentials = _parse_bool(
            "CORS_ALLOW_CREDENTIALS", values.get("CORS_ALLOW_CREDENTIALS", "false")
        )
        return cls(
            database_url=values.get("DATABASE_URL") or default_database_url(),
            environment=environment,
            provisioning_webhook_url=values.get("USER_PROVISIONING_WEBHOOK_URL") or None,
            provisioning_timeout_seconds=_parse_number(
                "USER_PROVISIONING_TIMEOUT_SECONDS",
                values.get("USER_PROVISIONING_TIMEOUT_SECONDS", "3"),
                float,
                low=0.1,
                high=60.0,
            ),
            log_level=_parse_log_level(values.get("LOG_LEVEL", "INFO")),
            jwt_secret=_jwt_secret(values.get("JWT_SECRET"), environment, algorithm),
            jwt_algorithm=algorithm,
            jwt_private_key_pem=_read_file(private_key_file) if private_key_file else None,
            jwt_public_keys_pem=tuple(
                _read_file(path) for path in _split(values.get("JWT_PUBLIC_KEY_FILES", ""))
            ),
            jwt_ttl_seconds=_parse_number(
                "JWT_TTL_SECONDS", values.get("JWT_TTL_SECONDS", "3600"), int, low=1, high=2678400
            ),
            session_ttl_seconds=_parse_number(
                "SESSION_TTL_SECONDS",
                values.get("SESSION_TTL_SECONDS") or "2592000",
                int,
                low=60,
                high=31622400,
            ),
            jwt_issuer=values.get("JWT_ISSUER") or "userql",
            jwt_audience=values.get("JWT_AUDIENCE") or "userql",
            jwt_leeway_seconds=_parse_number(
                "JWT_LEEWAY_SECONDS", values.get("JWT_LEEWAY_SECONDS", "30"), int, low=0, high=300
            ),
            google_client_ids=_split(values.get("GOOGLE_CLIENT_IDS", "")),
            google_hosted_domain=values.get("GOOGLE_HOSTED_DOMAIN") or None,
            idempotency_ttl_seconds=_parse_number(
                "IDEMPOTENCY_TTL_SECONDS",
                values.get("IDEMPOTENCY_TTL_SECONDS") or "86400",
                int,
                low=60,
                high=2592000,
            ),
            audit_redact_email=_parse_bool(
                "AUDIT_REDACT_EMAIL", values.get("AUDIT_REDACT_EMAIL") or "false"
            ),
            google_signup_enabled=_parse_bool(
                "GOOGLE_SIGNUP_ENABLED", values.get("GOOGLE_SIGNUP_ENABLED", "true")
            ),
            google_certs_url=values.get("GOOGLE_CERTS_URL") or GOOGLE_CERTS_URL,
            database_pool=_pool_options(values),
            database_wait_seconds=_parse_number(
                "DB_WAIT_SECONDS", values.get("DB_WAIT_SECONDS", "10"), float, low=0.0, high=600.0
            ),
            database_read_url=_read_url(
                values.get("DATABASE_READ_URL"),
                values.get("DATABASE_URL") or default_database_url(),
            ),
            replica_max_lag_seconds=_parse_number(
                "DB_REPLICA_MAX_LAG_SECONDS",
                values.get("DB_REPLICA_MAX_LAG_SECONDS", "5"),
                float,
                low=0.0,
                high=86400.0,
            ),
            request_timeout_seconds=_parse_number(
                "REQUEST_TIMEOUT_SECONDS",
                values.get("REQUEST_TIMEOUT_SECONDS", "10"),
                float,
                low=0.5,
                high=600.0,
            ),
            fast_execution=_parse_bool("FAST_EXECUTION", values.get("FAST_EXECUTION", "true")),
            federation=_parse_bool("FEDERATION", values.get("FEDERATION", "false")),
            health_port=_parse_number(
                "HEALTH_PORT", values.get("HEALTH_PORT", "8081"), int, low=0, high=65535
            ),
            shutdown_drain_seconds=_parse_number(
                "SHUTDOWN_DRAIN_SECONDS",
                values.get("SHUTDOWN_DRAIN_SECONDS", "0"),
                float,
                low=0.0,
                high=60.0,
            ),
            cors_origins=_cors_origins(
                values.get("CORS_ORIGINS", ""), allow_credentials=cors_credentials
            ),
            cors_allow_credentials=cors_credentials,
            max_request_bytes=_parse_number(
                "MAX_REQUEST_BYTES",
                values.get("MAX_REQUEST_BYTES", "102400"),
                int,
                low=1024,
                high=100 * 1024 * 1024,
            ),
            batch_max=_parse_number(
                "GRAPHQL_BATCH_MAX",
                values.get("GRAPHQL_BATCH_MAX", "0"),
                int,
                low=0,
                high=BATCH_CEILING,
            ),
            query_limits=_query_limits(values),
            introspection=_parse_choice(
                IntrospectionPolicy,
                "GRAPHQL_INTROSPECTION",
                values.get("GRAPHQL_INTROSPECTION", "everyone" if development else "admin"),
            ),
            field_suggestions=_parse_bool(
                "GRAPHQL_FIELD_SUGGESTIONS",
                values.get("GRAPHQL_FIELD_SUGGESTIONS", str(development)),
            ),
            graphiql=_parse_bool("GRAPHIQL", values.get("GRAPHIQL", str(development))),
            rate_limits={
                "sign_in": _parse_rate(
                    "RATE_LIMIT_SIGN_IN", values.get("RATE_LIMIT_SIGN_IN", "10/60")
                ),
                "create_user": _parse_rate(
                    "RATE_LIMIT_CREATE_USER", values.get("RATE_LIMIT_CREATE_USER", "30/60")
                ),
            },
            redis_url=values.get("REDIS_URL") or None,
            csrf_require_preflight=_parse_bool(
                "CSRF_REQUIRE_PREFLIGHT", values.get("CSRF_REQUIRE_PREFLIGHT", "false")
            ),
            trusted_proxies=_parse_number(
                "TRUSTED_PROXIES", values.get("TRUSTED_PROXIES", "0"), int, low=0, high=10
            ),
            trusted_documents=_trusted_documents(values.get("TRUSTED_DOCUMENTS")),
            **_telemetry(values, development=development),
        )


def _telemetry(values: _Layered, *, development: bool) -> dict[str, Any]:
    access = _parse_choice(
        MetricsAccess,
        "METRICS_ACCESS",
        values.get("METRICS_ACCESS") or ("loopback" if development else "off"),
    )
    token = values.get("METRICS_TOKEN") or None
    if access is MetricsAccess.TOKEN and (token is None or len(token) < MIN_METRICS_TOKEN):
        raise ConfigError(
            f"METRICS_ACCESS=token needs METRICS_TOKEN of {MIN_METRICS_TOKEN} characters or more"
        )
    raw_tracing = values.get("TRACING")
    tracing = None if not raw_tracing else _parse_bool("TRACING", raw_tracing)
    return {"metrics_access": access, "metrics_token": token, "tracing": tracing}


def _pool_options(values: _Layered) -> PoolOptions:
    def whole(name: str, default: str, low: int, high: int) -> int:
        return _parse_number(name, values.get(name, default), int, low=low, high=high)

    def seconds(name: str, default: str, high: float) -> float:
        return _parse_number(name, values.get(name, default), float, low=0.1, high=high)

    return PoolOptions(
        size=whole("DB_POOL_SIZE", "5", 1, 100),
        max_overflow=whole("DB_MAX_OVERFLOW", "10", 0, 100),
        recycle_seconds=whole("DB_POOL_RECYCLE_SECONDS", "1800", 1, 86400),
        pre_ping=_parse_bool("DB_POOL_PRE_PING", values.get("DB_POOL_PRE_PING", "true")),
        timeout_seconds=seconds("DB_POOL_TIMEOUT_SECONDS", "5", 300),
        connect_timeout_seconds=seconds("DB_CONNECT_TIMEOUT_SECONDS", "3", 60),
        read_timeout_seconds=seconds("DB_READ_TIMEOUT_SECONDS", "30", 3600),
    )


def _read_url(read_url: str, database_url: str) -> str | None:
    if not read_url:
        return None
    for name, url in (("DATABASE_READ_URL", read_url), ("DATABASE_URL", database_url)):
        try:
            backend = make_url(url).get_backend_name()
        except ArgumentError:
            raise ConfigError(f"{name} is not a database URL") from None
        if backend not in ("mysql", "mariadb"):
            raise ConfigError(
                f"DATABASE_READ_URL needs {name} to be MySQL or MariaDB, not {backend}"
            )
    return read_url


def _query_limits(values: _Layered) -> QueryLimits:
    def limit(name: str, default: int) -> int:
        return _parse_number(name, values.get(name, str(default)), int, low=1, high=1_000_000)

    defaults = QueryLimits()
    return QueryLimits(
        max_depth=limit("QUERY_MAX_DEPTH", defaults.max_depth),
        max_aliases=limit("QUERY_MAX_ALIASES", defaults.max_aliases),
        max_directives=limit("QUERY_MAX_DIRECTIVES", defaults.max_directives),
        max_tokens=limit("QUERY_MAX_TOKENS", defaults.max_tokens),
        max_cost=limit("QUERY_MAX_COST", defaults.max_cost),
    )


Choice = TypeVar("Choice", bound=enum.Enum)


def _parse_choice(kind: type[Choice], name: str, raw: str) -> Choice:
    try:
        return kind(raw.strip().lower())
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ConfigError(f"{name} must be one of {allowed}, not {raw!r}") from None


def _parse_rate(name: str, raw: str) -> Rate:
    try:
        return Rate.parse(raw)
    except ValueError:
        raise ConfigError(f"{name} must look like 10/60 (count/seconds), not {raw!r}") from None


def _trusted_documents(path: str) -> dict[str, str] | None:
    if not path:
        return None
    try:
        manifest = json.loads(_read_file(path))
        if not isinstance(manifest, dict):
            raise ValueError("the manifest must be a JSON object of sha256 to document")
        return documents.check_manifest(manifest)
    except ValueError as error:
        raise ConfigError(f"TRUSTED_DOCUMENTS {path}: {error}") from None


def _cors_origins(raw: str, *, allow_credentials: bool) -> tuple[str, ...]:
    origins = _split(raw)
    if "*" in origins and allow_credentials:
        # Any site could then act with the visitor's cookies: browsers forbid it, so do we.
        raise ConfigError("CORS_ORIGINS=* cannot be combined with CORS_ALLOW_CREDENTIALS=true")
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ConfigError(f"CORS_ORIGINS: {origin!r} is not an origin like https://app.example")
    return tuple(origin.rstrip("/") for origin in origins)


def _parse_environment(raw: str) -> Environment:
    try:
        return Environment(raw.strip().lower())
    except ValueError:
        allowed = ", ".join(member.value for member in Environment)
        raise ConfigError(f"USERQL_ENV must be one of {allowed}, not {raw!r}") from None


Number = TypeVar("Number", int, float)


def _parse_number(
    name: str, raw: str, kind: Callable[[str], Number], *, low: Number, high: Number
) -> Number:
    try:
        number = kind(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"{name} must be from {low} to {high}, not {raw!r}")
    return number


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _parse_log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {raw!r}")
    return level


def _split(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read key file {path}: {error.strerror}") from None


def _jwt_secret(raw: str | None, environment: Environment, algorithm: str) -> str | None:
    if algorithm != auth.SYMMETRIC_ALGORITHM:
        return None
    if raw:
        if environment is Environment.PRODUCTION and raw in EXAMPLE_SECRETS:
            raise ConfigError("JWT_SECRET is an example value; generate a random one")
        return raw
    if environment is Environment.PRODUCTION:
        raise ConfigError("JWT_SECRET is required in production (32 bytes or more)")
    return _development_secret()


def _development_secret() -> str:
    """A random secret kept in instance/, so development tokens survive restarts."""
    if DEV_SECRET_FILE.exists():
        return DEV_SECRET_FILE.read_text().strip()
    DEV_SECRET_FILE.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    DEV_SECRET_FILE.touch(mode=0o600)
    DEV_SECRET_FILE.write_text(secret)
    return secret
