from dataclasses import replace
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from db import models
from services import users as user_service
from services.auth import TokenService
from services.unit_of_work import UnitOfWork
from settings import Settings
from tests.factories import make_user
from tests.graphql import CREATE_USER, authorized, gql
from tests.http_stub import Behaviour, stub_server


def create(client: FlaskClient, **fields: Any) -> dict[str, Any]:
    result: dict[str, Any] = gql(client, CREATE_USER, input=fields)["data"]["createUser"]
    return result


def test_create_user(admin_client: FlaskClient, session_factory: sessionmaker[Session]) -> None:
    result = create(admin_client, name=" Ada Lovelace ", email="Ada@Example.com", role="ADMIN")
    assert result["__typename"] == "CreateUserSuccess"
    user = result["user"]
    assert (user["name"], user["email"], user["role"]) == (
        "Ada Lovelace",
        "ada@example.com",
        "ADMIN",
    )
    assert user["createdAt"].endswith("+00:00")
    assert user["updatedAt"] == user["createdAt"]
    assert user_service.get_user(UnitOfWork(session_factory), user_id=int(user["id"])) is not None


def test_the_role_defaults_to_user(admin_client: FlaskClient) -> None:
    assert create(admin_client, name="Grace", email="grace@example.com")["user"]["role"] == "USER"


def test_every_bad_field_is_named(
    admin_client: FlaskClient, session_factory: sessionmaker[Session]
) -> None:
    result = create(admin_client, name="   ", email="not-an-email")
    assert result == {
        "__typename": "ValidationError",
        "fields": [
            {"path": ["input", "name"], "message": "Must not be blank.", "code": "BLANK"},
            {
                "path": ["input", "email"],
                "message": "Not a valid email address.",
                "code": "INVALID_EMAIL",
            },
        ],
    }
    too_long = create(admin_client, name="x" * 81, email="a" * 250 + "@example.com")
    assert too_long["fields"] == [
        {
            "path": ["input", "name"],
            "message": "Must be at most 80 characters.",
            "code": "TOO_LONG",
        },
        {
            "path": ["input", "email"],
            "message": "Must be at most 254 characters.",
            "code": "TOO_LONG",
        },
    ]
    assert user_service.count_users(UnitOfWork(session_factory)) == 1  # the admin


def test_the_longest_valid_values_pass(admin_client: FlaskClient) -> None:
    email = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com"
    assert len(email) == 254
    result = create(admin_client, name="x" * 80, email=email)
    assert result["__typename"] == "CreateUserSuccess", result


def test_a_duplicate_email_in_any_case(
    admin_client: FlaskClient, session_factory: sessionmaker[Session]
) -> None:
    make_user(session_factory, email="taken@example.com")
    result = create(admin_client, name="Copy", email="TAKEN@example.COM")
    assert result == {
        "__typename": "EmailAlreadyRegistered",
        "email": "taken@example.com",
        "message": "The email address taken@example.com is already registered.",
    }
    assert user_service.count_users(UnitOfWork(session_factory)) == 2


def test_a_provisioning_failure_changes_nothing(
    settings: Settings,
    session_factory: sessionmaker[Session],
    admin: models.User,
    tokens: TokenService,
) -> None:
    make_user(session_factory)
    behaviour = Behaviour(status=503)
    with stub_server(behaviour) as url:
        app = create_app(
            replace(settings, provisioning_webhook_url=url), session_factory=session_factory
        )
        result = create(
            authorized(app.test_client(), tokens, admin), name="Grace", email="grace@example.com"
        )
    assert result == {
        "__typename": "ProvisioningFailed",
        "message": "The provisioning service refused the user (HTTP 503).",
    }
    assert behaviour.received[0]["body"]["email"] == "grace@example.com"
    assert user_service.count_users(UnitOfWork(session_factory)) == 2  # the admin and one more


UNSTORABLE_NAMES = {
    "lone surrogate": "A\ud800B",
    "NUL": "Ada\x00Lovelace",
    "escape sequence": "Ada\x1b[31m",
    "C1 control": "Ad\x85a",
    "right-to-left override": "Ada\u202eecalevol",
    "isolate": "Ada\u2066x\u2069",
}


def test_names_the_database_cannot_store_faithfully_are_refused(
    admin_client: FlaskClient, session_factory: sessionmaker[Session]
) -> None:
    for label, name in UNSTORABLE_NAMES.items():
        result = create(admin_client, name=name, email=f"{len(name)}@example.com")
        assert result["__typename"] == "ValidationError", label
        assert result["fields"] == [
            {
                "path": ["input", "name"],
                "message": "Must not contain control, bidirectional-override or unpaired "
                "surrogate characters.",
                "code": "UNSUPPORTED_CHARACTER",
            }
        ], label
    stored = user_service.list_users(UnitOfWork(session_factory), first=10).users
    assert [user.email for user in stored] == ["admin@example.com"]  # the caller alone


def test_a_lone_surrogate_in_the_email_is_refused_too(admin_client: FlaskClient) -> None:
    result = create(admin_client, name="Ada", email="ada\udfff@example.com")
    assert result["__typename"] == "ValidationError"
    assert "UNSUPPORTED_CHARACTER" in {field["code"] for field in result["fields"]}


def test_scripts_marks_and_emoji_are_stored_as_sent(admin_client: FlaskClient) -> None:
    for name in ("أدا لوفليس", "Zoë Ğ̈", "👩\u200d💻 Ada", "李小龍"):
        created = create(admin_client, name=name, email=f"{abs(hash(name))}@example.com")
        assert created["user"]["name"] == name
