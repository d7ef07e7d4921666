from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from db import models
from services import users as user_service
from services.auth import Access, TokenService
from services.unit_of_work import UnitOfWork
from settings import Settings
from tests.factories import make_user
from tests.google_fake import CLIENT_ID, GoogleKey, certs_body, id_token, make_google_key
from tests.graphql import gql
from tests.http_stub import Behaviour, stub_server

SIGN_IN = """
mutation SignIn($idToken: String!) {
  signInWithGoogle(idToken: $idToken) {
    __typename
    ... on SignInSuccess { accessToken expiresAt user { id name email role } }
    ... on InvalidGoogleToken { message }
    ... on EmailNotVerified { email message }
    ... on NotRegistered { email message }
    ... on ProvisioningFailed { message }
  }
}
"""


@pytest.fixture(scope="module")
def google_key() -> GoogleKey:
    return make_google_key("google-key-1")


@pytest.fixture(scope="module")
def stranger_key() -> GoogleKey:
    # Same kid, another key: what a forger would try.
    return make_google_key("google-key-1")


@pytest.fixture
def certs(google_key: GoogleKey) -> Iterator[tuple[str, Behaviour]]:
    behaviour = Behaviour(
        body=certs_body(google_key),
        headers={"Content-Type": "application/json", "Cache-Control": "public, max-age=3600"},
    )
    with stub_server(behaviour, "/oauth2/v1/certs") as url:
        yield url, behaviour


@pytest.fixture
def google_settings(settings: Settings, certs: tuple[str, Behaviour]) -> Settings:
    return replace(settings, google_client_ids=(CLIENT_ID,), google_certs_url=certs[0])


def client_for(settings: Settings, session_factory: sessionmaker[Session]) -> FlaskClient:
    return create_app(settings, session_factory=session_factory).test_client()


@pytest.fixture
def google_client(google_settings: Settings, session_factory: sessionmaker[Session]) -> FlaskClient:
    return client_for(google_settings, session_factory)


def sign_in(client: FlaskClient, token: str) -> dict[str, Any]:
    result: dict[str, Any] = gql(client, SIGN_IN, idToken=token)["data"]["signInWithGoogle"]
    return result


def test_a_newcomer_is_registered_and_the_token_works_on_me(
    google_client: FlaskClient, google_key: GoogleKey, session_factory: sessionmaker[Session]
) -> None:
    result = sign_in(google_client, id_token(google_key))
    assert result["__typename"] == "SignInSuccess"
    assert result["user"] == {
        "id": result["user"]["id"],
        "name": "New Comer",
        "email": "newcomer@example.com",  # readable: the caller is this user
        "role": "USER",
    }
    assert user_service.count_users(UnitOfWork(session_factory)) == 1
    response = google_client.post(
        "/graphql",
        json={"query": "{ me { id email } }"},
        headers={"Authorization": f"Bearer {result['accessToken']}"},
    )
    assert response.get_json() == {
        "data": {"me": {"id": result["user"]["id"], "email": "newcomer@example.com"}}
    }


def test_a_known_person_signs_in_with_their_role(
    google_client: FlaskClient, google_key: GoogleKey, session_factory: sessionmaker[Session]
) -> None:
    admin = make_user(
        session_factory, name="Boss", email="newcomer@example.com", role=models.Role.ADMIN
    )
    result = sign_in(google_client, id_token(google_key))
    assert result["user"] == {
        "id": str(admin.id),
        "name": "Boss",
        "email": "newcomer@example.com",
        "role": "ADMIN",
    }
    assert user_service.count_users(UnitOfWork(session_factory)) == 1


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"aud": "another-client.apps.googleusercontent.com"}, "not valid"),
        ({"iss": "https://evil.example"}, "not valid"),
        ({"iss": None}, "not valid"),
        ({"exp": 1_600_000_000, "iat": 1_599_999_000}, "not valid"),
        ({"email": None}, "carries no email address"),
    ],
)
def test_wrong_claims_are_refused(
    google_client: FlaskClient,
    google_key: GoogleKey,
    session_factory: sessionmaker[Session],
    claims: dict[str, Any],
    message: str,
) -> None:
    result = sign_in(google_client, id_token(google_key, **claims))
    assert result["__typename"] == "InvalidGoogleToken"
    assert message in result["message"]
    assert user_service.count_users(UnitOfWork(session_factory)) == 0


def test_a_bad_signature_is_refused(google_client: FlaskClient, stranger_key: GoogleKey) -> None:
    assert sign_in(google_client, id_token(stranger_key))["__typename"] == "InvalidGoogleToken"


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "e30.e30."])
def test_garbage_is_refused(google_client: FlaskClient, token: str) -> None:
    assert sign_in(google_client, token)["__typename"] == "InvalidGoogleToken"


def test_our_own_access_token_is_no_google_id_token(
    google_client: FlaskClient, admin: models.User, tokens: TokenService
) -> None:
    ours = tokens.issue(user_id=admin.id, role=Access.ADMIN).token
    assert sign_in(google_client, ours)["__typename"] == "InvalidGoogleToken"


def test_an_unverified_email_is_refused(google_client: FlaskClient, google_key: GoogleKey) -> None:
    result = sign_in(google_client, id_token(google_key, email_verified=False))
    assert result == {
        "__typename": "EmailNotVerified",
        "email": "Newcomer@Example.com",
        "message": "Google has not verified the email address Newcomer@Example.com.",
    }


def test_the_hosted_domain_is_enforced(
    google_settings: Settings, google_key: GoogleKey, session_factory: sessionmaker[Session]
) -> None:
    client = client_for(
        replace(google_settings, google_hosted_domain="corp.example"), session_factory
    )
    refused = sign_in(client, id_token(google_key))
    assert refused == {
        "__typename": "InvalidGoogleToken",
        "message": "Only corp.example accounts may sign in.",
    }
    allowed = sign_in(client, id_token(google_key, hd="corp.example"))
    assert allowed["__typename"] == "SignInSuccess"


def test_closed_sign_up_refuses_newcomers_but_not_members(
    google_settings: Settings, google_key: GoogleKey, session_factory: sessionmaker[Session]
) -> None:
    client = client_for(replace(google_settings, google_signup_enabled=False), session_factory)
    assert sign_in(client, id_token(google_key)) == {
        "__typename": "NotRegistered",
        "email": "newcomer@example.com",
        "message": "No account uses newcomer@example.com, and sign-up is closed.",
    }
    make_user(session_factory, email="newcomer@example.com")
    assert sign_in(client, id_token(google_key))["__typename"] == "SignInSuccess"


def test_registration_goes_through_provisioning(
    google_settings: Settings, google_key: GoogleKey, session_factory: sessionmaker[Session]
) -> None:
    with stub_server(Behaviour(status=502)) as hook:
        client = client_for(
            replace(google_settings, provisioning_webhook_url=hook), session_factory
        )
        result = sign_in(client, id_token(google_key))
    assert result == {
        "__typename": "ProvisioningFailed",
        "message": "The provisioning service refused the user (HTTP 502).",
    }
    assert user_service.count_users(UnitOfWork(session_factory)) == 0


def test_the_name_falls_back_to_the_email(
    google_client: FlaskClient, google_key: GoogleKey
) -> None:
    result = sign_in(google_client, id_token(google_key, name=None))
    assert result["user"]["name"] == "Newcomer"
    long_name = sign_in(google_client, id_token(google_key, email="x@example.com", name="N" * 200))
    assert long_name["user"]["name"] == "N" * 80


def test_certificates_are_fetched_once_and_cached(
    google_client: FlaskClient, google_key: GoogleKey, certs: tuple[str, Behaviour]
) -> None:
    for _ in range(3):
        assert sign_in(google_client, id_token(google_key))["__typename"] == "SignInSuccess"
    assert [r["method"] for r in certs[1].received] == ["GET"]


def test_unreachable_certificates_are_a_clear_error(
    settings: Settings, google_key: GoogleKey, session_factory: sessionmaker[Session]
) -> None:
    with stub_server(Behaviour()) as url:
        pass  # closed again: nothing listens there now
    configured = replace(settings, google_client_ids=(CLIENT_ID,), google_certs_url=url)
    body = gql(
        client_for(configured, session_factory),
        SIGN_IN,
        idToken=id_token(google_key),
        expect_errors=True,
    )
    [error] = body["errors"]
    assert error["extensions"]["code"] == "GOOGLE_UNAVAILABLE"
    assert error["message"] == "Google sign-in is unavailable; try again later."


def test_sign_in_is_off_without_client_ids(client: FlaskClient, google_key: GoogleKey) -> None:
    assert sign_in(client, id_token(google_key)) == {
        "__typename": "InvalidGoogleToken",
        "message": "Google sign-in is not configured on this server.",
    }


SIGN_IN_SESSION = """
mutation SignIn($idToken: String!) {
  signInWithGoogle(idToken: $idToken) {
    __typename
    ... on SignInSuccess { accessToken refreshToken refreshTokenExpiresAt user { id } }
    ... on AccountDeactivated { email message }
  }
}
"""


def test_sign_in_starts_a_session_that_refreshes(
    google_client: FlaskClient, google_key: GoogleKey
) -> None:
    result = gql(google_client, SIGN_IN_SESSION, idToken=id_token(google_key))["data"]
    signed_in = result["signInWithGoogle"]
    assert signed_in["__typename"] == "SignInSuccess"
    refresh = """mutation($t: String!) { refreshSession(refreshToken: $t) {
        __typename ... on RefreshSessionSuccess { user { id } } } }"""
    refreshed = gql(google_client, refresh, t=signed_in["refreshToken"])["data"]["refreshSession"]
    assert refreshed == {"__typename": "RefreshSessionSuccess", "user": signed_in["user"]}
    sessions = google_client.post(
        "/graphql",
        json={"query": "{ me { sessions { userAgent current } } }"},
        headers={"Authorization": f"Bearer {signed_in['accessToken']}"},
    ).get_json()
    (session,) = sessions["data"]["me"]["sessions"]
    # The User-Agent of the sign-in request: Flask's test client sends its own.
    assert session["userAgent"].startswith("Werkzeug/")
    assert session["current"] is True


def test_a_deactivated_account_cannot_sign_in(
    google_client: FlaskClient, google_key: GoogleKey, session_factory: sessionmaker[Session]
) -> None:
    person = make_user(session_factory, email="newcomer@example.com")
    user_service.set_active(
        UnitOfWork(session_factory), actor_id=0, user_id=person.id, active=False
    )
    result = gql(google_client, SIGN_IN_SESSION, idToken=id_token(google_key))["data"]
    assert result["signInWithGoogle"] == {
        "__typename": "AccountDeactivated",
        "email": "newcomer@example.com",
        "message": "The account newcomer@example.com is deactivated.",
    }
