"""The composition root: settings are read here, once, and handed on as plain values."""

import dataclasses
import enum
import functools
import hashlib
import json
import logging
import os
import posixpath
import re
import secrets
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson
import redis
import urllib3
from cross_web import FlaskHTTPRequestAdapter, SyncHTTPRequestAdapter
from cross_web import HTTPException as GraphQLHTTPException
from dotenv import dotenv_values
from flask import Flask, Request, Response, g, request, send_from_directory
from flask.ctx import _AppCtxGlobals
from flask.typing import ResponseReturnValue
from flask_cors import CORS
from google.auth.transport.urllib3 import Request as Urllib3Request
from graphql import GraphQLError
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from strawberry.flask.views import GraphQLView
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.middleware.proxy_fix import ProxyFix

from db import models
from db.migrations import migrations_head
from db.session import (
    INSTANCE_DIR,
    PoolOptions,
    default_database_url,
    make_engine,
    make_reading_engine,
    make_session_factory,
    wait_for_database,
)
from resolvers.auth import needs_caller_row
from schema.context import Context
from schema.errors import INTERNAL, INTERNAL_MESSAGE, mask_unexpected
from schema.limits import ExposurePolicy, IntrospectionPolicy, QueryLimits
from schema.operation_log import RequestLog
from schema.root import BATCH_CEILING, schema
from services import auth, documents
from services import users as user_service
from services.errors import DatabaseUnavailable, Unauthenticated
from services.google import (
    GOOGLE_CERTS_URL,
    CachingRequest,
    GoogleIdTokenVerifier,
    IdTokenVerifier,
)
from services.health import check_readiness
from services.provisioning import NoopProvisioner, Provisioner, WebhookProvisioner
from services.rate_limit import Rate, RateLimiter, RedisCounter
from services.unit_of_work import RequestConnection, UnitOfWork

DEV_SECRET_FILE = INSTANCE_DIR / "dev-jwt-secret"
# Values from documentation and templates: production refuses to sign with them.
EXAMPLE_SECRETS = frozenset(
    {
        "change-me-to-a-long-random-string-of-32-bytes-or-more",
        "changethis",
        "secret",
    }
)
logger = logging.getLogger("userql")
request_logger = logging.getLogger("userql.request")


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
    """GOOGLE_SIGNUP_ENABLED: whether unknown people are registered on first sign-in."""
    google_certs_url: str = GOOGLE_CERTS_URL
    """GOOGLE_CERTS_URL: where Google's signing certificates are fetched."""
    database_pool: PoolOptions = field(default_factory=PoolOptions)
    """DB_POOL_SIZE, DB_MAX_OVERFLOW, DB_POOL_RECYCLE_SECONDS, DB_POOL_PRE_PING,
    DB_POOL_TIMEOUT_SECONDS, DB_CONNECT_TIMEOUT_SECONDS, DB_READ_TIMEOUT_SECONDS."""
    database_wait_seconds: float = 10.0
    """DB_WAIT_SECONDS: how long startup and `userql migrate` wait for the database."""
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
            jwt_issuer=values.get("JWT_ISSUER") or "userql",
            jwt_audience=values.get("JWT_AUDIENCE") or "userql",
            jwt_leeway_seconds=_parse_number(
                "JWT_LEEWAY_SECONDS", values.get("JWT_LEEWAY_SECONDS", "30"), int, low=0, high=300
            ),
            google_client_ids=_split(values.get("GOOGLE_CLIENT_IDS", "")),
            google_hosted_domain=values.get("GOOGLE_HOSTED_DOMAIN") or None,
            google_signup_enabled=_parse_bool(
                "GOOGLE_SIGNUP_ENABLED", values.get("GOOGLE_SIGNUP_ENABLED", "true")
            ),
            google_certs_url=values.get("GOOGLE_CERTS_URL") or GOOGLE_CERTS_URL,
            database_pool=_pool_options(values),
            database_wait_seconds=_parse_number(
                "DB_WAIT_SECONDS", values.get("DB_WAIT_SECONDS", "10"), float, low=0.0, high=600.0
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
        )


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


def _parse_choice(kind: type[IntrospectionPolicy], name: str, raw: str) -> IntrospectionPolicy:
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


_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
# Ids we echo back and log: short, and nothing a log viewer or a header could misread.
_REQUEST_ID_SHAPE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_LOG_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
HEALTH_PATHS = frozenset({"/livez", "/readyz"})


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request id, any `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if (request_id := _request_id.get()) is not None:
            entry["request_id"] = request_id
        entry.update(
            (key, value) for key, value in vars(record).items() if key not in _LOG_RECORD_FIELDS
        )
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


JsonLogFormatter.converter = time.gmtime


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to sys.stdout as it is when the record is emitted, even if it was replaced."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def configure_logging(level: str) -> None:
    """JSON lines on stdout from every logger; idempotent, so each app factory may call it."""
    root = logging.getLogger()
    root.setLevel(level)
    # What a record would learn of its thread, process name and calling line, no line prints
    # (JsonLogFormatter writes none of them): the logging HOWTO's "Optimization" switches.
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    if not any(isinstance(handler, _StdoutHandler) for handler in root.handlers):
        handler = _StdoutHandler(sys.stdout)
        handler.setFormatter(JsonLogFormatter())
        root.addHandler(handler)


def _error_body(message: str, code: str) -> str:
    return json.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})


_CODE_BY_STATUS = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    503: "SERVICE_UNAVAILABLE",
}
# Seconds a client should wait before retrying while the database is away.
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request needs besides the request, built once per app."""

    session_factory: sessionmaker[Session]
    reading_engine: Engine | None
    """Where requests read, when not through session_factory (see make_reading_engine)."""
    provisioner: Provisioner
    tokens: auth.TokenService
    google: IdTokenVerifier
    google_signup_enabled: bool
    limits: QueryLimits
    exposure: ExposurePolicy
    rate_limiter: RateLimiter
    batch_max: int
    csrf_require_preflight: bool
    development_tokens: bool
    """GraphiQL's role switcher may mint short-lived tokens (development only)."""
    persisted: documents.DocumentStore
    trusted_documents: Mapping[str, str] | None


# Apollo Client's persisted-query link recognises the not-found error by this exact message.
PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
PERSISTED_QUERY_INVALID = "PERSISTED_QUERY_INVALID"
OPERATION_NOT_TRUSTED = "OPERATION_NOT_TRUSTED"


def _refusal(message: str, code: str) -> ExecutionResult:
    return ExecutionResult(data=None, errors=[GraphQLError(message, extensions={"code": code})])


GRAPHQL_RESPONSE = "application/graphql-response+json"
# Headers a browser never sends on a simple cross-site request: their presence proves a
# CORS preflight happened (Apollo's csrfPrevention and the GraphQL-over-HTTP spec).
PREFLIGHT_HEADERS = (
    "GraphQL-Require-Preflight",
    "Apollo-Require-Preflight",
    "X-Apollo-Operation-Name",
)


def _wants_graphql_response() -> bool:
    """Whether the client asked for the GraphQL-over-HTTP media type by name; a missing
    Accept or */* keeps the older application/json behaviour."""
    # Most clients never name it: their Accept header need not be parsed.
    current = _current_request()
    if GRAPHQL_RESPONSE not in current.headers.get("Accept", "").lower():
        return False
    accept = current.accept_mimetypes
    if not any(mime.lower() == GRAPHQL_RESPONSE and quality > 0 for mime, quality in accept):
        return False
    return accept.best_match([GRAPHQL_RESPONSE, "application/json"]) == GRAPHQL_RESPONSE


def _is_request_error(response: GraphQLHTTPResponse) -> bool:
    """Parse, validation, variable and limit failures: nothing was executed."""
    errors = cast(list[Mapping[str, object]], response.get("errors") or [])
    return response.get("data") is None and bool(errors) and all("path" not in e for e in errors)


class _JsonRequestAdapter(FlaskHTTPRequestAdapter):
    @property
    def body(self) -> str | bytes:
        # Only JSON is accepted (see parse_http_body), and `request.data` would first set up
        # werkzeug's form parsing for it: a twentieth of a small request's CPU.
        body: bytes = self.request.get_data(parse_form_data=False)
        return body.decode()


class UserqlGraphQLView(GraphQLView[Context, None]):
    """The only glue between HTTP and GraphQL."""

    request_adapter_class = _JsonRequestAdapter

    # A view per request (Flask's default, said here because _database relies on it).
    init_every_request = True

    def __init__(self, *, services: Services, **options: Any) -> None:
        super().__init__(**options)
        self._services = services
        self._database = RequestConnection(services.session_factory, services.reading_engine)
        self._request_data: GraphQLRequestData | list[GraphQLRequestData] | None = None

    def get_context(self, request: Request, response: Response) -> Context:
        services = self._services
        token = auth.bearer_token(request.headers.getlist("Authorization"))
        with_row = token is not None and self._may_select_caller(request)
        principal = auth.authenticate(
            self._database.reading(), services.tokens, token, with_row=with_row
        )
        log: RequestLog = _current_globals().request_log
        log.principal_id = principal.user_id
        return Context(
            database=self._database,
            provisioner=services.provisioner,
            principal=principal,
            tokens=services.tokens,
            google=services.google,
            google_signup_enabled=services.google_signup_enabled,
            log=log,
            limits=services.limits,
            exposure=services.exposure,
            rate_limiter=services.rate_limiter,
            client_address=request.remote_addr or "unknown",
        )

    def render_graphql_ide(self, request: Request) -> Response:
        return _graphiql_page(with_role_switcher=self._services.development_tokens)

    def _may_select_caller(self, request: Request) -> bool:
        data = self.parse_http_body(self.request_adapter_class(request))
        for item in data if isinstance(data, list) else [data]:
            document = item.query or self._stored_document(item.extensions)
            if document is not None and needs_caller_row(document):
                return True
        return False

    def parse_http_body(self, request: SyncHTTPRequestAdapter) -> Any:
        # Parsed once, when the context is built, where authentication learns from the
        # documents which columns of the caller to read.
        if self._request_data is None:
            self._request_data = self._parse_http_body(request)
        return self._request_data

    def _parse_http_body(
        self, request: SyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        if request.method == "POST":
            _require_json_content_type(request.content_type)
        elif self._services.csrf_require_preflight and not any(
            request.headers.get(name) for name in PREFLIGHT_HEADERS
        ):
            raise GraphQLHTTPException(
                400,
                "GET requests must carry a GraphQL-Require-Preflight header "
                "(this server refuses possible cross-site request forgery).",
            )
        try:
            return super().parse_http_body(request)
        except UnicodeDecodeError as error:
            raise GraphQLHTTPException(400, "The request body is not valid UTF-8.") from error

    def execute_single(
        self,
        request: Request,
        request_adapter: SyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        document = self._document(request_data, context)
        if isinstance(document, ExecutionResult):
            return document
        try:
            return super().execute_single(
                request=request,
                request_adapter=request_adapter,
                sub_response=sub_response,
                context=context,
                root_value=root_value,
                request_data=dataclasses.replace(request_data, query=document),
            )
        except GraphQLHTTPException as error:
            if isinstance(error.__cause__, InvalidOperationTypeError):
                # GraphQL-over-HTTP: a mutation over GET is a wrong method, not a bad request.
                raise GraphQLHTTPException(405, "Mutations must be sent with POST.") from error
            raise

    def _document(self, data: GraphQLRequestData, context: Context) -> str | ExecutionResult | None:
        """The document to run: as sent, or found by its hash (Apollo's Automatic Persisted
        Queries); or the refusal to send back instead."""
        services, document = self._services, data.query
        persisted = (data.extensions or {}).get("persistedQuery")
        trusted = services.trusted_documents
        may_register = trusted is None or context.principal.role >= auth.Role.ADMIN
        if persisted is not None:
            key = persisted.get("sha256Hash") if isinstance(persisted, dict) else None
            if not (isinstance(key, str) and documents.SHA256_HEX.fullmatch(key)):
                return _refusal(
                    "persistedQuery needs a sha256Hash in hex.", PERSISTED_QUERY_INVALID
                )
            if document is None:
                document = self._stored_document(data.extensions)
                if document is None:
                    return _refusal("PersistedQueryNotFound", PERSISTED_QUERY_NOT_FOUND)
            elif documents.digest(document) != key:
                return _refusal("provided sha does not match query", PERSISTED_QUERY_INVALID)
            elif may_register:
                services.persisted.put(key, document)
        if may_register or document is None:
            return document
        # Only here is there a manifest (may_register holds without one) to check against.
        if documents.digest(document) not in (trusted or {}):
            return _refusal(
                "Only the operations in the trusted-documents manifest may run.",
                OPERATION_NOT_TRUSTED,
            )
        return document

    def _stored_document(self, extensions: Mapping[str, object] | None) -> str | None:
        """The document a persisted query's hash names, if one is kept under it."""
        persisted = (extensions or {}).get("persistedQuery")
        key = persisted.get("sha256Hash") if isinstance(persisted, dict) else None
        if not (isinstance(key, str) and documents.SHA256_HEX.fullmatch(key)):
            return None
        return (self._services.trusted_documents or {}).get(key) or self._services.persisted.get(
            key
        )

    def encode_json(self, data: object) -> bytes:
        # A 100-user page encodes in a tenth of json.dumps's time. Every value of a GraphQL
        # response is JSON already: Int is 32-bit and Float finite by the spec's serializers.
        return orjson.dumps(data)

    def parse_json(self, data: str | bytes) -> Any:
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as error:
            # ValueError covers bytes that are not UTF-8 as well as bad JSON syntax.
            raise GraphQLHTTPException(400, "The request body is not valid JSON.") from error
        if not isinstance(value, dict | list):
            raise GraphQLHTTPException(400, "The request body must be a JSON object.")
        if isinstance(value, list):
            if self._services.batch_max == 0:
                raise GraphQLHTTPException(400, "Batching is not enabled.")
            if len(value) > self._services.batch_max:
                raise GraphQLHTTPException(
                    400, f"A batch may hold at most {self._services.batch_max} operations."
                )
        return value

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        if _wants_graphql_response():
            sub_response.content_type = f"{GRAPHQL_RESPONSE}; charset=utf-8"
            if isinstance(response_data, dict) and _is_request_error(response_data):
                # GraphQL-over-HTTP: nothing ran, so 400 and no `data` entry at all.
                sub_response.status_code = 400
                response_data = {k: v for k, v in response_data.items() if k != "data"}  # type: ignore[assignment]
        return super().create_response(response_data, sub_response)

    def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        if result.errors:
            result.errors = [mask_unexpected(error) for error in result.errors]
            g.request_log.error_codes.extend(
                (error.extensions or {}).get("code", INTERNAL) for error in result.errors
            )
        return super().process_result(request, result)

    def dispatch_request(self) -> ResponseReturnValue:
        try:
            return self._run()
        finally:
            self._database.close()

    def _run(self) -> ResponseReturnValue:
        try:
            return self.run(request=_current_request())
        except GraphQLHTTPException as error:
            code = _CODE_BY_STATUS.get(error.status_code, "BAD_REQUEST")
            response = _json_error(error.reason, code, error.status_code)
            if error.status_code == 405:
                response.headers["Allow"] = "POST"
            return response
        except Unauthenticated as error:
            # RFC 6750: the client must get (or refresh) a token before trying again.
            response = _json_error(str(error), error.code, 401)
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return response
        except DatabaseUnavailable as error:
            # Authentication could not reach the database; nothing ran.
            response = _json_error(str(error), error.code, 503)
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response


def _require_json_content_type(content_type: str | None) -> None:
    media_type, _, parameters = (content_type or "").partition(";")
    charset = parameters.strip().lower().removeprefix("charset=").strip('"')
    if media_type.strip().lower() != "application/json" or charset not in ("", "utf-8"):
        # Also what keeps HTML forms (urlencoded, multipart, text/plain) from posting here.
        raise GraphQLHTTPException(
            415, "Send POST requests as application/json (UTF-8), the GraphQL-over-HTTP format."
        )


def _json_error(message: str, code: str, status: int) -> Response:
    if (log := g.get("request_log")) is not None:
        log.error_codes.append(code)
    return Response(_error_body(message, code), status=status, content_type="application/json")


def build_provisioner(settings: Settings) -> Provisioner:
    if settings.provisioning_webhook_url is None:
        return NoopProvisioner()
    try:
        return WebhookProvisioner(
            settings.provisioning_webhook_url, timeout_seconds=settings.provisioning_timeout_seconds
        )
    except ValueError as error:
        raise ConfigError(f"USER_PROVISIONING_WEBHOOK_URL: {error}") from None


def build_token_service(settings: Settings) -> auth.TokenService:
    try:
        return auth.TokenService(
            algorithm=settings.jwt_algorithm,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_seconds=settings.jwt_ttl_seconds,
            leeway_seconds=settings.jwt_leeway_seconds,
            secret=settings.jwt_secret,
            private_key_pem=settings.jwt_private_key_pem,
            public_keys_pem=settings.jwt_public_keys_pem,
        )
    except ValueError as error:
        raise ConfigError(f"JWT settings: {error}") from None


def build_google_verifier(settings: Settings) -> GoogleIdTokenVerifier:
    return GoogleIdTokenVerifier(
        client_ids=settings.google_client_ids,
        request=CachingRequest(Urllib3Request(urllib3.PoolManager())),
        certs_url=settings.google_certs_url,
        hosted_domain=settings.google_hosted_domain,
        leeway_seconds=settings.jwt_leeway_seconds,
    )


def build_redis(settings: Settings) -> redis.Redis | None:
    if not settings.redis_url:
        return None
    # Short timeouts: a slow Redis must cost a request little before we fall back.
    return redis.Redis.from_url(settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)


def build_services(
    settings: Settings,
    session_factory: sessionmaker[Session],
    reading_engine: Engine | None = None,
) -> Services:
    shared = build_redis(settings)
    return Services(
        session_factory=session_factory,
        reading_engine=reading_engine,
        provisioner=build_provisioner(settings),
        tokens=build_token_service(settings),
        google=build_google_verifier(settings),
        google_signup_enabled=settings.google_signup_enabled,
        limits=settings.query_limits,
        exposure=ExposurePolicy(
            introspection=settings.introspection, field_suggestions=settings.field_suggestions
        ),
        rate_limiter=RateLimiter(
            dict(settings.rate_limits), shared=None if shared is None else RedisCounter(shared)
        ),
        batch_max=settings.batch_max,
        csrf_require_preflight=settings.csrf_require_preflight,
        development_tokens=settings.graphiql and settings.environment is Environment.DEVELOPMENT,
        persisted=documents.MemoryDocumentStore()
        if shared is None
        else documents.RedisDocumentStore(shared),
        trusted_documents=settings.trusted_documents,
    )


def create_app(
    settings: Settings | None = None, *, session_factory: sessionmaker[Session] | None = None
) -> Flask:
    """The WSGI app. Under gunicorn, each worker calls this after the fork, so every worker
    builds its own engine and no connection is shared across processes."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    reading_engine = None
    if session_factory is None:
        engine = make_engine(settings.database_url, settings.database_pool)
        if not wait_for_database(engine, seconds=settings.database_wait_seconds):
            logger.warning("starting without the database; /readyz answers 503 until it is back")
        session_factory = make_session_factory(engine)
        reading_engine = make_reading_engine(settings.database_url, settings.database_pool)
    services = build_services(settings, session_factory, reading_engine)
    app = Flask(__name__)
    # Werkzeug answers 413 (as JSON, below) before a larger body is read.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    if settings.trusted_proxies:
        proxies = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]
    _register_request_log(app)
    _register_graphql(app, settings, services)
    if settings.graphiql:
        _register_graphiql_assets(app)
    if services.development_tokens:
        _register_development_tokens(app, services)
    _register_health(app, session_factory, expected_revision=migrations_head())
    _register_jwks(app, services.tokens)
    _register_cors(app, settings)
    _register_error_handlers(app)
    return app


GRAPHIQL_DIR = Path(str(files("schema") / "graphiql"))
GRAPHIQL_ASSETS = "/graphiql"
# Only these files are served; the folder also holds the build's package.json and script.
_GRAPHIQL_OWN_FILES = ("userql-graphiql.js", "userql-graphiql.css")
# Nothing from another origin, no inline script, no eval: what the page needs and no more.
GRAPHIQL_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
DEVELOPMENT_TOKEN_TTL_SECONDS = 900


def _content_version(name: str) -> str:
    return hashlib.sha256((GRAPHIQL_DIR / name).read_bytes()).hexdigest()[:12]


@functools.cache
def _graphiql_html() -> str:
    html = (GRAPHIQL_DIR / "index.html").read_text(encoding="utf-8")
    # Our own files change with userql: a content hash in the URL lets them be cached forever too.
    for name in _GRAPHIQL_OWN_FILES:
        html = html.replace(f"%ASSETS%/{name}", f"%ASSETS%/{name}?v={_content_version(name)}")
    return html.replace("%ASSETS%", GRAPHIQL_ASSETS)


def _graphiql_page(*, with_role_switcher: bool) -> Response:
    html = _graphiql_html().replace("%ENDPOINT%", "/graphql")
    html = html.replace("%TOKEN_URL%", f"{GRAPHIQL_ASSETS}/token" if with_role_switcher else "")
    response = Response(html, content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = GRAPHIQL_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"
    return response


def _register_graphiql_assets(app: Flask) -> None:
    @app.get(f"{GRAPHIQL_ASSETS}/<path:filename>")
    def graphiql_asset(filename: str) -> Response:
        # Normalized first: "vendor/../package.json" must not pass for a vendored file.
        normalized = posixpath.normpath(filename)
        if not (normalized.startswith("vendor/") or normalized in _GRAPHIQL_OWN_FILES):
            raise NotFound()
        # Vendored paths carry their version and ours a content hash: they never change.
        response = send_from_directory(GRAPHIQL_DIR, filename, max_age=31_536_000)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def _register_development_tokens(app: Flask, services: Services) -> None:
    """GraphiQL's role switcher: a fresh, short-lived token for a USER or an ADMIN."""

    @app.post(f"{GRAPHIQL_ASSETS}/token")
    def development_token() -> Response:
        payload = request.get_json(silent=True) if request.is_json else None
        role_name = payload.get("role") if isinstance(payload, dict) else None
        if role_name not in ("USER", "ADMIN"):
            return _json_error(
                'Send {"role": "USER"} or {"role": "ADMIN"} as JSON.', "BAD_REQUEST", 400
            )
        role = models.Role(role_name)
        user = user_service.development_user(
            UnitOfWork(services.session_factory), services.provisioner, role=role
        )
        issued = services.tokens.issue(
            user_id=user.id, role=auth.Role.of(role), ttl_seconds=DEVELOPMENT_TOKEN_TTL_SECONDS
        )
        body = {
            "token": issued.token,
            "expiresAt": issued.expires_at.isoformat(),
            "email": user.email,
        }
        return Response(json.dumps(body), content_type="application/json")


def _current_request() -> Request:
    """The request itself: each attribute read through the `flask.request` proxy looks the
    request up again, and a GraphQL request reads some thirty."""
    current: Request = cast(Any, request)._get_current_object()
    return current


def _current_globals() -> _AppCtxGlobals:
    """`flask.g` itself, for the same reason as _current_request."""
    current: _AppCtxGlobals = cast(Any, g)._get_current_object()
    return current


def _register_request_log(app: Flask) -> None:
    @app.before_request
    def start() -> None:
        incoming = _current_request().headers.get("X-Request-ID", "")
        request_id = incoming if _REQUEST_ID_SHAPE.fullmatch(incoming) else uuid.uuid4().hex
        globals_ = _current_globals()
        globals_.request_id = request_id
        globals_.request_id_token = _request_id.set(request_id)
        globals_.request_log = RequestLog()
        globals_.started = time.perf_counter()

    @app.after_request
    def finish(response: Response) -> Response:
        current, globals_ = _current_request(), _current_globals()
        response.headers["X-Request-ID"] = globals_.request_id
        log: RequestLog = globals_.request_log
        method, path, status = current.method, current.path, response.status_code
        level = _request_log_level(path, status, log.error_codes)
        request_logger.log(
            level,
            "%s %s %s",
            method,
            path,
            status,
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round((time.perf_counter() - globals_.started) * 1000, 2),
                "operation_name": log.operation_name,
                "operation_type": log.operation_type,
                "principal_id": log.principal_id,
                "outcome": "error" if log.error_codes or status >= 400 else "ok",
                "error_codes": log.error_codes,
            },
        )
        return response

    @app.teardown_request
    def forget(_error: BaseException | None) -> None:
        if (token := g.pop("request_id_token", None)) is not None:
            _request_id.reset(token)


def _request_log_level(path: str, status: int, error_codes: list[str]) -> int:
    if INTERNAL in error_codes or status == 500:
        return logging.ERROR
    if status >= 500 or "SERVICE_UNAVAILABLE" in error_codes:
        return logging.WARNING
    # Orchestrators poll the health endpoints every few seconds.
    return logging.DEBUG if path in HEALTH_PATHS else logging.INFO


def _register_health(
    app: Flask, session_factory: sessionmaker[Session], *, expected_revision: str
) -> None:
    @app.get("/livez")
    def livez() -> Response:
        return Response(json.dumps({"status": "ok"}), content_type="application/json")

    @app.get("/readyz")
    def readyz() -> Response:
        readiness = check_readiness(
            UnitOfWork(session_factory), expected_revision=expected_revision
        )
        if readiness.ready:
            ready = {"status": "ready", "revision": expected_revision}
            return Response(json.dumps(ready), content_type="application/json")
        unavailable = {"status": "unavailable", "reason": readiness.reason}
        return Response(json.dumps(unavailable), status=503, content_type="application/json")


def _register_cors(app: Flask, settings: Settings) -> None:
    if not settings.cors_origins:
        return  # no Access-Control headers at all: browsers keep other origins out
    CORS(
        app,
        resources={r"/graphql": {}},
        origins=list(settings.cors_origins),
        supports_credentials=settings.cors_allow_credentials,
        allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-ID"],
        expose_headers=["X-Request-ID"],
        methods=["GET", "POST", "OPTIONS"],
        max_age=600,
    )


def _register_graphql(app: Flask, settings: Settings, services: Services) -> None:
    view = UserqlGraphQLView.as_view(
        "graphql",
        schema=schema,
        graphql_ide="graphiql" if settings.graphiql else None,
        services=services,
    )
    app.add_url_rule("/graphql", view_func=view, methods=["GET", "POST"])


def _register_jwks(app: Flask, tokens: auth.TokenService) -> None:
    body = json.dumps(tokens.jwks())

    @app.get("/.well-known/jwks.json")
    def jwks() -> Response:
        response = Response(body, content_type="application/json")
        response.headers["Cache-Control"] = "public, max-age=300"
        return response


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        response = _json_error(
            error.description or error.name, _CODE_BY_STATUS.get(status, "BAD_REQUEST"), status
        )
        if allowed := getattr(error, "valid_methods", None):
            response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Response:
        logger.exception("unhandled error outside GraphQL execution")
        return _json_error(INTERNAL_MESSAGE, INTERNAL, 500)
