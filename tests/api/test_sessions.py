"""Sessions over HTTP: refresh with rotation and reuse detection, sign-out, sign-out
everywhere, an admin's revocation, and `me { sessions }`."""

import hashlib
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import models
from services import sessions
from services.auth import Access, TokenService
from services.sessions import SessionTokens
from services.unit_of_work import UnitOfWork
from tests.factories import make_user
from tests.graphql import authorized, gql

REFRESH = """
mutation Refresh($token: String!) {
  refreshSession(refreshToken: $token) {
    __typename
    ... on RefreshSessionSuccess { accessToken refreshToken refreshTokenExpiresAt user { id } }
    ... on InvalidRefreshToken { message }
    ... on RefreshTokenReused { message }
  }
}
"""
SESSIONS = "{ me { sessions { id createdAt lastUsedAt expiresAt userAgent current } } }"


def start(
    session_factory: sessionmaker[Session], tokens: TokenService, user: models.User, agent: str
) -> SessionTokens:
    return sessions.start_session(
        UnitOfWork(session_factory), tokens, user=user, user_agent=agent, ttl_seconds=3600
    )


def refresh(client: FlaskClient, token: str) -> dict[str, Any]:
    result: dict[str, Any] = gql(client, REFRESH, token=token)["data"]["refreshSession"]
    return result


def call(client: FlaskClient, access_token: str, query: str) -> tuple[int, dict[str, Any]]:
    response = client.post(
        "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {access_token}"}
    )
    body: dict[str, Any] = response.get_json()
    return response.status_code, body


def works(client: FlaskClient, access_token: str) -> bool:
    status, body = call(client, access_token, "{ me { id } }")
    if status == 401:
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        return False
    assert status == 200, body
    assert body["data"]["me"] is not None, body
    return True


def test_a_refresh_token_is_stored_as_a_hash_only(
    session_factory: sessionmaker[Session], tokens: TokenService, member: models.User
) -> None:
    started = start(session_factory, tokens, member, "Firefox")
    assert len(started.refresh_token) >= 43  # 256 bits, URL-safe base64
    with session_factory() as session:
        stored = session.scalars(select(models.RefreshToken.token_hash)).all()
    assert stored == [hashlib.sha256(started.refresh_token.encode()).hexdigest()]
    assert tokens.verify(started.access.token).session_id == started.session_id


def test_refresh_rotates_the_pair(
    client: FlaskClient,
    session_factory: sessionmaker[Session],
    tokens: TokenService,
    member: models.User,
) -> None:
    started = start(session_factory, tokens, member, "Firefox")
    first = refresh(client, started.refresh_token)
    assert first["__typename"] == "RefreshSessionSuccess"
    assert first["user"] == {"id": str(member.id)}
    assert first["refreshToken"] != started.refresh_token
    assert works(client, first["accessToken"])
    second = refresh(client, first["refreshToken"])
    assert second["__typename"] == "RefreshSessionSuccess"


def test_a_rotated_token_presented_again_revokes_the_whole_session(
    client: FlaskClient,
    session_factory: sessionmaker[Session],
    tokens: TokenService,
    member: models.User,
) -> None:
    started = start(session_factory, tokens, member, "Firefox")
    rotated = refresh(client, started.refresh_token)
    reused = refresh(client, started.refresh_token)
    assert reused["__typename"] == "RefreshTokenReused"
    # The thief's copy and the rightful holder's newer token alike: the family is gone.
    assert refresh(client, rotated["refreshToken"])["__typename"] == "InvalidRefreshToken"
    assert not works(client, rotated["accessToken"])
    assert not works(client, started.access.token)


def test_unknown_refresh_tokens_are_refused(client: FlaskClient) -> None:
    for token in ("", "x" * 43, "x" * 5000, "ünïcode"):
        result = refresh(client, token)
        assert result["__typename"] == "InvalidRefreshToken", token


def test_sign_out_ends_this_session_only(
    app: Flask,
    session_factory: sessionmaker[Session],
    tokens: TokenService,
    member: models.User,
) -> None:
    client = app.test_client()
    laptop = start(session_factory, tokens, member, "Laptop")
    phone = start(session_factory, tokens, member, "Phone")
    status, body = call(client, laptop.access.token, "mutation { signOut { count } }")
    assert (status, body) == (200, {"data": {"signOut": {"count": 1}}})
    assert not works(client, laptop.access.token)
    assert refresh(client, laptop.refresh_token)["__typename"] == "InvalidRefreshToken"
    assert works(client, phone.access.token)
    assert refresh(client, phone.refresh_token)["__typename"] == "RefreshSessionSuccess"


def test_sign_out_everywhere_refuses_old_access_tokens_and_accepts_new_ones(
    app: Flask,
    session_factory: sessionmaker[Session],
    tokens: TokenService,
    member: models.User,
) -> None:
    client = app.test_client()
    laptop = start(session_factory, tokens, member, "Laptop")
    plain = tokens.issue(user_id=member.id, role=Access.USER).token  # no session: a CLI token
    status, body = call(client, plain, "mutation { signOutEverywhere { count } }")
    assert (status, body) == (200, {"data": {"signOutEverywhere": {"count": 1}}})
    assert not works(client, plain)
    assert not works(client, laptop.access.token)
    assert refresh(client, laptop.refresh_token)["__typename"] == "InvalidRefreshToken"
    assert works(client, tokens.issue(user_id=member.id, role=Access.USER).token)
    assert works(client, start(session_factory, tokens, member, "Again").access.token)


def test_an_admin_revokes_a_users_sessions(
    app: Flask,
    admin_client: FlaskClient,
    user_client: FlaskClient,
    session_factory: sessionmaker[Session],
    tokens: TokenService,
    member: models.User,
) -> None:
    phone = start(session_factory, tokens, member, "Phone")
    query = """mutation($id: ID!) { revokeSessions(userId: $id) {
      __typename ... on SessionsRevoked { count } ... on UserNotFound { id } } }"""
    result = gql(admin_client, query, id=str(member.id))["data"]["revokeSessions"]
    assert result == {"__typename": "SessionsRevoked", "count": 1}
    assert not works(app.test_client(), phone.access.token)
    missing = gql(admin_client, query, id="424242")["data"]["revokeSessions"]
    assert missing == {"__typename": "UserNotFound", "id": "424242"}
    # The member's own token predates the revocation; a plain user's is refused the mutation.
    bystander = authorized(app.test_client(), tokens, make_user(session_factory))
    refused = gql(bystander, query, expect_errors=True, id=str(member.id))
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert not works(app.test_client(), user_client.environ_base["HTTP_AUTHORIZATION"][7:])


def test_deactivation_ends_sessions(
    app: Flask,
    admin_client: FlaskClient,
    session_factory: sessionmaker[Session],
    tokens: TokenService,
    member: models.User,
) -> None:
    phone = start(session_factory, tokens, member, "Phone")
    gql(
        admin_client,
        "mutation($id: ID!) { deactivateUser(id: $id) { __typename } }",
        id=str(member.id),
    )
    client = app.test_client()
    assert refresh(client, phone.refresh_token)["__typename"] == "InvalidRefreshToken"
    gql(
        admin_client,
        "mutation($id: ID!) { reactivateUser(id: $id) { __typename } }",
        id=str(member.id),
    )
    assert refresh(client, phone.refresh_token)["__typename"] == "InvalidRefreshToken"


def test_me_lists_my_open_sessions_and_marks_the_current_one(
    app: Flask,
    session_factory: sessionmaker[Session],
    tokens: TokenService,
    member: models.User,
) -> None:
    client = app.test_client()
    laptop = start(session_factory, tokens, member, "Laptop")
    phone = start(session_factory, tokens, member, "Phone")
    ended = start(session_factory, tokens, member, "Old")
    call(client, ended.access.token, "mutation { signOut { count } }")
    status, body = call(client, phone.access.token, SESSIONS)
    assert status == 200
    listed = body["data"]["me"]["sessions"]
    assert [(s["id"], s["userAgent"], s["current"]) for s in listed] == [
        (str(phone.session_id), "Phone", True),
        (str(laptop.session_id), "Laptop", False),
    ]
    # Another user's sessions are theirs (and admins') to see.
    other = make_user(session_factory)
    status, body = call(
        client,
        tokens.issue(user_id=other.id, role=Access.USER).token,
        f'{{ user(id: "{member.id}") {{ sessions {{ id }} }} }}',
    )
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
