"""The fast path (schema.fast) changes how operations run, never what they answer or which
extensions see them."""

import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker
from strawberry.extensions import SchemaExtension

from app import create_app
from db import models
from schema import fast, limits, root
from services.auth import TokenService
from settings import Settings
from tests.factories import make_user, make_users
from tests.fast_execution import serve
from tests.graphql import authorized


class Recorder(SchemaExtension):
    """A fourth extension, which the schema's own know nothing about."""

    operations: ClassVar[list[list[str]]] = []

    def on_operation(self) -> Iterator[None]:
        events = [f"operation: {self.execution_context.query}"]
        Recorder.operations.append(events)
        yield
        result = self.execution_context.result
        events.append(f"operation done: {None if result is None else result.errors}")

    def on_parse(self) -> Iterator[None]:
        Recorder.operations[-1].append("parse")
        yield
        parsed = self.execution_context.graphql_document is not None
        Recorder.operations[-1].append(f"parsed: {parsed}")

    def on_validate(self) -> Iterator[None]:
        Recorder.operations[-1].append("validate")
        yield
        errors = self.execution_context.pre_execution_errors
        Recorder.operations[-1].append(f"validated: {errors}")

    def on_execute(self) -> Iterator[None]:
        execution = self.execution_context
        Recorder.operations[-1].append(f"execute: {execution.operation_type.value}")
        yield
        Recorder.operations[-1].append("executed")

    def get_results(self) -> dict[str, Any]:
        return {"recorded": len(Recorder.operations[-1])}


@pytest.fixture
def recorded_client(
    settings: Settings,
    session_factory: sessionmaker[Session],
    tokens: TokenService,
    monkeypatch: pytest.MonkeyPatch,
) -> FlaskClient:
    serve(monkeypatch, root.build_schema((*root.EXTENSIONS, Recorder)))
    admin = make_user(session_factory, email="admin@example.com", role=models.Role.ADMIN)
    app = create_app(settings, session_factory=session_factory)
    return authorized(app.test_client(), tokens, admin)


def _validation_cache_hits() -> int:
    return limits._cached_validation.cache_info().hits


@pytest.mark.parametrize(
    "query",
    [
        "query One($id: ID!) { user(id: $id) { id name email } }",
        "{ users(first: 2) { totalCount edges { node { id } } } }",
        "{ user(id: 0) { id } }",
    ],
    ids=["user", "users", "field error"],
)
def test_an_extra_extension_sees_a_repeated_operation_as_the_first(
    recorded_client: FlaskClient, session_factory: sessionmaker[Session], query: str
) -> None:
    make_users(session_factory, 2)
    body = {"query": query, "variables": {"id": "1"}}
    Recorder.operations.clear()
    first = recorded_client.post("/graphql", json=body)
    hits = _validation_cache_hits()
    again = recorded_client.post("/graphql", json=body)

    assert _validation_cache_hits() > hits  # the repeat was neither parsed nor validated again
    assert again.get_data() == first.get_data()
    assert first.get_json()["extensions"] == {"recorded": 8}
    seen_first, seen_again = Recorder.operations
    assert seen_again == seen_first
    assert [event.split(":")[0] for event in seen_first] == [
        "operation",
        "parse",
        "parsed",
        "validate",
        "validated",
        "execute",
        "executed",
        "operation done",
    ]


@pytest.fixture
def fast_admin_client(
    settings: Settings,
    session_factory: sessionmaker[Session],
    tokens: TokenService,
    monkeypatch: pytest.MonkeyPatch,
) -> FlaskClient:
    serve(monkeypatch, root.executable_schema(fast_execution=True))
    admin = make_user(session_factory, email="admin@example.com", role=models.Role.ADMIN)
    app = create_app(settings, session_factory=session_factory)
    return authorized(app.test_client(), tokens, admin)


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "schema.fast"]


def test_a_plan_that_fails_is_answered_by_the_general_path_and_logged_once(
    fast_admin_client: FlaskClient,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_users(session_factory, 3)
    query = {"query": "{ users(first: 3) { edges { node { id name role } } } }"}
    expected = fast_admin_client.post("/graphql", json=query).get_data()

    def upgraded(_layouts: fast.RowLayouts, _row: Any) -> Any:
        # As if SQLAlchemy had renamed what the fast path reads a row's layout from.
        raise AttributeError("'Row' object has no attribute '_key_to_index'")

    monkeypatch.setattr(fast.RowLayouts, "complete_for", upgraded)
    fast.fallbacks.forget()
    with caplog.at_level(logging.WARNING, logger="schema.fast"):
        first = fast_admin_client.post("/graphql", json=query)
        logged, counted = _records(caplog), fast.fallbacks.count
        again = fast_admin_client.post("/graphql", json=query)

    assert first.get_data() == again.get_data() == expected
    assert counted > 0
    assert fast.fallbacks.count == 2 * counted  # counted each time
    assert _records(caplog) == logged  # logged once per plan: the first time
    assert logged
    for record in logged:
        assert (record.name, record.levelno) == ("schema.fast", logging.WARNING)
        assert record.exc_info is not None
        assert "_key_to_index" in str(record.exc_info[1])


def test_without_the_fast_path_rules_hold_alike(
    settings: Settings,
    session_factory: sessionmaker[Session],
    tokens: TokenService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stock = root.executable_schema(fast_execution=False)
    assert stock.execution_context_class is not fast.FastExecutionContext
    assert not issubclass(stock.execution_context_class or object, fast.FastExecutionContext)
    assert not isinstance(stock, fast.FastSchema)
    serve(monkeypatch, stock)
    member = make_user(session_factory, email="member@example.com")
    make_users(session_factory, 2)
    app = create_app(settings, session_factory=session_factory)
    client = authorized(app.test_client(), tokens, member)

    page = client.post(
        "/graphql", json={"query": "{ users { edges { node { id email } } } }"}
    ).get_json()

    emails = {edge["node"]["id"]: edge["node"]["email"] for edge in page["data"]["users"]["edges"]}
    assert emails.pop(str(member.id)) == "member@example.com"
    assert emails
    assert set(emails.values()) == {None}
    assert [error["extensions"]["code"] for error in page["errors"]] == ["FORBIDDEN"] * len(emails)
