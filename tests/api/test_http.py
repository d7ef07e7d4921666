"""Whatever arrives, the answer is JSON with a code, never a 500 with internals."""

import json
import logging
from dataclasses import replace
from typing import Any, cast

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from services import auth
from services import users as user_service
from services.auth import Access, Principal, TokenService
from settings import Settings
from tests.graphql import gql

LEAKS = ("Traceback", "sqlalchemy", "pymysql", "SELECT", 'File "', "secret")


def assert_clean(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} leaked into {text!r}"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "The request body is not valid JSON."),
        (b"\xff\xfe{}", "The request body is not valid UTF-8."),
        (b'"a string"', "The request body must be a JSON object."),
        (b"42", "The request body must be a JSON object."),
        (b"null", "The request body must be a JSON object."),
        (b"[" * 100_000, "The request body is not valid JSON."),
        (b'[{"query": "{ me { id } }"}]', "Batching is not enabled"),
        (b'{"query": 5}', "The GraphQL operation's `query` must be a string or null, if provided."),
        (b'{"query": "{ me { id } }", "variables": [1]}', "`variables` must be an object"),
        (b"{}", "No GraphQL query found in the request"),
    ],
)
def test_bad_bodies_get_400_with_a_json_error(
    client: FlaskClient, body: bytes, message: str
) -> None:
    response = client.post("/graphql", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.content_type == "application/json"
    [error] = response.get_json()["errors"]
    assert message in error["message"]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert_clean(response.get_data(as_text=True))


def test_an_unknown_field_is_a_validation_error(client: FlaskClient) -> None:
    body = gql(client, "{ users { edges { node { password } } } }", expect_errors=True)
    [error] = body["errors"]
    assert error["message"] == "Cannot query field 'password' on type 'User'."
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "data" not in body or body["data"] is None


def test_a_syntax_error_is_a_parse_failure(client: FlaskClient) -> None:
    body = gql(client, "{ users(first: ) }", expect_errors=True)
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("query($n: Int) { users(first: $n) { totalCount } }", {"n": "ten"}),
        ("query($n: Int) { users(first: $n) { totalCount } }", {"n": 2**40}),
        ("query($id: ID!) { user(id: $id) { id } }", {}),
        ("query($id: ID!) { user(id: $id) { id } }", {"id": {"nested": True}}),
        (
            "mutation($i: CreateUserInput!) { createUser(input: $i) { __typename } }",
            {"i": {"name": "x"}},
        ),
        (
            "mutation($i: CreateUserInput!) { createUser(input: $i) { __typename } }",
            {"i": {"name": "x", "email": "a@b.co", "role": "ROOT"}},
        ),
    ],
)
def test_wrong_variable_types_are_bad_user_input(
    client: FlaskClient, query: str, variables: dict[str, object]
) -> None:
    response = client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200
    body = response.get_json()
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]


def test_queries_work_over_get(client: FlaskClient) -> None:
    response = client.get("/graphql", query_string={"query": "{ me { id } }"})
    assert response.status_code == 200
    assert response.get_json() == {"data": {"me": None}}


def test_mutations_are_refused_over_get(client: FlaskClient) -> None:
    mutation = 'mutation { createUser(input: {name: "x", email: "x@example.com"}) { __typename } }'
    response = client.get("/graphql", query_string={"query": mutation})
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.get_json()["errors"][0] == {
        "message": "Mutations must be sent with POST.",
        "extensions": {"code": "METHOD_NOT_ALLOWED"},
    }


def test_other_paths_and_methods_answer_json(client: FlaskClient) -> None:
    missing = client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.get_json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    wrong_method = client.put("/graphql", json={})
    assert wrong_method.status_code == 405
    assert "POST" in wrong_method.headers["Allow"]
    assert wrong_method.get_json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"


def test_graphiql_only_when_enabled(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    def graphiql(enabled: bool) -> tuple[int, str]:
        configured = replace(settings, graphiql=enabled)
        client = create_app(configured, session_factory=session_factory).test_client()
        response = client.get("/graphql", headers={"Accept": "text/html"})
        return response.status_code, response.content_type

    assert graphiql(True) == (200, "text/html; charset=utf-8")
    assert graphiql(False) == (404, "application/json")


def test_an_unexpected_exception_is_masked_and_logged(
    user_client: FlaskClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret: SELECT password FROM users")

    monkeypatch.setattr(user_service, "get_user", explode)
    with caplog.at_level(logging.ERROR, logger="schema.errors"):
        response = user_client.post("/graphql", json={"query": "{ user(id: 1) { id } }"})
    assert response.status_code == 200
    assert response.get_json() == {
        "data": {"user": None},
        "errors": [
            {
                "message": "Internal server error",
                "locations": [{"line": 1, "column": 3}],
                "path": ["user"],
                "extensions": {"code": "INTERNAL"},
            }
        ],
    }
    [record] = [r for r in caplog.records if r.name == "schema.errors"]
    assert record.exc_info is not None
    assert "secret: SELECT password" in caplog.text


def test_a_database_that_went_away_is_service_unavailable_during_execution(
    settings: Settings,
    unreachable_database: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Authentication passes without the database, so the outage hits a resolver.
    monkeypatch.setattr(
        auth, "authenticate", lambda *_, **__: Principal(user_id=None, role=Access.ADMIN)
    )
    client = create_app(settings, session_factory=unreachable_database).test_client()
    with caplog.at_level(logging.WARNING):
        response = client.post("/graphql", json={"query": "{ users { totalCount } }"})
    assert response.status_code == 200
    body = response.get_json()
    assert body["data"] is None
    assert [(e["message"], e["extensions"]["code"]) for e in body["errors"]] == [
        ("The database is unavailable; try again shortly.", "SERVICE_UNAVAILABLE")
    ]
    assert_clean(json.dumps(body))
    assert "database unavailable: (2003" in caplog.text


def test_a_database_that_went_away_is_503_during_authentication(
    settings: Settings,
    unreachable_database: sessionmaker[Session],
    tokens: TokenService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = create_app(settings, session_factory=unreachable_database).test_client()
    token = tokens.issue(user_id=1, role=Access.USER).token
    with caplog.at_level(logging.WARNING):
        response = client.post(
            "/graphql",
            json={"query": "{ me { id } }"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json() == {
        "errors": [
            {
                "message": "The database is unavailable; try again shortly.",
                "extensions": {"code": "SERVICE_UNAVAILABLE"},
            }
        ]
    }
    assert "database unavailable: (2003" in caplog.text


def test_a_failure_outside_graphql_is_a_json_500(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    view_class = cast(Any, app.view_functions["graphql"]).view_class

    def broken_context(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret context failure")

    monkeypatch.setattr(view_class, "get_context", broken_context)
    with caplog.at_level(logging.ERROR):
        response = app.test_client().post("/graphql", json={"query": "{ me { id } }"})
    assert response.status_code == 500
    assert response.get_json() == {
        "errors": [{"message": "Internal server error", "extensions": {"code": "INTERNAL"}}]
    }
    assert "secret context failure" in caplog.text
