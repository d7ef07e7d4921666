from collections.abc import Iterator
from contextlib import contextmanager
from hashlib import sha256
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, Engine, event
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from db import models
from services.auth import TokenService
from services.sessions import start_session
from services.unit_of_work import UnitOfWork
from settings import Settings
from tests.factories import make_user, make_users
from tests.graphql import CREATE_USER, authorized, gql
from web import graphql_view


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Connection, _cursor: object, statement: str, *_: object) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@contextmanager
def statement_texts(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Connection, _cursor: object, statement: str, *_: object) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _selects(client: FlaskClient, engine: Engine, query: str, **variables: Any) -> list[str]:
    with statements(engine) as seen:
        gql(client, query, **variables)
    return [statement for statement in seen if statement == "SELECT"]


def test_users_costs_the_same_whatever_the_page_size(
    admin_client: FlaskClient, session_factory: sessionmaker[Session], engine: Engine
) -> None:
    make_users(session_factory, 30)
    shape = """query($first: Int) { users(first: $first) {
        totalCount pageInfo { hasNextPage }
        edges { cursor node { id name email role createdAt updatedAt } } } }"""
    budgets = {
        first: _selects(admin_client, engine, shape, first=first) for first in (1, 10, 30, 100)
    }
    # The caller's user (authentication), the page, and totalCount.
    assert budgets == {first: ["SELECT"] * 3 for first in (1, 10, 30, 100)}


def test_total_count_is_only_counted_when_asked(
    admin_client: FlaskClient, session_factory: sessionmaker[Session], engine: Engine
) -> None:
    make_users(session_factory, 3)
    assert _selects(admin_client, engine, "{ users { edges { node { id } } } }") == ["SELECT"] * 2


def test_user_by_id_is_one_statement(
    admin_client: FlaskClient, session_factory: sessionmaker[Session], engine: Engine
) -> None:
    [user] = make_users(session_factory, 1)
    query = "query($id: ID!) { user(id: $id) { id name email } }"
    assert _selects(admin_client, engine, query, id=user.id) == ["SELECT"] * 2


def test_me_reuses_the_authentication_lookup(admin_client: FlaskClient, engine: Engine) -> None:
    assert _selects(admin_client, engine, "{ me { id name email } }") == ["SELECT"]


def test_authentication_reads_only_the_role_unless_the_document_may_select_me(
    admin_client: FlaskClient, admin: models.User, engine: Engine
) -> None:
    def lookup(query: str) -> str:
        with statement_texts(engine) as seen:
            gql(admin_client, query, id=admin.id)
        return next(s for s in seen if s.startswith("SELECT"))

    by_id = lookup("query($id: ID!) { user(id: $id) { name } }")
    assert "users.role" in by_id
    assert "users.name" not in by_id
    assert "users.email" not in by_id
    via_fragment = lookup(
        "query($id: ID!) { ...Caller user(id: $id) { id } } fragment Caller on Query { me { id } }"
    )
    assert "users.email" in via_fragment


def test_me_answers_from_a_second_lookup_when_authentication_read_only_the_role(
    admin_client: FlaskClient, admin: models.User, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(graphql_view, "needs_caller_row", lambda _document: False)
    with statements(engine) as seen:
        me = gql(admin_client, "{ me { id name email role } }")["data"]["me"]
    assert me == {"id": str(admin.id), "name": admin.name, "email": admin.email, "role": "ADMIN"}
    assert [s for s in seen if s == "SELECT"] == ["SELECT"] * 2


def test_a_persisted_me_reuses_the_authentication_lookup(
    admin_client: FlaskClient, admin: models.User, engine: Engine
) -> None:
    document = "{ me { email } }"
    hashed = {"persistedQuery": {"version": 1, "sha256Hash": sha256(document.encode()).hexdigest()}}
    admin_client.post("/graphql", json={"query": document, "extensions": hashed})
    with statements(engine) as seen:
        response = admin_client.post("/graphql", json={"extensions": hashed})
    assert response.get_json() == {"data": {"me": {"email": admin.email}}}
    assert [s for s in seen if s == "SELECT"] == ["SELECT"]


def test_anonymous_requests_cost_no_lookup(client: FlaskClient, engine: Engine) -> None:
    assert _selects(client, engine, "{ me { id } }") == []


def test_walking_by_cursor_costs_the_same_on_every_page(
    admin_client: FlaskClient, session_factory: sessionmaker[Session], engine: Engine
) -> None:
    make_users(session_factory, 24)
    walk = """query($after: String) { users(first: 10, after: $after) {
        edges { node { id name email role createdAt } } pageInfo { hasNextPage endCursor } } }"""
    budgets, after, more = [], None, True
    while more:
        with statements(engine) as seen:
            page = gql(admin_client, walk, after=after)["data"]["users"]
        budgets.append(seen)
        after, more = page["pageInfo"]["endCursor"], page["pageInfo"]["hasNextPage"]
    assert len(budgets) == 3
    # The caller (authentication) and the page: nothing grows with depth or page size.
    assert all([s for s in seen if s == "SELECT"] == ["SELECT"] * 2 for seen in budgets)
    assert all(seen == budgets[0] for seen in budgets)


def test_create_user_writes_once(admin_client: FlaskClient, engine: Engine) -> None:
    with statements(engine) as seen:
        body = gql(admin_client, CREATE_USER, input={"name": "N", "email": "n@example.com"})
    assert body["data"]["createUser"]["__typename"] == "CreateUserSuccess"
    # Authentication, the insert (the unique index checks the email), the audit event.
    assert [s for s in seen if s in ("SELECT", "INSERT", "UPDATE", "DELETE")] == [
        "SELECT",
        "INSERT",
        "INSERT",
    ]


def test_a_request_checks_out_one_connection_for_authentication_and_the_operation(
    settings: Settings,
    engine: Engine,
    committing_session_factory: sessionmaker[Session],
    tokens: TokenService,
) -> None:
    # Each checkout pings the server and each transaction ends with a round trip: once per
    # request, not per unit of work.
    admin = make_user(committing_session_factory, role=models.Role.ADMIN)
    client = authorized(
        create_app(settings, session_factory=committing_session_factory).test_client(),
        tokens,
        admin,
    )
    checkouts: list[object] = []
    transactions: list[object] = []

    def checkout(*_: object) -> None:
        checkouts.append(_)

    def begin(*_: object) -> None:
        transactions.append(_)

    event.listen(engine, "checkout", checkout)
    event.listen(engine, "begin", begin)
    try:
        with statements(engine) as seen:
            gql(client, "{ users { edges { node { id } } } }")
        assert seen.count("SELECT") == 2  # the caller, then the page
        assert len(checkouts) == 1
        assert len(transactions) == 1  # the reads share one
        checkouts.clear()
        transactions.clear()
        gql(client, CREATE_USER, input={"name": "N", "email": "one-checkout@example.com"})
        assert len(checkouts) == 1
        assert len(transactions) == 1  # the write continues the caller's read
    finally:
        event.remove(engine, "checkout", checkout)
        event.remove(engine, "begin", begin)


def test_a_read_selects_only_the_columns_asked_for(
    admin_client: FlaskClient, session_factory: sessionmaker[Session], engine: Engine
) -> None:
    [user] = make_users(session_factory, 1)
    # Authentication reads the caller's role; the operation's read is the second SELECT.
    with statement_texts(engine) as seen:
        gql(admin_client, "{ users { edges { node { name } } } }")
    page = [s for s in seen if s.startswith("SELECT")][1]
    assert "users.name" in page
    assert "created_at" not in page
    assert "email" not in page
    with statement_texts(engine) as seen:
        gql(
            admin_client,
            """query($id: ID!) { user(id: $id) { ...Dates } }
            fragment Dates on User { ... on User { updatedAt } }""",
            id=user.id,
        )
    read = [s for s in seen if s.startswith("SELECT")][1]
    assert "users.updated_at" in read
    assert "created_at" not in read
    assert "users.name" not in read


def test_each_document_reads_its_own_columns_when_sent_again(
    admin_client: FlaskClient, session_factory: sessionmaker[Session], engine: Engine
) -> None:
    [user] = make_users(session_factory, 1)

    def read(query: str) -> str:
        with statement_texts(engine) as seen:
            gql(admin_client, query, id=user.id)
        return [s for s in seen if s.startswith("SELECT")][1]

    by_name = "query($id: ID!) { user(id: $id) { name } }"
    by_email = "query($id: ID!) { user(id: $id) { email } }"
    assert read(by_name) == read(by_name)
    assert "users.email" in read(by_email)
    assert "users.name" not in read(by_email)
    assert "users.email" not in read(by_name)


def _writes(seen: list[str]) -> list[str]:
    return [s for s in seen if s in ("SELECT", "INSERT", "UPDATE", "DELETE")]


def test_update_user_reads_the_row_and_writes_it_once(
    admin_client: FlaskClient, session_factory: sessionmaker[Session], engine: Engine
) -> None:
    member = make_user(session_factory)
    query = """mutation($id: ID!) { updateUser(id: $id, input: {name: "Renamed"}) {
        __typename ... on UpdateUserSuccess { user { id name } } } }"""
    with statements(engine) as seen:
        body = gql(admin_client, query, id=str(member.id))
    assert body["data"]["updateUser"]["__typename"] == "UpdateUserSuccess"
    # Authentication, the row locked for the update, the update, the audit event.
    assert _writes(seen) == ["SELECT", "SELECT", "UPDATE", "INSERT"]
    with statements(engine) as seen:
        gql(admin_client, query, id=str(member.id))
    assert _writes(seen) == ["SELECT", "SELECT"]  # a no-op writes nothing


def test_delete_user_locks_the_admins_and_the_row_then_deletes(
    admin_client: FlaskClient, session_factory: sessionmaker[Session], engine: Engine
) -> None:
    member = make_user(session_factory)
    query = """mutation($id: ID!) { deleteUser(id: $id) { __typename } }"""
    with statements(engine) as seen:
        body = gql(admin_client, query, id=str(member.id))
    assert body["data"]["deleteUser"]["__typename"] == "DeleteUserSuccess"
    # Authentication, the active admins, the row, the delete (sessions go by the foreign key),
    # the audit event.
    assert _writes(seen) == ["SELECT", "SELECT", "SELECT", "DELETE", "INSERT"]


def test_authentication_with_a_session_token_is_still_one_select(
    app: Flask, session_factory: sessionmaker[Session], tokens: TokenService, engine: Engine
) -> None:
    member = make_user(session_factory)
    started = start_session(
        UnitOfWork(session_factory), tokens, user=member, user_agent=None, ttl_seconds=60
    )
    client = app.test_client()
    with statements(engine) as seen:
        response = client.post(
            "/graphql",
            json={"query": "{ me { id name } }"},
            headers={"Authorization": f"Bearer {started.access.token}"},
        )
    assert response.get_json() == {"data": {"me": {"id": str(member.id), "name": member.name}}}
    assert _writes(seen) == ["SELECT"]
