"""What production shows of the schema: introspection for ADMIN only, no suggestions, no IDE."""

from dataclasses import replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from db import models
from schema.limits import IntrospectionPolicy
from services.auth import TokenService
from settings import Environment, Settings
from tests.graphql import authorized

INTROSPECT = "{ __schema { types { name } } }"
TYPE_PROBE = '{ __type(name: "User") { fields { name } } }'
TYPO = "{ users { edges { node { nmae emial } } } usres }"


@pytest.fixture
def production(settings: Settings, session_factory: sessionmaker[Session]) -> Flask:
    configured = replace(settings, environment=Environment.PRODUCTION)
    return create_app(configured, session_factory=session_factory)


def post(client: FlaskClient, query: str) -> dict[str, Any]:
    result: dict[str, Any] = client.post("/graphql", json={"query": query}).get_json()
    return result


@pytest.mark.parametrize("query", [INTROSPECT, TYPE_PROBE])
def test_anonymous_and_users_cannot_introspect(
    production: Flask, member: models.User, tokens: TokenService, query: str
) -> None:
    for client in (production.test_client(), authorized(production.test_client(), tokens, member)):
        body = post(client, query)
        assert body["data"] is None
        assert body["errors"] == [
            {
                "message": "Introspection is not allowed for this caller.",
                "locations": [{"line": 1, "column": 3}],
                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
            }
        ]


def test_admins_can_introspect(production: Flask, admin: models.User, tokens: TokenService) -> None:
    body = post(authorized(production.test_client(), tokens, admin), INTROSPECT)
    assert {"name": "User"} in body["data"]["__schema"]["types"]


def test_typename_is_not_introspection(production: Flask) -> None:
    assert post(production.test_client(), "{ __typename }") == {"data": {"__typename": "Query"}}


def test_nobody_means_nobody(
    settings: Settings,
    session_factory: sessionmaker[Session],
    admin: models.User,
    tokens: TokenService,
) -> None:
    app = create_app(
        replace(settings, introspection=IntrospectionPolicy.NOBODY), session_factory=session_factory
    )
    body = post(authorized(app.test_client(), tokens, admin), INTROSPECT)
    assert body["errors"][0]["message"] == "Introspection is not allowed for this caller."


def test_no_suggestions_in_production(
    production: Flask, admin: models.User, tokens: TokenService
) -> None:
    client = authorized(production.test_client(), tokens, admin)
    responses = [
        client.post("/graphql", json={"query": TYPO}).get_data(as_text=True),
        client.post(
            "/graphql",
            json={
                "query": "mutation($i: CreateUserInput!) { createUser(input: $i) { __typename } }",
                "variables": {"i": {"name": "x", "email": "x@example.com", "role": "ADMN"}},
            },
        ).get_data(as_text=True),
        client.post("/graphql", json={"query": "{ users(frist: 2) { totalCount } }"}).get_data(
            as_text=True
        ),
    ]
    for text in responses:
        assert "errors" in text
        assert "Did you mean" not in text
    assert "Cannot query field 'nmae' on type 'User'." in responses[0]


def test_development_keeps_suggestions(
    settings: Settings,
    session_factory: sessionmaker[Session],
    admin: models.User,
    tokens: TokenService,
) -> None:
    app = create_app(replace(settings, field_suggestions=True), session_factory=session_factory)
    text = authorized(app.test_client(), tokens, admin).post("/graphql", json={"query": TYPO})
    assert "Did you mean 'name'?" in text.get_data(as_text=True)


def test_no_graphiql_in_production(production: Flask) -> None:
    response = production.test_client().get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert "graphiql" not in response.get_data(as_text=True).lower()


def test_no_tracing_or_debug_extensions(production: Flask) -> None:
    body = post(production.test_client(), "{ __typename }")
    assert set(body) == {"data"}
