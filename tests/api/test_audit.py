"""The audit log over HTTP: one event per committed change, none for a change that rolled
back, attributed to the caller and the request, and readable by ADMINs only."""

import hashlib
import json
from dataclasses import replace
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from db import models
from services.auth import TokenService
from settings import Settings
from tests.api.test_sql_budget import statements
from tests.factories import make_user
from tests.graphql import CREATE_USER, authorized, gql
from tests.http_stub import Behaviour, stub_server

EVENTS = """
query Events($first: Int, $after: String, $target: ID, $actor: ID, $action: String) {
  auditEvents(first: $first, after: $after, targetUserId: $target, actorUserId: $actor,
              action: $action) {
    edges { cursor node {
      id action actorUserId actorRole requestId operationName targetUserId
      changes { field before after }
    } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
UPDATE = """mutation Rename($id: ID!, $input: UpdateUserInput!) {
  updateUser(id: $id, input: $input) { __typename } }"""


def events(client: FlaskClient, **variables: Any) -> list[dict[str, Any]]:
    connection = gql(client, EVENTS, **variables)["data"]["auditEvents"]
    return [edge["node"] for edge in connection["edges"]]


def changes(event: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {change["field"]: (change["before"], change["after"]) for change in event["changes"]}


def count_events(session_factory: sessionmaker[Session]) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(models.AuditEvent)) or 0


def test_a_created_user_is_one_event_by_the_caller_in_this_request(
    admin_client: FlaskClient, admin: models.User
) -> None:
    response = admin_client.post(
        "/graphql",
        json={"query": CREATE_USER, "variables": {"input": {"name": "Ann", "email": "A@x.test"}}},
    )
    created = response.get_json()["data"]["createUser"]["user"]
    # The fixtures' users were created too, by nobody: the command line's way.
    (event,) = events(admin_client, actor=str(admin.id))
    assert event | {"id": None, "changes": None} == {
        "id": None,
        "action": "user.created",
        "actorUserId": str(admin.id),
        "actorRole": "ADMIN",
        "requestId": response.headers["X-Request-ID"],
        "operationName": "Create",
        "targetUserId": created["id"],
        "changes": None,
    }
    assert changes(event) == {
        "name": (None, "Ann"),
        "email": (None, "a@x.test"),
        "role": (None, "USER"),
    }


def test_updates_record_what_changed_and_a_no_op_records_nothing(
    admin_client: FlaskClient, member: models.User
) -> None:
    gql(admin_client, UPDATE, id=str(member.id), input={"name": "Renamed"})
    gql(admin_client, UPDATE, id=str(member.id), input={"name": "Renamed"})  # no change
    gql(admin_client, UPDATE, id=str(member.id), input={"role": "ADMIN", "name": "Renamed"})
    newest, oldest, _created = events(admin_client, target=str(member.id))
    assert (oldest["action"], changes(oldest)) == (
        "user.updated",
        {"name": (member.name, "Renamed")},
    )
    assert (newest["action"], changes(newest)) == ("user.role_changed", {"role": ("USER", "ADMIN")})


def test_deactivation_reactivation_and_deletion_each_leave_an_event_that_outlives_the_user(
    admin_client: FlaskClient, member: models.User
) -> None:
    for mutation in ("deactivateUser", "reactivateUser", "deleteUser"):
        gql(admin_client, f'mutation {{ {mutation}(id: "{member.id}") {{ __typename }} }}')
    deleted, reactivated, deactivated, _created = events(admin_client, target=str(member.id))
    assert [deleted["action"], reactivated["action"], deactivated["action"]] == [
        "user.deleted",
        "user.reactivated",
        "user.deactivated",
    ]
    assert changes(deleted) == {
        "name": (member.name, None),
        "email": (member.email, None),
        "role": ("USER", None),
    }
    assert changes(deactivated)["deactivated_at"][0] is None
    assert changes(reactivated)["deactivated_at"][1] is None


def test_a_change_that_rolls_back_leaves_no_event(
    settings: Settings,
    admin: models.User,
    member: models.User,
    tokens: TokenService,
    session_factory: sessionmaker[Session],
) -> None:
    before = count_events(session_factory)
    with stub_server(Behaviour(status=500)) as url:
        app = create_app(
            replace(settings, provisioning_webhook_url=url), session_factory=session_factory
        )
        client = authorized(app.test_client(), tokens, admin)
        created = gql(client, CREATE_USER, input={"name": "No", "email": "no@x.test"})
        deleted = gql(client, f'mutation {{ deleteUser(id: "{member.id}") {{ __typename }} }}')
    assert created["data"]["createUser"]["__typename"] == "ProvisioningFailed"
    assert deleted["data"]["deleteUser"]["__typename"] == "ProvisioningFailed"
    taken = gql(client, CREATE_USER, input={"name": "Dup", "email": member.email})
    assert taken["data"]["createUser"]["__typename"] == "EmailAlreadyRegistered"
    assert count_events(session_factory) == before


def test_sign_out_everywhere_is_recorded_for_the_caller(
    user_client: FlaskClient, admin_client: FlaskClient, member: models.User
) -> None:
    gql(user_client, "mutation Everywhere { signOutEverywhere { count } }")
    (event,) = events(admin_client, action="sessions.revoked")
    assert (event["actorUserId"], event["targetUserId"], event["operationName"]) == (
        str(member.id),
        str(member.id),
        "Everywhere",
    )
    assert changes(event)["open_sessions"] == ("0", "0")


def test_pages_are_newest_first_filtered_and_one_statement_each(
    admin_client: FlaskClient, member: models.User, engine: Engine
) -> None:
    for number in range(5):
        gql(admin_client, UPDATE, id=str(member.id), input={"name": f"Name {number}"})
    seen: list[str] = []
    after = None
    for _ in range(3):
        with statements(engine) as executed:
            page = gql(admin_client, EVENTS, first=2, after=after, action="user.updated")
        assert [s for s in executed if s == "SELECT"] == ["SELECT", "SELECT"]  # caller, page
        connection = page["data"]["auditEvents"]
        seen += [changes(edge["node"])["name"][1] for edge in connection["edges"]]
        after = connection["pageInfo"]["endCursor"]
    assert seen == [f"Name {number}" for number in reversed(range(5))]
    assert not connection["pageInfo"]["hasNextPage"]
    assert events(admin_client, actor=str(member.id)) == []
    bad = gql(admin_client, EVENTS, expect_errors=True, after="bm90LWEtY3Vyc29y")
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_emails_can_be_kept_as_hashes(
    settings: Settings,
    admin: models.User,
    tokens: TokenService,
    session_factory: sessionmaker[Session],
) -> None:
    app = create_app(replace(settings, audit_redact_email=True), session_factory=session_factory)
    client = authorized(app.test_client(), tokens, admin)
    gql(client, CREATE_USER, input={"name": "Hid", "email": "hid@x.test"})
    with session_factory() as session:
        stored = session.scalar(
            select(models.AuditEvent.changes).where(models.AuditEvent.actor_id == admin.id)
        )
    assert stored is not None
    email = json.loads(stored)["email"]["after"]
    assert email == "sha256:" + hashlib.sha256(b"hid@x.test").hexdigest()
    assert "hid@x.test" not in stored


def test_no_secret_reaches_the_log(
    admin_client: FlaskClient,
    user_client: FlaskClient,
    session_factory: sessionmaker[Session],
    member: models.User,
) -> None:
    make_user(session_factory)
    gql(user_client, "mutation { signOutEverywhere { count } }")
    gql(admin_client, UPDATE, id=str(member.id), input={"role": "ADMIN"})
    gql(admin_client, UPDATE, id=str(member.id), input={"role": "USER"})
    with session_factory() as session:
        rows = session.scalars(select(models.AuditEvent.changes)).all()
    assert rows
    for row in rows:
        assert "token" not in json.loads(row) or set(json.loads(row)) <= {
            "tokens_valid_after",
            "open_sessions",
        }
        assert "Bearer" not in row
