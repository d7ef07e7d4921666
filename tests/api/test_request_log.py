"""One JSON line per request; request ids in and out; never a token or a variable."""

import json
import logging
import os
import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from db import models
from services import users as user_service
from services.auth import Access, TokenService
from services.unit_of_work import UnitOfWork
from tests.graphql import CREATE_USER
from web.arrival import ARRIVAL
from web.request_log import JsonLogFormatter


@pytest.fixture
def json_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.handler.setFormatter(JsonLogFormatter())
    # On the logger itself: each app factory sets the root logger to LOG_LEVEL.
    caplog.set_level(logging.DEBUG, logger="userql.request")
    return caplog


def lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(line) for line in caplog.text.splitlines()]


def request_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [line for line in lines(caplog) if line["logger"] == "userql.request"]


def test_a_request_id_goes_in_and_out(
    json_log: pytest.LogCaptureFixture, user_client: FlaskClient, member: models.User
) -> None:
    response = user_client.post(
        "/graphql",
        json={"query": "query Me { me { id } }", "operationName": "Me"},
        headers={"X-Request-ID": "abc"},
    )
    assert response.headers["X-Request-ID"] == "abc"
    [line] = request_lines(json_log)
    assert line == {
        "time": line["time"],
        "level": "INFO",
        "logger": "userql.request",
        "pid": os.getpid(),
        "message": "POST /graphql 200",
        "request_id": "abc",
        "method": "POST",
        "path": "/graphql",
        "status": 200,
        "duration_ms": line["duration_ms"],
        "operation_name": "Me",
        "operation_type": "query",
        "principal_id": member.id,
        "outcome": "ok",
        "error_codes": [],
    }
    assert line["time"].endswith("Z")
    assert line["duration_ms"] >= 0


@pytest.mark.parametrize("incoming", [None, "", "x" * 129, "has space", 'quo"te', "é"])
def test_a_missing_or_odd_request_id_is_replaced(
    json_log: pytest.LogCaptureFixture, client: FlaskClient, incoming: str | None
) -> None:
    headers = {} if incoming is None else {"X-Request-ID": incoming}
    response = client.post("/graphql", json={"query": "{ me { id } }"}, headers=headers)
    generated = response.headers["X-Request-ID"]
    assert len(generated) == 32
    assert generated != incoming
    assert request_lines(json_log)[0]["request_id"] == generated


def test_client_errors_log_at_info_without_a_traceback(
    json_log: pytest.LogCaptureFixture, client: FlaskClient
) -> None:
    client.post("/graphql", json={"query": "{ users { totalCount } }"})
    client.post("/graphql", json={"query": "{ nope }"})
    client.post("/graphql", data="{", content_type="application/json")
    logged = lines(json_log)
    assert [(line["level"], line["status"], line["error_codes"]) for line in logged] == [
        ("INFO", 200, ["UNAUTHENTICATED"]),
        ("INFO", 200, ["GRAPHQL_VALIDATION_FAILED"]),
        ("INFO", 400, ["BAD_REQUEST"]),
    ]
    assert all(line["outcome"] == "error" and "traceback" not in line for line in logged)


def test_unexpected_errors_log_at_error_with_a_traceback(
    json_log: pytest.LogCaptureFixture, user_client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(user_service, "get_user", explode)
    user_client.post("/graphql", json={"query": '{ user(id: "1") { id } }'})
    error, request = lines(json_log)
    assert (error["level"], error["logger"]) == ("ERROR", "schema.errors")
    assert "RuntimeError: boom" in error["traceback"]
    assert error["request_id"] == request["request_id"]
    assert (request["level"], request["error_codes"]) == ("ERROR", ["INTERNAL"])


def test_health_probes_log_at_debug(
    json_log: pytest.LogCaptureFixture, client: FlaskClient
) -> None:
    client.get("/livez")
    [line] = request_lines(json_log)
    assert (line["level"], line["path"]) == ("DEBUG", "/livez")


def test_no_token_secret_or_variable_reaches_the_log(
    json_log: pytest.LogCaptureFixture,
    client: FlaskClient,
    admin: models.User,
    tokens: TokenService,
) -> None:
    token = tokens.issue(user_id=admin.id, role=Access.ADMIN).token
    secret_email = "very-private-person@example.com"
    for authorization in (f"Bearer {token}", f"Bearer {token}x", "Bearer " + "e" * 5000):
        client.post(
            "/graphql",
            json={
                "query": CREATE_USER,
                "variables": {"input": {"name": "P", "email": secret_email}},
            },
            headers={"Authorization": authorization},
        )
    text = json_log.text
    assert len(request_lines(json_log)) == 3
    for leak in (token, token[-20:], "Bearer", secret_email, "eeeeeeeeee"):
        assert leak not in text


@pytest.mark.parametrize(
    "body",
    [
        {"query": "query Me { me { id } }"},
        {"query": "query A { me { id } } mutation B { __typename }", "operationName": "B"},
        {"query": "{ users(first: 1000) { totalCount } }"},
    ],
    ids=["query", "mutation by name", "an error"],
)
def test_an_operation_sent_again_is_logged_the_same(
    json_log: pytest.LogCaptureFixture, user_client: FlaskClient, body: dict[str, Any]
) -> None:
    # The second time round the document is known, and runs as an admitted operation.
    user_client.post("/graphql", json=body)
    user_client.post("/graphql", json=body)
    first, again = (
        {
            key: value
            for key, value in line.items()
            if key not in ("time", "request_id", "duration_ms")
        }
        for line in request_lines(json_log)
    )
    assert first == again
    assert first["operation_type"] == ("mutation" if "operationName" in body else "query")


@pytest.fixture
def arrived_seconds_ago() -> Any:
    """Plays gunicorn's worker (web/worker.py), which tells the app when a request arrived."""
    tokens = []

    def arrive(seconds: float) -> None:
        tokens.append(ARRIVAL.set(time.monotonic() - seconds))

    yield arrive
    for token in reversed(tokens):
        ARRIVAL.reset(token)


def test_the_duration_counts_from_the_arrival(
    json_log: pytest.LogCaptureFixture, user_client: FlaskClient, arrived_seconds_ago: Any
) -> None:
    arrived_seconds_ago(1.0)  # it waited a second for a thread
    assert user_client.post("/graphql", json={"query": "{ me { id } }"}).status_code == 200
    [line] = request_lines(json_log)
    assert line["duration_ms"] >= 1000


def test_a_request_that_queued_past_its_budget_is_not_run(
    json_log: pytest.LogCaptureFixture,
    admin_client: FlaskClient,
    session_factory: Any,
    arrived_seconds_ago: Any,
) -> None:
    arrived_seconds_ago(11.0)  # REQUEST_TIMEOUT_SECONDS is 10 by default
    variables = {"input": {"name": "Too Late", "email": "late@example.com"}}
    response = admin_client.post("/graphql", json={"query": CREATE_USER, "variables": variables})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert [e["extensions"]["code"] for e in response.get_json()["errors"]] == ["REQUEST_TIMEOUT"]
    stored = user_service.list_users(UnitOfWork(session_factory), first=10).users
    assert "late@example.com" not in [user.email for user in stored]
    [line] = request_lines(json_log)
    assert (line["status"], line["error_codes"]) == (503, ["REQUEST_TIMEOUT"])
