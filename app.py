"""The composition root: settings are read here, once, and handed on as plain values."""

import argparse
import enum
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from cross_web import HTTPException as GraphQLHTTPException
from cross_web import SyncHTTPRequestAdapter
from dotenv import dotenv_values
from flask import Flask, Request, Response, request
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session, sessionmaker
from strawberry.flask.views import GraphQLView
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult
from werkzeug.exceptions import HTTPException

from db import models
from db.session import default_database_url, make_engine, make_session_factory
from schema.context import Context
from schema.errors import INTERNAL, INTERNAL_MESSAGE, mask_unexpected
from schema.root import schema
from services import users as user_service
from services.errors import EmailTaken
from services.provisioning import NoopProvisioner, Provisioner, WebhookProvisioner
from services.unit_of_work import UnitOfWork

PROJECT_ROOT = Path(__file__).resolve().parent
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

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, dotenv_path: Path | None = None
    ) -> "Settings":
        """Settings from the process environment, over the values of an optional .env file."""
        dotenv = dotenv_values(dotenv_path or Path.cwd() / ".env")
        values = {k: v for k, v in dotenv.items() if v is not None}
        values.update(os.environ if environ is None else environ)
        return cls(
            database_url=values.get("DATABASE_URL") or default_database_url(),
            environment=_parse_environment(values.get("USERQL_ENV", "development")),
            provisioning_webhook_url=values.get("USER_PROVISIONING_WEBHOOK_URL") or None,
            provisioning_timeout_seconds=_parse_seconds(
                "USER_PROVISIONING_TIMEOUT_SECONDS",
                values.get("USER_PROVISIONING_TIMEOUT_SECONDS", "3"),
            ),
            log_level=_parse_log_level(values.get("LOG_LEVEL", "INFO")),
        )


def _parse_environment(raw: str) -> Environment:
    try:
        return Environment(raw.strip().lower())
    except ValueError:
        allowed = ", ".join(member.value for member in Environment)
        raise ConfigError(f"USERQL_ENV must be one of {allowed}, not {raw!r}") from None


def _parse_seconds(name: str, raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not 0 < seconds <= 60:
        raise ConfigError(f"{name} must be more than 0 and at most 60, not {raw!r}")
    return seconds


def _parse_log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {raw!r}")
    return level


def _error_body(message: str, code: str) -> str:
    return json.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})


_CODE_BY_STATUS = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


class UserqlGraphQLView(GraphQLView[Context, None]):
    """The only glue between HTTP and GraphQL."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        provisioner: Provisioner,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._session_factory = session_factory
        self._provisioner = provisioner

    def get_context(self, request: Request, response: Response) -> Context:
        return Context(session_factory=self._session_factory, provisioner=self._provisioner)

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
            return Response(
                _error_body(error.reason, code),
                status=error.status_code,
                content_type="application/json",
            )


def build_provisioner(settings: Settings) -> Provisioner:
    if settings.provisioning_webhook_url is None:
        return NoopProvisioner()
    try:
        return WebhookProvisioner(
            settings.provisioning_webhook_url, timeout_seconds=settings.provisioning_timeout_seconds
        )
    except ValueError as error:
        raise ConfigError(f"USER_PROVISIONING_WEBHOOK_URL: {error}") from None


def create_app(
    settings: Settings | None = None, *, session_factory: sessionmaker[Session] | None = None
) -> Flask:
    settings = settings or Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    if session_factory is None:
        session_factory = make_session_factory(make_engine(settings.database_url))
    app = Flask(__name__)
    _register_graphql(app, settings, session_factory)
    _register_error_handlers(app)
    return app


def _register_graphql(
    app: Flask, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    development = settings.environment is Environment.DEVELOPMENT
    view = UserqlGraphQLView.as_view(
        "graphql",
        schema=schema,
        graphql_ide="graphiql" if development else None,
        session_factory=session_factory,
        provisioner=build_provisioner(settings),
    )
    app.add_url_rule("/graphql", view_func=view, methods=["GET", "POST"])


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        response = Response(
            _error_body(
                error.description or error.name, _CODE_BY_STATUS.get(status, "BAD_REQUEST")
            ),
            status=status,
            content_type="application/json",
        )
        if allowed := getattr(error, "valid_methods", None):
            response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Response:
        logger.exception("unhandled error outside GraphQL execution")
        return Response(
            _error_body(INTERNAL_MESSAGE, INTERNAL), status=500, content_type="application/json"
        )


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


def export_schema(path: Path) -> None:
    path.write_text(schema.as_str() + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="userql", description="The userql GraphQL server.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the development server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    commands.add_parser("migrate", help="upgrade the database to the newest migration")
    commands.add_parser("seed", help="add the example users that are missing")
    export = commands.add_parser("export-schema", help="write the schema as SDL")
    export.add_argument("--path", type=Path, default=PROJECT_ROOT / "schema.graphql")
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
    elif args.command == "migrate":
        command.upgrade(alembic_config(settings.database_url), "head")
    elif args.command == "seed":
        session_factory = make_session_factory(make_engine(settings.database_url))
        created = seed(session_factory, build_provisioner(settings))
        print(f"seeded {len(created)} example users", *created, sep="\n  ")  # noqa: T201
    else:
        export_schema(args.path)
        print(f"wrote {args.path}")  # noqa: T201
    return 0
