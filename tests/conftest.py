"""Fixtures: every database test runs on SQLite and, when USERQL_TEST_MYSQL_URL is set, on
MySQL/MariaDB too. Each test runs inside a transaction that is rolled back afterwards, so
services may commit (into a SAVEPOINT) and every test still starts from an empty table.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from alembic import command
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, Engine, create_engine, delete
from sqlalchemy.orm import Session, sessionmaker

from app import build_token_service, create_app
from db import models
from db.migrations import alembic_config
from db.session import make_engine, make_session_factory
from services.auth import TokenService
from settings import Environment, Settings
from tests.factories import make_user
from tests.graphql import authorized
from tests.report import REPORT

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256"

MYSQL_URL_VARIABLE = "USERQL_TEST_MYSQL_URL"
# A MariaDB primary and its replica, such as .ci/mariadb-pair starts.
PRIMARY_URL_VARIABLE = "USERQL_TEST_MYSQL_PRIMARY_URL"
REPLICA_URL_VARIABLE = "USERQL_TEST_MYSQL_REPLICA_URL"
REDIS_URL_VARIABLE = "USERQL_TEST_REDIS_URL"
CHROMIUM_VARIABLE = "USERQL_TEST_CHROMIUM"
PODMAN_VARIABLE = "USERQL_TEST_PODMAN"
HAPROXY_VARIABLE = "USERQL_TEST_HAPROXY"
PROMTOOL_VARIABLE = "USERQL_TEST_PROMTOOL"
# Marker → the variable that must be set for its tests to run.
SERVICE_MARKERS = {
    "mysql": MYSQL_URL_VARIABLE,
    "replica": REPLICA_URL_VARIABLE,
    "redis": REDIS_URL_VARIABLE,
    "browser": CHROMIUM_VARIABLE,
    "image": PODMAN_VARIABLE,
    "proxy": HAPROXY_VARIABLE,
    "promtool": PROMTOOL_VARIABLE,
}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("measured")
        for line in REPORT:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that need MySQL or Redis run only when its URL is given; the summary counts the
    others as deselected. `.ci/run` gives both."""
    missing = [
        marker for marker, variable in SERVICE_MARKERS.items() if not os.environ.get(variable)
    ]
    unrunnable = [item for item in items if any(item.get_closest_marker(m) for m in missing)]
    if unrunnable:
        config.hook.pytest_deselected(items=unrunnable)
        items[:] = [item for item in items if item not in unrunnable]


@pytest.fixture
def redis_url() -> Iterator[str]:
    """An empty Redis database for the test."""
    url = os.environ[REDIS_URL_VARIABLE]
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def mysql_url() -> str:
    return os.environ[MYSQL_URL_VARIABLE]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_url" in metafunc.fixturenames:
        backends = ["sqlite"]
        if os.environ.get(MYSQL_URL_VARIABLE):
            backends.append("mysql")
        metafunc.parametrize("database_url", backends, indirect=True, scope="session")


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "mysql":
        return os.environ[MYSQL_URL_VARIABLE]
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"


def empty(connection: Connection) -> None:
    """Every table's rows gone; sessions go with their users."""
    for model in (models.IdempotencyKey, models.AuditEvent, models.User):
        connection.execute(delete(model))


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    """The test database, migrated once per run; a MySQL server that is down fails here."""
    command.upgrade(alembic_config(database_url), "head")
    engine = make_engine(database_url)
    with engine.begin() as connection:
        # A run that was killed may have left committed rows behind.
        empty(connection)
    yield engine
    engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        transaction = connection.begin()
        yield connection
        transaction.rollback()


@pytest.fixture
def session_factory(connection: Connection) -> sessionmaker[Session]:
    return sessionmaker(
        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )


@pytest.fixture
def committing_session_factory(engine: Engine) -> Iterator[sessionmaker[Session]]:
    """Real transactions on separate connections, for concurrency tests; emptied afterwards."""
    yield make_session_factory(engine)
    with engine.begin() as connection:
        empty(connection)


@pytest.fixture
def settings() -> Settings:
    return Settings(database_url="unused://", environment=Environment.TEST, jwt_secret=TEST_SECRET)


@pytest.fixture
def tokens(settings: Settings) -> TokenService:
    return build_token_service(settings)


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]) -> Flask:
    return create_app(settings, session_factory=session_factory)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """An anonymous caller."""
    return app.test_client()


@pytest.fixture
def admin(session_factory: sessionmaker[Session]) -> models.User:
    return make_user(
        session_factory, name="Admin", email="admin@example.com", role=models.Role.ADMIN
    )


@pytest.fixture
def admin_client(app: Flask, admin: models.User, tokens: TokenService) -> FlaskClient:
    return authorized(app.test_client(), tokens, admin)


@pytest.fixture
def member(session_factory: sessionmaker[Session]) -> models.User:
    return make_user(session_factory, name="Member", email="member@example.com")


@pytest.fixture
def user_client(app: Flask, member: models.User, tokens: TokenService) -> FlaskClient:
    return authorized(app.test_client(), tokens, member)


@pytest.fixture
def unreachable_database() -> Iterator[sessionmaker[Session]]:
    # Nothing listens on port 1: every connection attempt fails at once.
    engine = create_engine("mysql+pymysql://root@127.0.0.1:1/gone", pool_pre_ping=True)
    yield sessionmaker(bind=engine)
    engine.dispose()


@pytest.fixture
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
