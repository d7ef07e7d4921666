"""userql as a federation subgraph (FEDERATION=true), in process: `_service`, `_entities`
batched into one statement, the field rules and the cost limit on entities."""

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from graphql import (
    DocumentNode,
    ObjectTypeDefinitionNode,
    TypeDefinitionNode,
    parse,
    print_ast,
)
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from cli.schema_tools import subgraph_sdl
from db import models
from schema.limits import QueryLimits
from services.auth import TokenService
from services.unit_of_work import UnitOfWork
from services.users import set_active
from settings import Settings
from tests.api.test_sql_budget import statements
from tests.factories import make_users
from tests.graphql import authorized, gql

ENTITIES = """query($representations: [_Any!]!) {
  _entities(representations: $representations) {
    __typename ... on User { id name email role }
  }
}"""


def representations(*ids: object) -> list[dict[str, Any]]:
    return [{"__typename": "User", "id": str(user_id)} for user_id in ids]


@pytest.fixture
def subgraph(settings: Settings, session_factory: sessionmaker[Session]) -> Flask:
    return create_app(replace(settings, federation=True), session_factory=session_factory)


@pytest.fixture
def subgraph_admin(subgraph: Flask, admin: models.User, tokens: TokenService) -> FlaskClient:
    return authorized(subgraph.test_client(), tokens, admin)


@pytest.fixture
def subgraph_member(subgraph: Flask, member: models.User, tokens: TokenService) -> FlaskClient:
    return authorized(subgraph.test_client(), tokens, member)


def test_the_committed_federated_sdl_is_current(project_root: Path) -> None:
    committed = (project_root / "schema.federation.graphql").read_text(encoding="utf-8")
    assert committed == subgraph_sdl(), "schema.federation.graphql is stale: run `make schema`"


def test_the_service_answers_the_committed_sdl_to_anyone(subgraph: Flask) -> None:
    body = gql(subgraph.test_client(), "{ _service { sdl } }")
    assert body["data"]["_service"]["sdl"] == subgraph_sdl()


def test_without_federation_there_is_no_service_or_entities(admin_client: FlaskClient) -> None:
    body = gql(admin_client, "{ _service { sdl } }", expect_errors=True)
    assert body["errors"][0]["message"] == "Cannot query field '_service' on type 'Query'."


def test_the_sdl_keys_users_and_carries_the_gateway_s_directives() -> None:
    sdl = subgraph_sdl()
    document = parse(sdl)
    assert sdl.startswith(
        'extend schema @link(url: "https://specs.apollo.dev/federation/v2.9", '
        'import: ["@key", "@authenticated", "@requiresScopes", "@cost", "@listSize"])'
    )
    assert 'type User @key(fields: "id") {' in sdl
    assert directives(document, "User", "email") == "@authenticated @cost(weight: 1)"
    assert directives(document, "User", "deactivatedAt") == (
        '@requiresScopes(scopes: [["ADMIN"]]) @cost(weight: 1)'
    )
    assert directives(document, "User", "name") == "@cost(weight: 1)"
    assert directives(document, "User", "sessions") == "@authenticated @listSize(assumedSize: 1)"
    assert directives(document, "Query", "user") == "@authenticated"
    assert directives(document, "Query", "me") == ""
    assert directives(document, "Query", "users") == (
        '@authenticated @listSize(slicingArguments: ["first"], sizedFields: ["edges"])'
    )
    assert directives(document, "Mutation", "createUser") == '@requiresScopes(scopes: [["ADMIN"]])'
    assert directives(document, "Mutation", "updateUser") == "@authenticated"
    names = {d.name.value for d in document.definitions if isinstance(d, TypeDefinitionNode)}
    assert not names & {"_Any", "_Entity", "_Service"}
    assert "_entities" not in sdl
    assert "_service" not in sdl


def directives(document: DocumentNode, type_name: str, field_name: str) -> str:
    """The gateway's directives on the field, as printed (userql's own @requiresRole left out)."""
    [definition] = [
        d
        for d in document.definitions
        if isinstance(d, ObjectTypeDefinitionNode) and d.name.value == type_name
    ]
    [field] = [f for f in definition.fields or () if f.name.value == field_name]
    return " ".join(print_ast(d) for d in field.directives or () if d.name.value != "requiresRole")


@pytest.mark.parametrize("count", [1, 10, 100])
def test_entities_are_one_statement_however_many(
    subgraph_admin: FlaskClient,
    session_factory: sessionmaker[Session],
    engine: Engine,
    count: int,
) -> None:
    users = make_users(session_factory, count)
    with statements(engine) as seen:
        body = gql(
            subgraph_admin, ENTITIES, representations=representations(*(u.id for u in users))
        )
    # The caller's role (authentication), then every entity at once.
    assert [s for s in seen if s == "SELECT"] == ["SELECT"] * 2
    assert [e["id"] for e in body["data"]["_entities"]] == [str(u.id) for u in users]


def test_entities_keep_the_order_repeat_and_answer_null_for_unknown_ids(
    subgraph_admin: FlaskClient, session_factory: sessionmaker[Session]
) -> None:
    first, second = make_users(session_factory, 2)
    asked = representations(second.id, 999_999, first.id, "not-an-id", second.id)
    entities = gql(subgraph_admin, ENTITIES, representations=asked)["data"]["_entities"]
    assert [None if e is None else e["id"] for e in entities] == [
        str(second.id),
        None,
        str(first.id),
        None,
        str(second.id),
    ]
    assert entities[0] == {
        "__typename": "User",
        "id": str(second.id),
        "name": second.name,
        "email": second.email,
        "role": "USER",
    }


def test_entities_of_another_type_are_refused(subgraph_admin: FlaskClient) -> None:
    asked = [{"__typename": "Project", "id": "1"}]
    body = gql(subgraph_admin, ENTITIES, expect_errors=True, representations=asked)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_entities_need_a_signed_in_caller(subgraph: Flask, member: models.User) -> None:
    body = gql(
        subgraph.test_client(),
        ENTITIES,
        expect_errors=True,
        representations=representations(member.id),
    )
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


USERS_EMAILS = "{ users(first: 100) { edges { node { id email } } } }"
ENTITY_EMAILS = """query($representations: [_Any!]!) {
  _entities(representations: $representations) { ... on User { id email } }
}"""


@pytest.mark.parametrize("role", ["member", "admin"])
def test_entities_answer_email_byte_for_byte_as_users_does(
    subgraph: Flask,
    session_factory: sessionmaker[Session],
    admin: models.User,
    member: models.User,
    tokens: TokenService,
    role: str,
) -> None:
    make_users(session_factory, 3)
    client = authorized(subgraph.test_client(), tokens, member if role == "member" else admin)
    listed = client.post("/graphql", json={"query": USERS_EMAILS})
    nodes = [edge["node"] for edge in listed.get_json()["data"]["users"]["edges"]]
    ids = [node["id"] for node in nodes]
    asked = client.post(
        "/graphql",
        json={"query": ENTITY_EMAILS, "variables": {"representations": representations(*ids)}},
    )
    listed_body, asked_body = listed.get_json(), asked.get_json()
    # Each user's email as the same bytes: its own to the member, every one to the admin;
    # refused with the same errors, only their paths and locations differ.
    emails = [e["email"] for e in asked_body["data"]["_entities"]]
    assert json.dumps(emails) == json.dumps([n["email"] for n in nodes])
    assert _refusals(asked_body) == _refusals(listed_body)
    if role == "member":
        assert [email for email in emails if email is not None] == [member.email]
        assert len(_refusals(asked_body)) == 4
    else:
        assert None not in emails


def _refusals(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["message"], e["extensions"]["code"]) for e in body.get("errors", [])]


def test_entities_hide_deactivated_users_from_all_but_admins(
    subgraph_admin: FlaskClient,
    subgraph_member: FlaskClient,
    session_factory: sessionmaker[Session],
    admin: models.User,
) -> None:
    [gone] = make_users(session_factory, 1)
    set_active(UnitOfWork(session_factory), actor_id=admin.id, user_id=gone.id, active=False)
    asked = representations(gone.id)
    assert gql(subgraph_member, ENTITIES, representations=asked)["data"]["_entities"] == [None]
    [seen] = gql(subgraph_admin, ENTITIES, representations=asked)["data"]["_entities"]
    assert seen["id"] == str(gone.id)


def test_entities_count_once_per_representation_towards_the_cost_limit(
    settings: Settings,
    session_factory: sessionmaker[Session],
    admin: models.User,
    tokens: TokenService,
    engine: Engine,
) -> None:
    configured = replace(settings, federation=True, query_limits=QueryLimits(max_cost=300))
    app = create_app(configured, session_factory=session_factory)
    client = authorized(app.test_client(), tokens, admin)
    # 1 for _entities, then 3 (id, name, email) for each of the representations.
    within = representations(*range(1, 100))
    assert gql(client, ENTITY_EMAILS.replace("email", "name email"), representations=within)
    with statements(engine) as seen:
        body = gql(
            client,
            ENTITY_EMAILS.replace("email", "name email"),
            expect_errors=True,
            representations=representations(*range(1, 101)),
        )
    assert body["errors"] == [
        {
            "message": "The query costs 301; the limit is 300.",
            "extensions": {"code": "QUERY_TOO_COMPLEX"},
        }
    ]
    assert [s for s in seen if s == "SELECT"] == ["SELECT"]  # authentication only


def test_no_representations_read_nothing(subgraph_admin: FlaskClient, engine: Engine) -> None:
    with statements(engine) as seen:
        body = gql(subgraph_admin, ENTITIES, representations=representations("x", "0"))
    assert body["data"]["_entities"] == [None, None]
    assert [s for s in seen if s == "SELECT"] == ["SELECT"]  # authentication only
    assert gql(subgraph_admin, ENTITIES, representations=[])["data"]["_entities"] == []


def test_representations_written_in_the_document_count_as_many(
    settings: Settings,
    session_factory: sessionmaker[Session],
    admin: models.User,
    tokens: TokenService,
) -> None:
    configured = replace(settings, federation=True, query_limits=QueryLimits(max_cost=6))
    client = authorized(
        create_app(configured, session_factory=session_factory).test_client(), tokens, admin
    )
    literal = "{{ _entities(representations: [{}]) {{ ... on User {{ id name }} }} }}"
    two = literal.format(", ".join(['{__typename: "User", id: "1"}'] * 2))
    three = literal.format(", ".join(['{__typename: "User", id: "1"}'] * 3))
    assert len(gql(client, two)["data"]["_entities"]) == 2  # 1 + 2 * 2
    body = gql(client, three, expect_errors=True)
    assert body["errors"][0]["message"] == "The query costs 7; the limit is 6."
