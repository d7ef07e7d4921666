"""The shortcuts (document caches, the one-pass completion of plain subtrees) must answer
byte for byte what the general path does, cold or warm. The corpus is every GraphQL document
written in the test suite, sent as anonymous, USER and ADMIN."""

import ast
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse
from sqlalchemy import Connection
from sqlalchemy.orm import Session, sessionmaker

from app import Settings, create_app
from db import models
from schema import limits
from schema.execution import LeafExecutor
from schema.permissions import Rule
from schema.types.pagination import encode_cursor
from services.auth import Role, TokenService
from services.documents import Lru
from services.rate_limit import Rate
from tests.factories import make_user, make_users

TESTS = Path(__file__).resolve().parent.parent


def suite_documents() -> list[str]:
    found: dict[str, None] = {}
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.strip()
                if text.startswith(("{", "query", "mutation", "fragment")):
                    try:
                        parse(text)
                    except GraphQLError:
                        continue  # a deliberately broken document is still a document
                    found[text] = None
    return list(found)


def is_mutation(document: str) -> bool:
    return any(
        isinstance(d, OperationDefinitionNode) and d.operation is OperationType.MUTATION
        for d in parse(document).definitions
    )


CORPUS = suite_documents()


def test_the_corpus_is_the_suite() -> None:
    assert len(CORPUS) > 40
    assert any("users(first: 2)" in document for document in CORPUS)
    assert any("createUser" in document for document in CORPUS)
    assert any("__typename" in document and "fragment" in document for document in CORPUS)


@pytest.fixture
def completions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per object (or set of root fields) the executor completes."""
    calls: list[int] = []
    original = LeafExecutor.execute_fields

    def counting(self: LeafExecutor, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LeafExecutor, "execute_fields", counting)
    return calls


def test_the_general_path_really_is_taken(
    user_client: FlaskClient, session_factory: sessionmaker[Session], completions: list[int]
) -> None:
    # A hidden email fails the one-pass completion: graphql-core redoes that row and reports.
    make_users(session_factory, 2)
    body = user_client.post("/graphql", json={"query": "{ users { edges { node { email } } } }"})
    errors = body.get_json()["errors"]
    assert [e["extensions"]["code"] for e in errors] == ["FORBIDDEN", "FORBIDDEN"]
    assert len(completions) > 3  # the connection, then edge by edge once the fast pass gave up


def test_cursors_and_total_count_complete_in_the_one_pass(
    admin_client: FlaskClient, session_factory: sessionmaker[Session], completions: list[int]
) -> None:
    make_users(session_factory, 3)
    query = "{ users(first: 3) { totalCount edges { cursor node { id } } } }"
    page = admin_client.post("/graphql", json={"query": query}).get_json()["data"]["users"]
    assert page["totalCount"] == 4
    assert [edge["cursor"] for edge in page["edges"]] == [
        encode_cursor(int(edge["node"]["id"])) for edge in page["edges"]
    ]
    assert len(completions) == 2  # the root fields, then the whole connection at once


def test_a_rule_the_role_settles_costs_nothing_per_row(
    admin_client: FlaskClient,
    user_client: FlaskClient,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_users(session_factory, 5)
    checks: list[int] = []
    original = Rule.allows

    def counting(self: Rule, role: Role) -> bool:
        checks.append(1)
        return original(self, role)

    monkeypatch.setattr(Rule, "allows", counting)
    query = {"query": "{ users(first: 7) { edges { node { id email } } } }"}
    admin_page = admin_client.post("/graphql", json=query).get_json()
    assert len(admin_page["data"]["users"]["edges"]) == 7
    admin_checks, checks[:] = len(checks), []
    user_page = user_client.post("/graphql", json=query).get_json()
    assert len(user_page["data"]["users"]["edges"]) == 7
    # Query.users and the plan's one look at User.email, against a check on each row.
    assert admin_checks == 2
    assert len(checks) >= 7


@contextmanager
def savepoint(connection: Connection) -> Iterator[None]:
    nested = connection.begin_nested()
    try:
        yield
    finally:
        nested.rollback()


@pytest.fixture
def apps(settings: Settings, session_factory: sessionmaker[Session]) -> tuple[Flask, Flask]:
    # Limits far above what the corpus sends, so rate limiting never differs between runs.
    roomy = replace(
        settings, rate_limits={"sign_in": Rate(10**6, 60), "create_user": Rate(10**6, 60)}
    )
    return (
        create_app(roomy, session_factory=session_factory),
        create_app(roomy, session_factory=session_factory),
    )


def test_cached_and_uncached_answers_are_identical(
    apps: tuple[Flask, Flask],
    connection: Connection,
    session_factory: sessionmaker[Session],
    tokens: TokenService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = make_user(session_factory, email="admin@example.com", role=models.Role.ADMIN)
    member = make_user(session_factory, email="member@example.com")
    make_users(session_factory, 3)
    callers = {
        "anonymous": None,
        "user": tokens.issue(user_id=member.id, role=Role.USER).token,
        "admin": tokens.issue(user_id=admin.id, role=Role.ADMIN).token,
    }
    cached_app, uncached_app = apps

    def answer(app: Flask, document: str, token: str | None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with savepoint(connection):
            response = app.test_client().post("/graphql", json={"query": document}, headers=headers)
            return response.status_code, response.get_data()

    compared = 0
    for document in CORPUS:
        for caller, token in callers.items():
            if caller == "admin" and is_mutation(document):
                continue  # new rows get new ids and timestamps on every run
            cold = answer(cached_app, document, token)
            warm = answer(cached_app, document, token)
            with monkeypatch.context() as general:
                for name in ("_cached_static_limit_error", "_cached_validation"):
                    general.setattr(limits, name, getattr(limits, name).__wrapped__)
                general.setattr(limits, "_PARSED", Lru(0))
                general.setattr(LeafExecutor, "enabled", False)
                uncached = answer(uncached_app, document, token)
            assert cold == warm == uncached, (caller, document)
            compared += 1
    assert compared > 100
