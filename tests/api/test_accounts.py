"""updateUser, deactivateUser, reactivateUser and deleteUser over HTTP: who may change what,
and what a change does to the tokens already out there."""

from dataclasses import replace
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from db import models
from services.auth import Access, TokenService
from settings import Settings
from tests.factories import make_user
from tests.graphql import authorized, gql
from tests.http_stub import Behaviour, stub_server

UPDATE = """
mutation Update($id: ID!, $input: UpdateUserInput!) {
  updateUser(id: $id, input: $input) {
    __typename
    ... on UpdateUserSuccess { user { id name email role updatedAt } }
    ... on ValidationError { fields { path message code } }
    ... on EmailAlreadyRegistered { email message }
    ... on UserNotFound { id message }
    ... on LastActiveAdmin { message }
  }
}
"""
DEACTIVATE = """
mutation Deactivate($id: ID!) {
  deactivateUser(id: $id) {
    __typename
    ... on DeactivateUserSuccess { user { id active deactivatedAt } }
    ... on UserNotFound { id message }
    ... on LastActiveAdmin { message }
    ... on CannotTargetSelf { message }
  }
}
"""
REACTIVATE = """
mutation Reactivate($id: ID!) {
  reactivateUser(id: $id) {
    __typename
    ... on ReactivateUserSuccess { user { id active deactivatedAt } }
    ... on UserNotFound { id message }
    ... on CannotTargetSelf { message }
  }
}
"""
DELETE = """
mutation Delete($id: ID!) {
  deleteUser(id: $id) {
    __typename
    ... on DeleteUserSuccess { id }
    ... on UserNotFound { id message }
    ... on LastActiveAdmin { message }
    ... on CannotTargetSelf { message }
    ... on ProvisioningFailed { message }
  }
}
"""


def update(client: FlaskClient, user_id: int | str, **changes: Any) -> dict[str, Any]:
    body = gql(client, UPDATE, id=str(user_id), input=changes)
    result: dict[str, Any] = body["data"]["updateUser"]
    return result


def refused(client: FlaskClient, query: str, **variables: Any) -> str:
    """The code of the one error an operation got."""
    body = gql(client, query, expect_errors=True, **variables)
    (error,) = body["errors"]
    code: str = error["extensions"]["code"]
    return code


def bearer(tokens: TokenService, user: models.User) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {tokens.issue(user_id=user.id, role=Access.of(user.role)).token}"
    }


def ask_me(client: FlaskClient, headers: dict[str, str]) -> dict[str, Any]:
    """What `me` answers with these headers: a refused token is a 401 with a coded error."""
    response = client.post("/graphql", json={"query": "{ me { id } }"}, headers=headers)
    body: dict[str, Any] = response.get_json()
    assert response.status_code == (401 if "errors" in body else 200), body
    return body


# updateUser: self, other, admin


def test_a_user_changes_their_own_name_and_updated_at_moves(
    user_client: FlaskClient, member: models.User
) -> None:
    result = update(user_client, member.id, name="  Renamed  ")
    assert result["__typename"] == "UpdateUserSuccess"
    assert result["user"]["name"] == "Renamed"
    assert result["user"]["email"] == member.email  # their own
    assert result["user"]["updatedAt"] > member.updated_at.isoformat()


def test_a_user_cannot_change_their_own_email_or_role(
    user_client: FlaskClient, member: models.User
) -> None:
    for changes in ({"email": "me@else.example"}, {"role": "ADMIN"}, {"name": "X", "role": "USER"}):
        assert refused(user_client, UPDATE, id=str(member.id), input=changes) == "FORBIDDEN"


def test_a_user_cannot_change_anyone_else(
    user_client: FlaskClient, admin: models.User, session_factory: sessionmaker[Session]
) -> None:
    other = make_user(session_factory)
    for target in (other.id, admin.id, "999999", "not-an-id"):
        assert refused(user_client, UPDATE, id=str(target), input={"name": "X"}) == "FORBIDDEN"
    with session_factory() as session:
        assert session.get(models.User, other.id).name == other.name  # type: ignore[union-attr]


def test_anonymous_callers_must_sign_in(client: FlaskClient, member: models.User) -> None:
    assert refused(client, UPDATE, id=str(member.id), input={"name": "X"}) == "UNAUTHENTICATED"


def test_an_admin_changes_name_email_and_role(
    admin_client: FlaskClient, member: models.User
) -> None:
    result = update(admin_client, member.id, name="New", email=" New@Example.COM ", role="ADMIN")
    assert result["__typename"] == "UpdateUserSuccess"
    assert result["user"] | {"updatedAt": None} == {
        "id": str(member.id),
        "name": "New",
        "email": "new@example.com",
        "role": "ADMIN",
        "updatedAt": None,
    }


def test_a_field_left_out_is_unchanged_and_a_no_op_writes_nothing(
    admin_client: FlaskClient, member: models.User
) -> None:
    first = update(admin_client, member.id, name=member.name)
    assert first["user"]["updatedAt"] == member.updated_at.isoformat()
    assert first["user"]["email"] == member.email
    second = update(admin_client, member.id)
    assert second["user"] == first["user"]


def test_email_stays_unique_in_any_letter_case(
    admin_client: FlaskClient, member: models.User, admin: models.User
) -> None:
    result = update(admin_client, member.id, email="ADMIN@example.com")
    assert result == {
        "__typename": "EmailAlreadyRegistered",
        "email": "admin@example.com",
        "message": "The email address admin@example.com is already registered.",
    }


def test_null_and_bad_values_are_validation_errors(
    admin_client: FlaskClient, member: models.User
) -> None:
    result = update(admin_client, member.id, name=None, email="nope", role=None)
    assert result["__typename"] == "ValidationError"
    codes = {tuple(f["path"]): f["code"] for f in result["fields"]}
    assert codes == {
        ("input", "name"): "NOT_NULL",
        ("input", "email"): "INVALID_EMAIL",
        ("input", "role"): "NOT_NULL",
    }
    assert update(admin_client, member.id, name="   ")["fields"][0]["code"] == "BLANK"


def test_an_unknown_user_is_not_found(admin_client: FlaskClient) -> None:
    for target in ("999999", "not-an-id"):
        result = update(admin_client, target, name="X")
        assert result["__typename"] == "UserNotFound"
        assert result["id"] == target


def test_the_last_active_admin_cannot_be_demoted(
    admin_client: FlaskClient, admin: models.User, session_factory: sessionmaker[Session]
) -> None:
    result = update(admin_client, admin.id, role="USER")
    assert result["__typename"] == "LastActiveAdmin"
    second = make_user(session_factory, role=models.Role.ADMIN)
    assert update(admin_client, admin.id, role="USER")["__typename"] == "UpdateUserSuccess"
    with session_factory() as session:
        assert session.get(models.User, second.id).role is models.Role.ADMIN  # type: ignore[union-attr]


def test_a_demotion_ends_the_tokens_already_issued(
    app: Flask,
    admin_client: FlaskClient,
    tokens: TokenService,
    session_factory: sessionmaker[Session],
) -> None:
    other = make_user(session_factory, role=models.Role.ADMIN)
    headers = bearer(tokens, other)
    assert ask_me(app.test_client(), headers) == {"data": {"me": {"id": str(other.id)}}}
    update(admin_client, other.id, role="USER")
    body = ask_me(app.test_client(), headers)
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


# deactivateUser and reactivateUser


def test_a_deactivated_user_is_refused_on_their_next_request(
    app: Flask, admin_client: FlaskClient, member: models.User, tokens: TokenService
) -> None:
    headers = bearer(tokens, member)
    assert ask_me(app.test_client(), headers)["data"]["me"] == {"id": str(member.id)}
    result = gql(admin_client, DEACTIVATE, id=str(member.id))["data"]["deactivateUser"]
    assert result["__typename"] == "DeactivateUserSuccess"
    assert result["user"]["active"] is False
    assert result["user"]["deactivatedAt"] is not None
    response = app.test_client().post("/graphql", json={"query": "{ me { id } }"}, headers=headers)
    assert response.status_code == 401
    (error,) = response.get_json()["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert error["message"] == "The account is deactivated."
    # A token issued after the deactivation is refused too.
    assert ask_me(app.test_client(), bearer(tokens, member))["errors"][0]["extensions"]["code"] == (
        "UNAUTHENTICATED"
    )


def test_reactivation_lets_new_tokens_in_but_not_the_old_ones(
    app: Flask, admin_client: FlaskClient, member: models.User, tokens: TokenService
) -> None:
    old = bearer(tokens, member)
    gql(admin_client, DEACTIVATE, id=str(member.id))
    result = gql(admin_client, REACTIVATE, id=str(member.id))["data"]["reactivateUser"]
    assert result["user"] == {"id": str(member.id), "active": True, "deactivatedAt": None}
    assert ask_me(app.test_client(), old)["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert ask_me(app.test_client(), bearer(tokens, member))["data"]["me"] == {"id": str(member.id)}
    # Twice is no more than once.
    again = gql(admin_client, REACTIVATE, id=str(member.id))["data"]["reactivateUser"]
    assert again["__typename"] == "ReactivateUserSuccess"


def test_who_sees_deactivated_users(
    app: Flask,
    admin_client: FlaskClient,
    user_client: FlaskClient,
    admin: models.User,
    member: models.User,
    session_factory: sessionmaker[Session],
) -> None:
    gone = make_user(session_factory)
    gql(admin_client, DEACTIVATE, id=str(gone.id))
    listing = (
        "query($active: Boolean) "
        "{ users(first: 100, active: $active) { edges { node { id active } } } }"
    )

    def ids(client: FlaskClient, **variables: Any) -> dict[str, bool]:
        edges = gql(client, listing, **variables)["data"]["users"]["edges"]
        return {edge["node"]["id"]: edge["node"]["active"] for edge in edges}

    everyone = {str(admin.id): True, str(member.id): True, str(gone.id): False}
    assert ids(admin_client) == everyone
    assert ids(admin_client, active=False) == {str(gone.id): False}
    assert ids(admin_client, active=True) == {str(admin.id): True, str(member.id): True}
    assert ids(user_client) == {str(admin.id): True, str(member.id): True}
    assert refused(user_client, listing, active=True) == "FORBIDDEN"
    one = "query($id: ID!) { user(id: $id) { id } }"
    assert gql(user_client, one, id=str(gone.id))["data"]["user"] is None
    assert gql(admin_client, one, id=str(gone.id))["data"]["user"] == {"id": str(gone.id)}
    # deactivatedAt is for admins.
    field = "query($id: ID!) { user(id: $id) { deactivatedAt } }"
    assert refused(user_client, field, id=str(member.id)) == "FORBIDDEN"


def test_an_admin_cannot_deactivate_or_delete_themselves(
    admin_client: FlaskClient, admin: models.User, session_factory: sessionmaker[Session]
) -> None:
    make_user(session_factory, role=models.Role.ADMIN)
    deactivated = gql(admin_client, DEACTIVATE, id=str(admin.id))["data"]["deactivateUser"]
    assert deactivated == {
        "__typename": "CannotTargetSelf",
        "message": "You cannot deactivate your own account; ask another admin.",
    }
    deleted = gql(admin_client, DELETE, id=str(admin.id))["data"]["deleteUser"]
    assert deleted["__typename"] == "CannotTargetSelf"


def test_only_admins_deactivate_reactivate_and_delete(
    user_client: FlaskClient, session_factory: sessionmaker[Session]
) -> None:
    other = make_user(session_factory)
    for query in (DEACTIVATE, REACTIVATE, DELETE):
        assert refused(user_client, query, id=str(other.id)) == "FORBIDDEN"


# deleteUser


def test_a_deleted_user_is_gone_and_their_token_refused(
    app: Flask,
    admin_client: FlaskClient,
    member: models.User,
    tokens: TokenService,
    session_factory: sessionmaker[Session],
) -> None:
    headers = bearer(tokens, member)
    result = gql(admin_client, DELETE, id=str(member.id))["data"]["deleteUser"]
    assert result == {"__typename": "DeleteUserSuccess", "id": str(member.id)}
    with session_factory() as session:
        assert session.get(models.User, member.id) is None
    assert (
        ask_me(app.test_client(), headers)["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    )
    again = gql(admin_client, DELETE, id=str(member.id))["data"]["deleteUser"]
    assert again["__typename"] == "UserNotFound"


def test_delete_is_deprovisioned_and_a_refusal_keeps_the_user(
    settings: Settings,
    admin: models.User,
    member: models.User,
    tokens: TokenService,
    session_factory: sessionmaker[Session],
) -> None:
    for status, kept in ((500, True), (200, False)):
        behaviour = Behaviour(status=status)
        with stub_server(behaviour) as url:
            configured = replace(settings, provisioning_webhook_url=url)
            client = authorized(
                create_app(configured, session_factory=session_factory).test_client(), tokens, admin
            )
            result = gql(client, DELETE, id=str(member.id))["data"]["deleteUser"]
        assert (result["__typename"] == "ProvisioningFailed") is kept
        (event,) = [r["body"] for r in behaviour.received]
        assert event == {
            "event": "user.deleted",
            "id": str(member.id),
            "email": member.email,
            "deletedAt": event["deletedAt"],
        }
        with session_factory() as session:
            found = session.scalar(select(models.User.id).where(models.User.id == member.id))
        assert (found is not None) is kept
