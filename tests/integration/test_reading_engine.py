"""The app as production builds it on MariaDB: reads on an engine of their own, in
autocommit, writes in transactions on the other. Commands are recorded as PyMySQL sends them,
so what reaches the server is what is asserted."""

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from alembic import command
from flask.testing import FlaskClient
from pymysql.connections import Connection as PyMySQLConnection
from pymysql.constants import COMMAND
from sqlalchemy import delete, select

from app import create_app
from db import models
from db.migrations import alembic_config
from db.session import make_engine, make_session_factory
from services.auth import TokenService
from settings import Settings
from tests.factories import make_user
from tests.graphql import CREATE_USER, authorized, gql
from tests.http_stub import Behaviour, stub_server

pytestmark = pytest.mark.mysql
USER = "query($id: ID!) { user(id: $id) { id name email role createdAt } }"


@pytest.fixture
def production_settings(settings: Settings, mysql_url: str) -> Iterator[Settings]:
    command.upgrade(alembic_config(mysql_url), "head")
    yield replace(settings, database_url=mysql_url)
    engine = make_engine(mysql_url)
    with engine.begin() as connection:
        connection.execute(delete(models.User))
    engine.dispose()


@pytest.fixture
def admin_client(production_settings: Settings, tokens: TokenService) -> FlaskClient:
    engine = make_engine(production_settings.database_url)
    admin = make_user(make_session_factory(engine), role=models.Role.ADMIN)
    engine.dispose()
    return authorized(create_app(production_settings).test_client(), tokens, admin)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each command PyMySQL sends: the statement's first word, or PING."""
    commands: list[str] = []
    original = PyMySQLConnection._execute_command

    def record(connection: PyMySQLConnection, command: int, sql: Any) -> Any:
        text = sql.decode() if isinstance(sql, bytes) else str(sql)
        commands.append("PING" if command == COMMAND.COM_PING else text.split(None, 1)[0].upper())
        return original(connection, command, sql)

    monkeypatch.setattr(PyMySQLConnection, "_execute_command", record)
    return commands


def test_a_request_that_only_reads_ends_no_transaction(
    admin_client: FlaskClient, sent: list[str]
) -> None:
    me = gql(admin_client, "{ me { id } }")["data"]["me"]
    sent.clear()
    user = gql(admin_client, USER, id=me["id"])["data"]["user"]
    assert user["id"] == me["id"]
    # The pool's ping, authentication, the read: no ROLLBACK, no COMMIT, no SET.
    assert sent == ["PING", "SELECT", "SELECT"]


def test_a_mutation_commits_once_and_the_next_read_sees_it(
    admin_client: FlaskClient, sent: list[str]
) -> None:
    created = gql(admin_client, CREATE_USER, input={"name": "Ada", "email": "ada@example.com"})
    user = created["data"]["createUser"]["user"]
    assert sent.count("COMMIT") == 1
    assert "INSERT" in sent
    found = gql(admin_client, USER, id=user["id"])["data"]["user"]
    assert found["email"] == "ada@example.com"


def test_a_signed_in_mutation_takes_one_connection_and_one_transaction(
    admin_client: FlaskClient, sent: list[str]
) -> None:
    gql(admin_client, "{ me { id } }")
    sent.clear()
    created = gql(admin_client, CREATE_USER, input={"name": "Cy", "email": "cy@example.com"})
    assert created["data"]["createUser"]["__typename"] == "CreateUserSuccess"
    # Authentication reads on the writers' connection, in the transaction the INSERTs (the
    # user, its audit event) then continue: one ping, no ROLLBACK, one COMMIT.
    assert sent == ["PING", "SELECT", "INSERT", "INSERT", "COMMIT"]
    sent.clear()
    gql(admin_client, USER, id=created["data"]["createUser"]["user"]["id"])
    assert sent == ["PING", "SELECT", "SELECT"]  # a query still reads in autocommit


def test_a_failed_mutation_keeps_nothing(
    production_settings: Settings, tokens: TokenService, mysql_url: str
) -> None:
    with stub_server(Behaviour(status=500)) as url:
        settings = replace(production_settings, provisioning_webhook_url=url)
        engine = make_engine(mysql_url)
        admin = make_user(make_session_factory(engine), role=models.Role.ADMIN)
        client = authorized(create_app(settings).test_client(), tokens, admin)
        body = gql(client, CREATE_USER, input={"name": "Bo", "email": "bo@example.com"})
    assert body["data"]["createUser"]["__typename"] == "ProvisioningFailed"
    with engine.connect() as connection:
        emails = connection.scalars(select(models.User.email)).all()
    engine.dispose()
    assert emails == [admin.email]


def test_an_idempotency_key_costs_a_signed_in_mutation_one_statement(
    admin_client: FlaskClient, sent: list[str]
) -> None:
    """Authentication's statement reads the earlier request under the key too; the answer is
    stored by one INSERT before the COMMIT. A retry runs nothing and writes nothing."""

    def create(key: str, email: str) -> dict[str, Any]:
        body = {"query": CREATE_USER, "variables": {"input": {"name": "Kay", "email": email}}}
        response = admin_client.post("/graphql", json=body, headers={"Idempotency-Key": key})
        assert response.status_code == 200
        return {"replayed": "Idempotent-Replayed" in response.headers, **response.get_json()}

    create("warm-up", "warm@example.com")  # the first in a process also purges expired keys
    sent.clear()
    first = create("k-1", "kay@example.com")
    assert first["data"]["createUser"]["__typename"] == "CreateUserSuccess"
    # The user, its audit event, the key with its answer.
    assert sent == ["PING", "SELECT", "INSERT", "INSERT", "INSERT", "COMMIT"]
    sent.clear()
    again = create("k-1", "kay@example.com")
    assert again == {**first, "replayed": True}
    # Authentication finds the key's row; the answer is read by its id.
    assert sent == ["PING", "SELECT", "SELECT", "ROLLBACK"]
