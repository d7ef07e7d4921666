import logging
from dataclasses import replace
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from db import models
from services.auth import TokenService
from services.rate_limit import Rate
from settings import Settings
from tests.graphql import CREATE_USER, authorized

SIGN_IN = 'mutation { signInWithGoogle(idToken: "x") { __typename } }'


def limited_client(
    settings: Settings, session_factory: sessionmaker[Session], **overrides: Any
) -> FlaskClient:
    rates = {"sign_in": Rate(3, 60), "create_user": Rate(2, 60)}
    configured = replace(settings, rate_limits=rates, **overrides)
    return create_app(configured, session_factory=session_factory).test_client()


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


def test_sign_in_attempts_are_limited_per_address(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    client = limited_client(settings, session_factory)
    answers = [client.post("/graphql", json={"query": SIGN_IN}).get_json() for _ in range(4)]
    assert [a["data"] and a["data"]["signInWithGoogle"]["__typename"] for a in answers[:3]] == [
        "InvalidGoogleToken"
    ] * 3
    [error] = answers[3]["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert 0 < error["extensions"]["retryAfter"] <= 60
    assert error["message"].startswith("Too many attempts; try again in ")
    other = client.post(
        "/graphql", json={"query": SIGN_IN}, environ_base={"REMOTE_ADDR": "10.9.8.7"}
    ).get_json()
    assert codes(other) == []


def test_aliases_cannot_multiply_attempts(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    client = limited_client(settings, session_factory)
    many = (
        "mutation { "
        + " ".join(f'a{i}: signInWithGoogle(idToken: "x") {{ __typename }}' for i in range(5))
        + " }"
    )
    body = client.post("/graphql", json={"query": many}).get_json()
    # Mutations run one after another; the fourth is refused and nulls the result, so the
    # fifth never runs.
    assert (body["data"], codes(body)) == (None, ["RATE_LIMITED"])


def test_create_user_is_limited_per_admin_whatever_the_address(
    settings: Settings,
    session_factory: sessionmaker[Session],
    admin: models.User,
    tokens: TokenService,
) -> None:
    client = authorized(limited_client(settings, session_factory), tokens, admin)

    def create(index: int, address: str) -> dict[str, Any]:
        variables = {"input": {"name": "N", "email": f"n{index}@example.com"}}
        result: dict[str, Any] = client.post(
            "/graphql",
            json={"query": CREATE_USER, "variables": variables},
            environ_base={"REMOTE_ADDR": address},
        ).get_json()
        return result

    assert create(1, "10.0.0.1")["data"]["createUser"]["__typename"] == "CreateUserSuccess"
    assert create(2, "10.0.0.2")["data"]["createUser"]["__typename"] == "CreateUserSuccess"
    assert codes(create(3, "10.0.0.3")) == ["RATE_LIMITED"]


def test_refused_callers_are_not_counted(
    settings: Settings,
    session_factory: sessionmaker[Session],
    member: models.User,
    tokens: TokenService,
) -> None:
    client = authorized(limited_client(settings, session_factory), tokens, member)
    body = {"query": CREATE_USER, "variables": {"input": {"name": "N", "email": "n@example.com"}}}
    assert [codes(client.post("/graphql", json=body).get_json()) for _ in range(4)] == [
        ["FORBIDDEN"]
    ] * 4


@pytest.mark.redis
def test_limits_are_shared_through_redis(
    settings: Settings, session_factory: sessionmaker[Session], redis_url: str
) -> None:
    first = limited_client(settings, session_factory, redis_url=redis_url)
    second = limited_client(settings, session_factory, redis_url=redis_url)
    clients = [first, second, first, second]
    answers = [c.post("/graphql", json={"query": SIGN_IN}).get_json() for c in clients]
    assert [codes(a) for a in answers] == [[], [], [], ["RATE_LIMITED"]]


def test_a_redis_outage_falls_back_to_this_process(
    settings: Settings, session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    client = limited_client(settings, session_factory, redis_url="redis://127.0.0.1:1/0")
    with caplog.at_level(logging.WARNING, logger="services.shared_redis"):
        answers = [client.post("/graphql", json={"query": SIGN_IN}).get_json() for _ in range(4)]
    assert [codes(a) for a in answers] == [[], [], [], ["RATE_LIMITED"]]
    assert "Redis failed; falling back to this process" in caplog.text
    # One warning per outage window, not per request.
    assert caplog.text.count("Redis failed") == 1
