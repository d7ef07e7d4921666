"""The composition root: settings are read here, once, and handed on as plain values."""

import argparse
import enum
import json
import logging
import os
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from alembic import command
from alembic.config import Config as AlembicConfig
from cross_web import HTTPException as GraphQLHTTPException
from cross_web import SyncHTTPRequestAdapter
from dotenv import dotenv_values
from flask import Flask, Request, Response, request
from flask.typing import ResponseReturnValue
from google.auth.transport.urllib3 import Request as Urllib3Request
from sqlalchemy.orm import Session, sessionmaker
from strawberry.flask.views import GraphQLView
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult
from werkzeug.exceptions import HTTPException

from db import models
from db.session import INSTANCE_DIR, default_database_url, make_engine, make_session_factory
from schema.context import Context
from schema.errors import INTERNAL, INTERNAL_MESSAGE, mask_unexpected
from schema.permissions import permission_matrix
from schema.root import schema
from services import auth
from services import users as user_service
from services.errors import EmailTaken, ProvisioningError, Unauthenticated
from services.google import (
    GOOGLE_CERTS_URL,
    CachingRequest,
    GoogleIdTokenVerifier,
    IdTokenVerifier,
)
from services.provisioning import NoopProvisioner, Provisioner, WebhookProvisioner
from services.unit_of_work import UnitOfWork

PROJECT_ROOT = Path(__file__).resolve().parent
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


class ConfigError(Exception):
    """A setting is missing or has a value the server cannot run with."""


class Environment(enum.StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"
    TEST = "test"


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

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, dotenv_path: Path | None = None
    ) -> "Settings":
        """Settings from the process environment, over the values of an optional .env file."""
        dotenv = dotenv_values(dotenv_path or Path.cwd() / ".env")
        values = {k: v for k, v in dotenv.items() if v is not None}
        values.update(os.environ if environ is None else environ)
        environment = _parse_environment(values.get("USERQL_ENV", "development"))
        algorithm = values.get("JWT_ALGORITHM", auth.SYMMETRIC_ALGORITHM).strip().upper()
        private_key_file = values.get("JWT_PRIVATE_KEY_FILE", "").strip()
        return cls(
            database_url=values.get("DATABASE_URL") or default_database_url(),
            environment=environment,
            provisioning_webhook_url=values.get("USER_PROVISIONING_WEBHOOK_URL") or None,
            provisioning_timeout_seconds=_parse_number(
                "USER_PROVISIONING_TIMEOUT_SECONDS",
                values.get("USER_PROVISIONING_TIMEOUT_SECONDS", "3"),
                float,
                low=0.1,
                high=60,
            ),
            log_level=_parse_log_level(values.get("LOG_LEVEL", "INFO")),
            jwt_secret=_jwt_secret(values.get("JWT_SECRET"), environment, algorithm),
            jwt_algorithm=algorithm,
            jwt_private_key_pem=_read_file(private_key_file) if private_key_file else None,
            jwt_public_keys_pem=tuple(
                _read_file(path) for path in _split(values.get("JWT_PUBLIC_KEY_FILES", ""))
            ),
            jwt_ttl_seconds=int(
                _parse_number(
                    "JWT_TTL_SECONDS",
                    values.get("JWT_TTL_SECONDS", "3600"),
                    int,
                    low=1,
                    high=2678400,
                )
            ),
            jwt_issuer=values.get("JWT_ISSUER") or "userql",
            jwt_audience=values.get("JWT_AUDIENCE") or "userql",
            jwt_leeway_seconds=int(
                _parse_number(
                    "JWT_LEEWAY_SECONDS",
                    values.get("JWT_LEEWAY_SECONDS", "30"),
                    int,
                    low=0,
                    high=300,
                )
            ),
            google_client_ids=_split(values.get("GOOGLE_CLIENT_IDS", "")),
            google_hosted_domain=values.get("GOOGLE_HOSTED_DOMAIN") or None,
            google_signup_enabled=_parse_bool(
                "GOOGLE_SIGNUP_ENABLED", values.get("GOOGLE_SIGNUP_ENABLED", "true")
            ),
            google_certs_url=values.get("GOOGLE_CERTS_URL") or GOOGLE_CERTS_URL,
        )


def _parse_environment(raw: str) -> Environment:
    try:
        return Environment(raw.strip().lower())
    except ValueError:
        allowed = ", ".join(member.value for member in Environment)
        raise ConfigError(f"USERQL_ENV must be one of {allowed}, not {raw!r}") from None


def _parse_number(
    name: str, raw: str, kind: Callable[[str], float], *, low: float, high: float
) -> float:
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


def _error_body(message: str, code: str) -> str:
    return json.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})


_CODE_BY_STATUS = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request needs besides the request, built once per app."""

    session_factory: sessionmaker[Session]
    provisioner: Provisioner
    tokens: auth.TokenService
    google: IdTokenVerifier
    google_signup_enabled: bool


class UserqlGraphQLView(GraphQLView[Context, None]):
    """The only glue between HTTP and GraphQL."""

    def __init__(self, *, services: Services, **options: Any) -> None:
        super().__init__(**options)
        self._services = services

    def get_context(self, request: Request, response: Response) -> Context:
        services = self._services
        token = auth.bearer_token(request.headers.getlist("Authorization"))
        principal = auth.authenticate(UnitOfWork(services.session_factory), services.tokens, token)
        return Context(
            session_factory=services.session_factory,
            provisioner=services.provisioner,
            principal=principal,
            tokens=services.tokens,
            google=services.google,
            google_signup_enabled=services.google_signup_enabled,
        )

    def parse_http_body(self, request: SyncHTTPRequestAdapter) -> Any:
        try:
            return super().parse_http_body(request)
        except UnicodeDecodeError as error:
            raise GraphQLHTTPException(400, "The request body is not valid UTF-8.") from error

    def parse_json(self, data: str | bytes) -> Any:
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as error:
            # ValueError covers bytes that are not UTF-8 as well as bad JSON syntax.
            raise GraphQLHTTPException(400, "The request body is not valid JSON.") from error
        if not isinstance(value, dict | list):
            raise GraphQLHTTPException(400, "The request body must be a JSON object.")
        return value

    def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        if result.errors:
            result.errors = [mask_unexpected(error) for error in result.errors]
        return super().process_result(request, result)

    def dispatch_request(self) -> ResponseReturnValue:
        try:
            return self.run(request=request)
        except GraphQLHTTPException as error:
            code = _CODE_BY_STATUS.get(error.status_code, "BAD_REQUEST")
            return _json_error(error.reason, code, error.status_code)
        except Unauthenticated as error:
            # RFC 6750: the client must get (or refresh) a token before trying again.
            response = _json_error(str(error), error.code, 401)
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return response


def _json_error(message: str, code: str, status: int) -> Response:
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


def build_services(settings: Settings, session_factory: sessionmaker[Session]) -> Services:
    return Services(
        session_factory=session_factory,
        provisioner=build_provisioner(settings),
        tokens=build_token_service(settings),
        google=build_google_verifier(settings),
        google_signup_enabled=settings.google_signup_enabled,
    )


def create_app(
    settings: Settings | None = None, *, session_factory: sessionmaker[Session] | None = None
) -> Flask:
    settings = settings or Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    if session_factory is None:
        session_factory = make_session_factory(make_engine(settings.database_url))
    services = build_services(settings, session_factory)
    app = Flask(__name__)
    _register_graphql(app, settings, services)
    _register_jwks(app, services.tokens)
    _register_error_handlers(app)
    return app


def _register_graphql(app: Flask, settings: Settings, services: Services) -> None:
    development = settings.environment is Environment.DEVELOPMENT
    view = UserqlGraphQLView.as_view(
        "graphql",
        schema=schema,
        graphql_ide="graphiql" if development else None,
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


def alembic_config(database_url: str) -> AlembicConfig:
    config = AlembicConfig(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    # Passed as an attribute, not an ini option: configparser would mangle a '%' in a password.
    config.attributes["database_url"] = database_url
    return config


EXAMPLE_USERS = (
    ("Ada Lovelace", "ada@example.com", models.Role.ADMIN),
    ("Grace Hopper", "grace@example.com", models.Role.USER),
    ("Alan Turing", "alan@example.com", models.Role.USER),
    ("Katherine Johnson", "katherine@example.com", models.Role.USER),
)


def seed(session_factory: sessionmaker[Session], provisioner: Provisioner) -> list[str]:
    """Creates the example users that do not exist yet; returns the emails it created."""
    created = []
    for name, email, role in EXAMPLE_USERS:
        try:
            user_service.create_user(
                UnitOfWork(session_factory), provisioner, name=name, email=email, role=role
            )
        except EmailTaken:
            continue
        created.append(email)
    return created


MATRIX_START = "<!-- permission-matrix:start (generated by `make schema`) -->\n"
MATRIX_END = "<!-- permission-matrix:end -->"


def export_schema(schema_path: Path, readme_path: Path) -> None:
    """Writes the SDL, and the permission matrix into its place in the README."""
    schema_path.write_text(schema.as_str() + "\n", encoding="utf-8")
    readme = readme_path.read_text(encoding="utf-8")
    head, found, rest = readme.partition(MATRIX_START)
    _, found_end, tail = rest.partition(MATRIX_END)
    if not (found and found_end):
        raise ConfigError(f"{readme_path} has no permission matrix markers")
    readme_path.write_text(head + MATRIX_START + permission_matrix() + MATRIX_END + tail)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="userql", description="The userql GraphQL server.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the development server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    commands.add_parser("migrate", help="upgrade the database to the newest migration")
    commands.add_parser("seed", help="add the example users that are missing")
    export = commands.add_parser(
        "export-schema", help="write schema.graphql and the README's permission matrix"
    )
    export.add_argument("--path", type=Path, default=PROJECT_ROOT / "schema.graphql")
    export.add_argument("--readme", type=Path, default=PROJECT_ROOT / "README.md")
    admin = commands.add_parser("create-admin", help="create or promote an admin (idempotent)")
    admin.add_argument("--email", required=True)
    admin.add_argument("--name", required=True)
    issue = commands.add_parser("issue-token", help="print an access token for a user")
    issue.add_argument("--email", required=True)
    issue.add_argument("--ttl", type=int, help="lifetime in seconds (default JWT_TTL_SECONDS)")
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env()
        return _run(args, settings)
    except ConfigError as error:
        print(f"userql: configuration error: {error}", file=sys.stderr)  # noqa: T201
        return 2


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "serve":
        app = create_app(settings)
        logger.info("GraphQL endpoint: http://%s:%s/graphql", args.host, args.port)
        app.run(host=args.host, port=args.port)
        return 0
    if args.command == "migrate":
        command.upgrade(alembic_config(settings.database_url), "head")
        return 0
    if args.command == "export-schema":
        export_schema(args.path, args.readme)
        print(f"wrote {args.path} and the permission matrix in {args.readme}")  # noqa: T201
        return 0
    session_factory = make_session_factory(make_engine(settings.database_url))
    if args.command == "seed":
        created = seed(session_factory, build_provisioner(settings))
        print(f"seeded {len(created)} example users", *created, sep="\n  ")  # noqa: T201
        return 0
    if args.command == "create-admin":
        return _create_admin(args, settings, session_factory)
    return _issue_token(args, settings, session_factory)


def _create_admin(
    args: argparse.Namespace, settings: Settings, session_factory: sessionmaker[Session]
) -> int:
    try:
        user, changed = user_service.ensure_admin(
            UnitOfWork(session_factory),
            build_provisioner(settings),
            name=args.name,
            email=args.email,
        )
    except ProvisioningError as error:
        print(f"userql: {error}", file=sys.stderr)  # noqa: T201
        return 1
    state = "is now" if changed else "already was"
    print(f"{user.email} (id {user.id}) {state} an ADMIN")  # noqa: T201
    return 0


def _issue_token(
    args: argparse.Namespace, settings: Settings, session_factory: sessionmaker[Session]
) -> int:
    if args.ttl is not None and args.ttl <= 0:
        print("userql: --ttl must be a positive number of seconds", file=sys.stderr)  # noqa: T201
        return 2
    issued = auth.issue_token_for(
        UnitOfWork(session_factory),
        build_token_service(settings),
        email=args.email,
        ttl_seconds=args.ttl,
    )
    if issued is None:
        print(f"userql: no user has the email {args.email}", file=sys.stderr)  # noqa: T201
        return 1
    print(issued.token)  # noqa: T201
    # The how-to goes to stderr, so `TOKEN=$(userql issue-token ...)` captures the token alone.
    print(  # noqa: T201
        f"\nAccess token for {args.email}, valid until {issued.expires_at.isoformat()}.\n"
        "In GraphiQL, open the Headers tab (bottom left) and paste:\n\n"
        f'{{"Authorization": "Bearer {issued.token}"}}\n',
        file=sys.stderr,
    )
    return 0
