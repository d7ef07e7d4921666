"""A real MariaDB outage, played by cutting a TCP proxy between the app and the server."""

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from alembic import command
from flask.testing import FlaskClient
from sqlalchemy import delete, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from db import models
from db.migrations import alembic_config
from db.session import PoolOptions, make_engine, make_session_factory
from services.auth import TokenService
from settings import Settings
from tests.factories import make_user
from tests.graphql import CREATE_USER, authorized
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.mysql
QUERY = {"query": "{ users { totalCount } }"}
# Small bounds, so a black-holed connection fails in about two seconds.
POOL = PoolOptions(connect_timeout_seconds=1, read_timeout_seconds=2, timeout_seconds=1)


@pytest.fixture
def proxy(mysql_url: str) -> Iterator[TcpProxy]:
    url = make_url(mysql_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 3306))
    yield proxy
    proxy.close()


@pytest.fixture
def proxied_url(mysql_url: str, proxy: TcpProxy) -> str:
    proxied = make_url(mysql_url).set(host="127.0.0.1", port=proxy.port)
    return proxied.render_as_string(hide_password=False)


@pytest.fixture
def proxied_session_factory(mysql_url: str, proxied_url: str) -> Iterator[sessionmaker[Session]]:
    command.upgrade(alembic_config(mysql_url), "head")
    engine = make_engine(proxied_url, POOL)
    yield make_session_factory(engine)
    engine.dispose()
    direct = make_engine(mysql_url)
    with direct.begin() as connection:
        connection.execute(delete(models.User))
    direct.dispose()


def _timed(client: FlaskClient) -> tuple[int, dict[str, object], float]:
    started = time.monotonic()
    response = client.post("/graphql", json=QUERY)
    return response.status_code, response.get_json(), time.monotonic() - started


def _unavailable(body: dict[str, object]) -> bool:
    errors = body["errors"]
    assert isinstance(errors, list)
    return [error["extensions"]["code"] for error in errors] == ["SERVICE_UNAVAILABLE"]


def _readiness_once_the_last_check_is_stale(client: FlaskClient) -> Any:
    """/readyz answers from a check at most a second old (ReadinessProbe)."""
    time.sleep(1.05)
    return client.get("/readyz")


def test_an_outage_fails_fast_and_the_app_recovers_by_itself(
    settings: Settings,
    tokens: TokenService,
    proxy: TcpProxy,
    proxied_url: str,
    proxied_session_factory: sessionmaker[Session],
) -> None:
    admin = make_user(proxied_session_factory, role=models.Role.ADMIN)
    # Built as in production: requests read through an engine of their own (autocommit).
    app = create_app(replace(settings, database_url=proxied_url, database_pool=POOL))
    client = authorized(app.test_client(), tokens, admin)
    assert _timed(client)[:2] == (200, {"data": {"users": {"totalCount": 1}}})
    assert client.get("/readyz").status_code == 200

    proxy.cut()  # connection refused: fails at once
    status, body, seconds = _timed(client)
    assert (status, _unavailable(body)) == (503, True)
    assert seconds < 3
    readiness = _readiness_once_the_last_check_is_stale(client)
    assert readiness.status_code == 503
    assert readiness.get_json() == {
        "status": "unavailable",
        "reason": "the database is unreachable",
    }

    proxy.blackhole()  # accepted and silent: the server's greeting never comes
    status, body, seconds = _timed(client)
    assert (status, _unavailable(body)) == (503, True)
    # Bounded by the connect timeout, not the (longer) read timeout.
    assert POOL.connect_timeout_seconds - 0.5 < seconds < POOL.read_timeout_seconds

    proxy.restore()
    assert _timed(client)[:2] == (200, {"data": {"users": {"totalCount": 1}}})
    assert _readiness_once_the_last_check_is_stale(client).status_code == 200


def test_mysql_runs_read_committed(mysql_url: str) -> None:
    engine = make_engine(mysql_url)
    with engine.connect() as connection:
        assert connection.get_isolation_level() == "READ COMMITTED"
    engine.dispose()


@pytest.fixture
def proxied_admin(
    settings: Settings,
    tokens: TokenService,
    proxied_url: str,
    proxied_session_factory: sessionmaker[Session],
) -> FlaskClient:
    """An ADMIN's client of an app built as in production, through the proxy, its
    connections already made (their set-up sends no COMMIT later)."""
    admin = make_user(proxied_session_factory, role=models.Role.ADMIN)
    app = create_app(replace(settings, database_url=proxied_url, database_pool=POOL))
    client = authorized(app.test_client(), tokens, admin)
    assert _timed(client)[0] == 200
    return client


def _create(client: FlaskClient, proxy: TcpProxy, *, losing: bytes, email: str) -> Any:
    """createUser while the proxy loses the answer to the packet holding `losing`."""
    variables = {"input": {"name": "Lost Reply", "email": email}}
    proxy.lose_reply_to(losing)
    try:
        return client.post(
            "/graphql", json={"query": CREATE_USER, "variables": variables}
        ).get_json()
    finally:
        proxy.lose_reply_to(None)


def test_a_commit_whose_answer_is_lost_says_the_outcome_is_unknown(
    proxied_admin: FlaskClient, proxy: TcpProxy, mysql_url: str
) -> None:
    # The COM_QUERY packet PyMySQL's commit() sends.
    body = _create(proxied_admin, proxy, losing=b"\x03COMMIT", email="lost@example.com")
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == "OUTCOME_UNKNOWN"
    assert "may or may not have been saved" in error["message"]
    # It was saved: the answer did not claim otherwise, and a read shows it.
    direct = make_engine(mysql_url)
    with direct.connect() as connection:
        emails = connection.execute(select(models.User.email)).scalars().all()
    direct.dispose()
    assert "lost@example.com" in emails


def test_an_outage_before_the_commit_is_still_unavailable(
    proxied_admin: FlaskClient, proxy: TcpProxy
) -> None:
    body = _create(proxied_admin, proxy, losing=b"INSERT INTO", email="never@example.com")
    assert [error["extensions"]["code"] for error in body["errors"]] == ["SERVICE_UNAVAILABLE"]
