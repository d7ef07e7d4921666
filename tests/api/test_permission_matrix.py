"""Deny by default, field by field: every rule in RULES is tried with every role over HTTP,
and a role the rule does not admit is refused (UNAUTHENTICATED without a token, FORBIDDEN
with one), while a role it admits is not. A rule without a document here fails the test."""

from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session, sessionmaker

from db import models
from schema.permissions import RULES
from services.auth import Access, TokenService
from tests.factories import make_user

ANOTHER = "999999"  # nobody's id: names another user than the caller
# Each document uses its coordinate's field (or argument, or input field) once; `$me` is the
# caller's own id, where using the field on oneself would be allowed by or_self.
DOCUMENTS: dict[str, str] = {
    "Query.me": "{ me { id } }",
    "Query.users": "{ users { edges { node { id } } } }",
    "Query.users(active:)": "{ users(active: true) { edges { node { id } } } }",
    "Query.user": f'{{ user(id: "{ANOTHER}") {{ id }} }}',
    "Query.auditEvents": "{ auditEvents { edges { node { id } } } }",
    "Mutation.createUser": 'mutation { createUser(input: {name: "M", email: "m@matrix.test"}) '
    "{ __typename } }",
    "Mutation.signInWithGoogle": 'mutation { signInWithGoogle(idToken: "x") { __typename } }',
    "Mutation.updateUser": f'mutation {{ updateUser(id: "{ANOTHER}", input: {{name: "X"}}) '
    "{ __typename } }",
    "UpdateUserInput.email": 'mutation($me: ID!) { updateUser(id: $me, input: {email: "e@m.test"})'
    " { __typename } }",
    "UpdateUserInput.role": "mutation($me: ID!) { updateUser(id: $me, input: {role: USER}) "
    "{ __typename } }",
    "Mutation.deactivateUser": f'mutation {{ deactivateUser(id: "{ANOTHER}") {{ __typename }} }}',
    "Mutation.reactivateUser": f'mutation {{ reactivateUser(id: "{ANOTHER}") {{ __typename }} }}',
    "Mutation.deleteUser": f'mutation {{ deleteUser(id: "{ANOTHER}") {{ __typename }} }}',
    "Mutation.refreshSession": 'mutation { refreshSession(refreshToken: "x") { __typename } }',
    "Mutation.signOut": "mutation { signOut { count } }",
    "Mutation.signOutEverywhere": "mutation { signOutEverywhere { count } }",
    "Mutation.revokeSessions": f'mutation {{ revokeSessions(userId: "{ANOTHER}") '
    "{ __typename } }",
    "User.email": "query($other: ID!) { user(id: $other) { email } }",
    "User.deactivatedAt": "query($other: ID!) { user(id: $other) { deactivatedAt } }",
    "User.sessions": "query($other: ID!) { user(id: $other) { sessions { id } } }",
}
REFUSALS = {"UNAUTHENTICATED", "FORBIDDEN"}


def test_every_rule_has_a_document() -> None:
    assert set(DOCUMENTS) == set(RULES)


@pytest.mark.parametrize("role", list(Access), ids=lambda role: role.name)
@pytest.mark.parametrize("coordinate", list(RULES))
def test_the_rule_admits_exactly_its_roles(
    app: Flask,
    tokens: TokenService,
    session_factory: sessionmaker[Session],
    coordinate: str,
    role: Access,
) -> None:
    caller = make_user(
        session_factory, role=models.Role.ADMIN if role is Access.ADMIN else models.Role.USER
    )
    other = make_user(session_factory)
    headers = {}
    if role is not Access.ANONYMOUS:
        headers["Authorization"] = f"Bearer {tokens.issue(user_id=caller.id, role=role).token}"
    document = DOCUMENTS[coordinate]
    variables: dict[str, Any] = {}
    if "$me" in document:
        variables["me"] = str(caller.id)
    if "$other" in document:
        variables["other"] = str(other.id)
    response = app.test_client().post(
        "/graphql", json={"query": document, "variables": variables}, headers=headers
    )
    body = response.get_json()
    codes = {error["extensions"]["code"] for error in body.get("errors") or ()}
    if RULES[coordinate].allows(role):
        assert not codes & REFUSALS, body
    else:
        expected = "UNAUTHENTICATED" if role is Access.ANONYMOUS else "FORBIDDEN"
        assert expected in codes, body
