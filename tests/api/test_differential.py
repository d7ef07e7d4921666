"""The shortcuts (document caches, the fast path's one-pass completion of plain subtrees and
its other parts) must answer byte for byte what stock Strawberry execution without any cache
does, cold or warm. The corpus is every GraphQL document written in the test
suite, and requests with variables, operation names and GET, sent as anonymous, USER and
ADMIN."""

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
from strawberry.schema import schema as strawberry_schema

from app import create_app
from db import models
from schema import fast, limits, root
from schema.fast import FastExecutionContext
from schema.permissions import Rule
from schema.types.pagination import encode_cursor
from services.auth import Access, TokenService
from services.documents import Lru
from services.rate_limit import Rate
from settings import Settings
from tests.factories import make_user, make_users
from tests.fast_execution import serve

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


@pytest.fixture(autouse=True)
def _fast_execution(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the fast path: they have it even when the suite runs without."""
    serve(monkeypatch, root.executable_schema(fast_execution=True))


def test_the_corpus_is_the_suite() -> None:
    assert len(CORPUS) > 40
    assert any("users(first: 2)" in document for document in CORPUS)
    assert any("createUser" in document for document in CORPUS)
    assert any("__typename" in document and "fragment" in document for document in CORPUS)


@pytest.fixture
def completions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per object (or set of root fields) the executor completes."""
    calls: list[int] = []
    original = FastExecutionContext.execute_fields

    def counting(self: FastExecutionContext, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FastExecutionContext, "execute_fields", counting)
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

    def counting(self: Rule, role: Access) -> bool:
        checks.append(1)
        return original(self, role)

    monkeypatch.setattr(Rule, "allows", counting)
    fast.forget_kept_plans()  # plans kept by earlier tests
    query = {"query": "{ users(first: 7) { edges { node { id email } } } }"}
    admin_page = admin_client.post("/graphql", json=query).get_json()
    assert len(admin_page["data"]["users"]["edges"]) == 7
    admin_checks, checks[:] = len(checks), []
    admin_client.post("/graphql", json=query)
    admin_checks_again, checks[:] = len(checks), []
    user_page = user_client.post("/graphql", json=query).get_json()
    assert len(user_page["data"]["users"]["edges"]) == 7
    # Query.users and the plan's one look at User.email, against a check on each row; once
    # the plan is kept, Query.users alone.
    assert admin_checks == 2
    assert admin_checks_again == 1
    assert len(checks) >= 7


@contextmanager
def savepoint(connection: Connection) -> Iterator[None]:
    nested = connection.begin_nested()
    try:
        yield
    finally:
        nested.rollback()


@pytest.fixture
def apps(
    settings: Settings, session_factory: sessionmaker[Session]
) -> Iterator[tuple[Flask, Flask]]:
    """An app with the fast path and one with stock Strawberry execution."""
    # Limits far above what the corpus sends, so rate limiting never differs between runs.
    roomy = replace(
        settings, rate_limits={"sign_in": Rate(10**6, 60), "create_user": Rate(10**6, 60)}
    )
    fast_app = create_app(roomy, session_factory=session_factory)
    with pytest.MonkeyPatch.context() as stock:
        serve(stock, root.executable_schema(fast_execution=False))
        yield fast_app, create_app(roomy, session_factory=session_factory)


# What the corpus alone does not send: variables (a cost that depends on them, a bad one,
# directives that depend on them), operation names (one that exists, one that does not)
# and GET.
TARGETED: list[tuple[str, dict[str, Any]]] = [
    (
        "POST",
        {"query": "query($n: Int) { users(first: $n) { totalCount } }", "variables": {"n": 2}},
    ),
    (
        "POST",
        {"query": "query($n: Int) { users(first: $n) { totalCount } }", "variables": {"n": 99}},
    ),
    (
        "POST",
        {
            "query": "query($n: Int) { a: users(first: $n) { edges { node { id } } } "
            "b: users(first: $n) { edges { node { id } } } }",
            "variables": {"n": 100},
        },
    ),
    ("POST", {"query": "query($id: ID!) { user(id: $id) { id } }", "variables": {"id": []}}),
    ("POST", {"query": "query A { me { id } } query B { users { totalCount } }"}),
    (
        "POST",
        {"query": "query A { me { id } } query B { users { totalCount } }", "operationName": "B"},
    ),
    (
        "POST",
        {"query": "query A { me { id } } query B { users { totalCount } }", "operationName": "C"},
    ),
    *(
        ("POST", {"query": query, "variables": {"x": x}})
        for query in (
            "query($x: Boolean!) { me { id name @include(if: $x) email @skip(if: $x) } }",
            "query($x: Boolean!) { users { edges { node { id name @include(if: $x) } } } }",
        )
        for x in (True, False)
    ),
    ("GET", {"query": "{ users { totalCount } }"}),
    ("GET", {"query": 'mutation { signInWithGoogle(idToken: "x") { __typename } }'}),
    ("POST", {"query": "{ __schema { queryType { name } } }"}),
]


def _cache_hits() -> int:
    return limits._cached_validation.cache_info().hits


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
        "user": tokens.issue(user_id=member.id, role=Access.USER).token,
        "admin": tokens.issue(user_id=admin.id, role=Access.ADMIN).token,
    }
    cached_app, stock_app = apps

    def answer(app: Flask, method: str, body: dict[str, Any], token: str | None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = app.test_client()
        with savepoint(connection):
            if method == "GET":
                headers["GraphQL-Require-Preflight"] = "1"
                response = client.get("/graphql", query_string=body, headers=headers)
            else:
                response = client.post("/graphql", json=body, headers=headers)
            return response.status_code, response.get_data()

    requests = [("POST", {"query": document}) for document in CORPUS] + TARGETED
    compared = 0
    for method, body in requests:
        for caller, token in callers.items():
            if caller == "admin" and is_mutation(body["query"]):
                continue  # new rows get new ids and timestamps on every run
            cold = answer(cached_app, method, body, token)
            hits = _cache_hits()
            warm = answer(cached_app, method, body, token)
            compared += _cache_hits() > hits
            with monkeypatch.context() as general:
                for name in ("_cached_static_limit_error", "_cached_validation"):
                    general.setattr(limits, name, getattr(limits, name).__wrapped__)
                general.setattr(limits, "_PARSED", Lru(0))
                uncached = answer(stock_app, method, body, token)
            assert cold == warm == uncached, (caller, method, body)
    # Most documents the second time round are neither parsed nor validated again; the rest
    # (syntax errors, refusals) are answered the same way both times.
    assert compared > 100


def test_an_execution_that_raises_is_answered_alike(
    admin_client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    query = {"query": "{ users { totalCount } }"}
    admin_client.post("/graphql", json=query)

    def failing(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(strawberry_schema, "execute", failing)
    hits = _cache_hits()
    warm = admin_client.post("/graphql", json=query)
    assert _cache_hits() > hits
    monkeypatch.setattr(limits, "_PARSED", Lru(0))
    general = admin_client.post("/graphql", json=query)
    assert (warm.status_code, warm.get_data()) == (general.status_code, general.get_data())
    assert warm.get_json()["errors"][0]["extensions"]["code"] == "INTERNAL"
