"""The `userql` command: serve, migrate, seed, create-admin, issue-token, issue-session,
purge-idempotency-keys, export-schema, schema check and healthcheck. Settings are read here
once and handed on as plain values."""

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from app import build_provisioner, build_token_service, create_app
from cli import health, schema_tools
from cli.seed import seed
from db.base import utc_now
from db.migrations import MigrationsNotFound, upgrade
from db.session import make_engine, make_session_factory, wait_for_database
from services import auth, idempotency, sessions
from services import users as user_service
from services.errors import AccountDeactivated, ProvisioningError, ServiceError
from services.unit_of_work import UnitOfWork, database_errors
from settings import ConfigError, Settings
from web.request_log import configure_logging

SOURCE_ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger("userql")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="userql", description="The userql GraphQL server.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the development server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    commands.add_parser("migrate", help="upgrade the database to the newest migration")
    commands.add_parser("seed", help="add the example users that are missing")
    export = commands.add_parser(
        "export-schema",
        help="write schema.graphql, schema.federation.graphql, the README's permission matrix and "
        "docs/api.md's role schemas",
    )
    export.add_argument("--path", type=Path, default=SOURCE_ROOT / "schema.graphql")
    export.add_argument("--readme", type=Path, default=SOURCE_ROOT / "README.md")
    export.add_argument("--api-doc", type=Path, default=SOURCE_ROOT / "docs" / "api.md")
    schema_commands = commands.add_parser("schema", help="schema tools").add_subparsers(
        dest="schema_command", required=True
    )
    check = schema_commands.add_parser(
        "check", help="breaking and dangerous changes against the committed schema.graphql"
    )
    check.add_argument("--against", type=Path, default=SOURCE_ROOT / "schema.graphql")
    check.add_argument(
        "--acknowledged", type=Path, default=SOURCE_ROOT / "schema-breaking-changes.txt"
    )
    admin = commands.add_parser("create-admin", help="create or promote an admin (idempotent)")
    admin.add_argument("--email", required=True)
    admin.add_argument("--name", required=True)
    issue = commands.add_parser("issue-token", help="print an access token for a user")
    issue.add_argument("--email", required=True)
    issue.add_argument("--ttl", type=int, help="lifetime in seconds (default JWT_TTL_SECONDS)")
    session = commands.add_parser(
        "issue-session",
        help="start a session for a user: print its access and refresh tokens as JSON",
    )
    session.add_argument("--email", required=True)
    session.add_argument("--user-agent", default="userql issue-session")
    commands.add_parser(
        "purge-idempotency-keys", help="remove the idempotency keys whose time is up"
    )
    probe = commands.add_parser(
        "healthcheck", help="exit 0 if /readyz answers 200 at the address gunicorn binds"
    )
    probe.add_argument("--url", help="ask this URL instead")
    probe.add_argument("--timeout", type=float, default=4.0, help="seconds (default 4)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "healthcheck":
        # Needs no settings: a container's probe must not fail on what the server tolerates.
        return health.check(args.url or health.readiness_url(), timeout=args.timeout)
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level)
        return _run(args, settings)
    except (ConfigError, MigrationsNotFound, schema_tools.MarkersMissing) as error:
        print(f"userql: configuration error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    except ServiceError as error:
        # The database is down, or too slow: a sentence for the operator, not a traceback.
        print(f"userql: {error}", file=sys.stderr)  # noqa: T201
        return 1


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "serve":
        app = create_app(settings)
        logger.info("GraphQL endpoint: http://%s:%s/graphql", args.host, args.port)
        app.run(host=args.host, port=args.port)
        return 0
    if args.command == "migrate":
        return _migrate(settings)
    if args.command == "schema":
        return schema_tools.check_schema(args.against, args.acknowledged)
    if args.command == "export-schema":
        schema_tools.export_schema(args.path, args.readme, args.api_doc)
        print(  # noqa: T201
            f"wrote {args.path}, {schema_tools.federation_path(args.path)}, "
            f"the permission matrix in {args.readme} "
            f"and the role schemas in {args.api_doc}"
        )
        return 0
    session_factory = make_session_factory(make_engine(settings.database_url))
    if args.command == "seed":
        created = seed(session_factory, build_provisioner(settings))
        print(f"seeded {len(created)} example users", *created, sep="\n  ")  # noqa: T201
        return 0
    if args.command == "create-admin":
        return _create_admin(args, settings, session_factory)
    if args.command == "issue-session":
        return _issue_session(args, settings, session_factory)
    if args.command == "purge-idempotency-keys":
        return _purge_idempotency_keys(session_factory)
    return _issue_token(args, settings, session_factory)


def _migrate(settings: Settings) -> int:
    engine = make_engine(settings.database_url, settings.database_pool)
    try:
        if not wait_for_database(engine, seconds=settings.database_wait_seconds):
            return 1
    finally:
        engine.dispose()
    logger.info("database migrated to %s", upgrade(settings.database_url))
    return 0


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


def _issue_session(
    args: argparse.Namespace, settings: Settings, session_factory: sessionmaker[Session]
) -> int:
    try:
        started = sessions.start_session_for(
            UnitOfWork(session_factory),
            build_token_service(settings),
            email=args.email,
            user_agent=sessions.user_agent(args.user_agent),
            ttl_seconds=settings.session_ttl_seconds,
        )
    except AccountDeactivated as error:
        print(f"userql: {error}", file=sys.stderr)  # noqa: T201
        return 1
    if started is None:
        print(f"userql: no user has the email {args.email}", file=sys.stderr)  # noqa: T201
        return 1
    # The names and shape signInWithGoogle answers with, so a script can treat both alike.
    session = {
        "accessToken": started.access.token,
        "expiresAt": started.access.expires_at.isoformat(),
        "refreshToken": started.refresh_token,
        "refreshTokenExpiresAt": started.refresh_expires_at.isoformat(),
        "sessionId": str(started.session_id),
    }
    print(json.dumps(session, indent=2))  # noqa: T201
    return 0


def _purge_idempotency_keys(session_factory: sessionmaker[Session]) -> int:
    with database_errors(), session_factory() as session, session.begin():
        removed = idempotency.purge(session.connection(), utc_now())
    print(f"removed {removed} expired idempotency keys")  # noqa: T201
    return 0
