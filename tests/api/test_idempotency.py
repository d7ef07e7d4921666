"""Idempotency-Key over HTTP: a retry gets the first answer and runs nothing; a key reused for
another request, a malformed key and a key on a query are each answered as documented."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from app import create_app
from db import models
from services.auth import TokenService
from settings import Settings
from tests.graphql import CREATE_USER, authorized
from tests.http_stub import Behaviour, stub_server


def send(
    client: FlaskClient, key: str | None, email: str = "ida@x.test", **extra: Any
) -> TestResponse:
    headers = {} if key is None else {"Idempotency-Key": key}
    body = {"query": CREATE_USER, "variables": {"input": {"name": "Ida", "email": email}}, **extra}
    return client.post("/graphql", json=body, headers=headers)


def counts(session_factory: sessionmaker[Session]) -> tuple[int, int, int]:
    """Users, audit events and stored keys."""
    with session_factory() as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(model)) or 0
            for model in (models.User, models.AuditEvent, models.IdempotencyKey)
        )


@pytest.fixture
def webhook() -> Any:
    behaviour = Behaviour(status=201)
    with stub_server(behaviour) as url:
        yield url, behaviour


@pytest.fixture
def keyed(
    settings: Settings,
    session_factory: sessionmaker[Session],
    tokens: TokenService,
    admin: models.User,
    webhook: tuple[str, Behaviour],
) -> FlaskClient:
    configured = replace(settings, provisioning_webhook_url=webhook[0])
    app = create_app(configured, session_factory=session_factory)
    return authorized(app.test_client(), tokens, admin)


def test_a_retry_gets_the_first_answer_and_runs_nothing(
    keyed: FlaskClient, session_factory: sessionmaker[Session], webhook: tuple[str, Behaviour]
) -> None:
    first = send(keyed, "retry-1")
    assert first.get_json()["data"]["createUser"]["__typename"] == "CreateUserSuccess"
    after_first = counts(session_factory)
    for _ in range(3):
        again = send(keyed, "retry-1")
        assert (again.status_code, again.get_data()) == (first.status_code, first.get_data())
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.content_type == first.content_type
    assert counts(session_factory) == after_first
    assert len(webhook[1].received) == 1
    assert "Idempotent-Replayed" not in first.headers


def test_a_failed_change_is_replayed_too(
    keyed: FlaskClient, session_factory: sessionmaker[Session], webhook: tuple[str, Behaviour]
) -> None:
    webhook[1].status = 500
    first = send(keyed, "refused-1")
    assert first.get_json()["data"]["createUser"]["__typename"] == "ProvisioningFailed"
    webhook[1].status = 201
    again = send(keyed, "refused-1")
    assert again.get_data() == first.get_data()
    assert len(webhook[1].received) == 1
    assert counts(session_factory)[2] == 1  # the answer is kept, the user is not


def test_the_same_key_with_another_request_is_refused(
    keyed: FlaskClient, session_factory: sessionmaker[Session]
) -> None:
    send(keyed, "twice")
    before = counts(session_factory)
    other = send(keyed, "twice", email="other@x.test")
    assert other.status_code == 422
    assert other.get_json()["errors"][0]["extensions"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    renamed = send(keyed, "twice", operationName="Create")
    assert renamed.status_code == 422
    assert counts(session_factory) == before


@pytest.mark.parametrize("key", ["", " ", "x" * 256, "naïve", "two words", "tab\t"])
def test_a_malformed_key_is_a_400_with_a_json_body(
    keyed: FlaskClient, session_factory: sessionmaker[Session], key: str
) -> None:
    before = counts(session_factory)
    response = send(keyed, key)
    assert response.status_code == 400
    assert response.get_json()["errors"][0]["extensions"]["code"] == "INVALID_IDEMPOTENCY_KEY"
    assert counts(session_factory) == before


def test_a_key_on_a_query_is_ignored(
    keyed: FlaskClient, session_factory: sessionmaker[Session]
) -> None:
    for _ in range(2):
        response = keyed.post(
            "/graphql",
            json={"query": "{ users { edges { node { id } } } }"},
            headers={"Idempotency-Key": "on-a-query"},
        )
        assert response.status_code == 200
        assert "Idempotent-Replayed" not in response.headers
    assert counts(session_factory)[2] == 0


def test_keys_belong_to_their_caller_and_expire(
    app: Flask,
    keyed: FlaskClient,
    user_client: FlaskClient,
    session_factory: sessionmaker[Session],
    admin: models.User,
    tokens: TokenService,
) -> None:
    send(keyed, "shared")
    # Another caller's key of the same name is theirs: it runs (and is refused, a USER).
    theirs = send(user_client, "shared")
    assert theirs.get_json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "Idempotent-Replayed" not in theirs.headers
    with session_factory() as session, session.begin():
        session.execute(
            update(models.IdempotencyKey).values(
                expires_at=datetime.now(UTC) - timedelta(seconds=1)
            )
        )
    again = send(keyed, "shared", email="later@x.test")
    assert again.status_code == 200
    assert again.get_json()["data"]["createUser"]["__typename"] == "CreateUserSuccess"


def test_a_retry_of_a_request_that_failed_with_a_5xx_runs_again(
    settings: Settings,
    session_factory: sessionmaker[Session],
    tokens: TokenService,
    admin: models.User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services import users as user_service
    from services.errors import DatabaseUnavailable

    client = authorized(
        create_app(settings, session_factory=session_factory).test_client(), tokens, admin
    )
    real = user_service.create_user

    def outage(*args: Any, **kwargs: Any) -> Any:
        raise DatabaseUnavailable("The database is unavailable; try again shortly.")

    monkeypatch.setattr(user_service, "create_user", outage)
    failed = send(client, "after-outage")
    assert failed.get_json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    monkeypatch.setattr(user_service, "create_user", real)
    retried = send(client, "after-outage")
    assert retried.get_json()["data"]["createUser"]["__typename"] == "CreateUserSuccess"
    assert "Idempotent-Replayed" not in retried.headers


def test_a_caller_without_a_token_has_keys_of_their_address(
    app: Flask, session_factory: sessionmaker[Session]
) -> None:
    """No token, so no authentication statement reads the key: a statement of its own does."""
    client = app.test_client()
    refresh = {"query": 'mutation { refreshSession(refreshToken: "not-one") { __typename } }'}

    def post(key: str) -> TestResponse:
        return client.post("/graphql", json=refresh, headers={"Idempotency-Key": key})

    first = post("anonymous-1")
    assert first.get_json()["data"]["refreshSession"]["__typename"] == "InvalidRefreshToken"
    again = post("anonymous-1")
    assert (again.get_data(), again.headers["Idempotent-Replayed"]) == (first.get_data(), "true")
    other = client.post(
        "/graphql",
        json={"query": 'mutation { refreshSession(refreshToken: "another") { __typename } }'},
        headers={"Idempotency-Key": "anonymous-1"},
    )
    assert other.get_json()["errors"][0]["extensions"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    with session_factory() as session:
        owners = session.scalars(select(models.IdempotencyKey.principal)).all()
    assert owners == ["address:127.0.0.1"]
