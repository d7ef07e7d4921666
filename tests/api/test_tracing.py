"""OpenTelemetry traces, through the SDK's in-memory exporter: a SERVER span per request that
continues the caller's `traceparent`, a child per GraphQL operation named by its type, SQL
and outgoing calls as CLIENT children, and the ids in the request's log line. The API tests
run on the fast path and again without it (tests/api/conftest.py), so both paths are held
to this."""

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from db import models
from services.auth import TokenService
from settings import Settings
from tests.google_fake import CLIENT_ID, certs_body, id_token, make_google_key
from tests.graphql import CREATE_USER, authorized
from tests.http_stub import Behaviour, stub_server
from web.request_log import JsonLogFormatter

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def traced_app(
    settings: Settings, session_factory: sessionmaker[Session], provider: TracerProvider
) -> Flask:
    return create_app(settings, session_factory=session_factory, tracer_provider=provider)


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def test_a_query_is_one_server_span_an_operation_span_and_its_sql(
    traced_app: Flask,
    exporter: InMemorySpanExporter,
    admin: models.User,
    tokens: TokenService,
    caplog: pytest.LogCaptureFixture,
    database_url: str,
) -> None:
    caplog.handler.setFormatter(JsonLogFormatter())
    caplog.set_level(logging.INFO, logger="userql.request")
    client = authorized(traced_app.test_client(), tokens, admin)
    response = client.post(
        "/graphql",
        json={
            "query": "query Page { users(first: 2) { edges { node { id } } } }",
            "operationName": "Page",
        },
        headers={"traceparent": TRACEPARENT},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    spans = exporter.get_finished_spans()
    [server] = by_name(spans, "POST /graphql")
    [operation] = by_name(spans, "query")
    sql = [span for span in spans if span.kind is SpanKind.CLIENT]
    assert server.kind is SpanKind.SERVER
    assert f"{server.context.trace_id:032x}" == TRACE_ID, "the caller's trace goes on"
    assert parent_of(server) == int(PARENT_ID, 16)
    assert server.parent is not None
    assert server.parent.is_remote
    assert server.attributes is not None
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/graphql"
    assert server.attributes["http.response.status_code"] == 200
    assert operation.kind is SpanKind.INTERNAL
    assert parent_of(operation) == server.context.span_id
    assert operation.attributes == {
        "graphql.operation.type": "query",
        "graphql.operation.name": "Page",
    }
    assert operation.status.status_code is StatusCode.UNSET
    # Authentication reads the caller under the request; the page's reads under the query.
    assert {parent_of(span) for span in sql} == {server.context.span_id, operation.context.span_id}
    # The test's transaction is the fixture's: its savepoints are statements too.
    selects = [span for span in sql if span.name == "SELECT"]
    assert len(selects) >= 2, [span.name for span in sql]
    for span in sql:
        attributes = dict(span.attributes or {})
        assert attributes["db.operation.name"] == span.name
        assert str(attributes["db.query.text"]).upper().startswith(span.name)
    system = database_url.partition(":")[0].partition("+")[0]
    assert all(span.attributes and span.attributes["db.system.name"] == system for span in sql)
    assert all(span.context.trace_id == server.context.trace_id for span in spans)
    [line] = [json.loads(text) for text in caplog.text.splitlines()]
    assert (line["trace_id"], line["span_id"]) == (TRACE_ID, f"{server.context.span_id:016x}")


def test_sql_spans_hold_the_statement_never_its_values(
    traced_app: Flask, exporter: InMemorySpanExporter, admin: models.User, tokens: TokenService
) -> None:
    client = authorized(traced_app.test_client(), tokens, admin)
    variables = {"input": {"name": "Secret Name", "email": "secret@example.com"}}
    response = client.post("/graphql", json={"query": CREATE_USER, "variables": variables})
    assert response.get_json()["data"]["createUser"]["__typename"] == "CreateUserSuccess"
    spans = exporter.get_finished_spans()
    inserts = [span for span in spans if span.name == "INSERT"]
    assert inserts, [span.name for span in spans]
    [operation] = by_name(spans, "mutation")
    assert operation.attributes == {
        "graphql.operation.type": "mutation",
        "graphql.operation.name": "Create",
    }
    dumped = json.dumps([dict(span.attributes or {}) for span in spans])
    assert "users" in dumped
    assert "secret@example.com" not in dumped
    assert "Secret Name" not in dumped


def test_an_invalid_document_is_an_operation_span_with_an_error(
    traced_app: Flask, exporter: InMemorySpanExporter
) -> None:
    response = traced_app.test_client().post("/graphql", json={"query": "{ nope }"})
    assert response.status_code == 200
    spans = exporter.get_finished_spans()
    [operation] = by_name(spans, "GraphQL Operation")
    assert operation.status.status_code is StatusCode.ERROR
    assert operation.attributes == {"error.type": "GRAPHQL_VALIDATION_FAILED"}


def test_without_a_traceparent_a_request_starts_a_trace(
    traced_app: Flask, exporter: InMemorySpanExporter
) -> None:
    traced_app.test_client().post("/graphql", json={"query": "{ __typename }"})
    [server] = by_name(exporter.get_finished_spans(), "POST /graphql")
    assert server.parent is None


def create_with_webhook(
    behaviour: Behaviour,
    settings: Settings,
    session_factory: sessionmaker[Session],
    provider: TracerProvider,
    client_of: Callable[[FlaskClient], FlaskClient],
) -> dict[str, Any]:
    """createUser, traced, with the provisioning webhook answering as `behaviour` says."""
    with stub_server(behaviour, "/hook?token=secret-in-query") as url:
        app = create_app(
            dataclasses.replace(settings, provisioning_webhook_url=url),
            session_factory=session_factory,
            tracer_provider=provider,
        )
        variables = {"input": {"name": "Ada", "email": "ada@example.com"}}
        response = client_of(app.test_client()).post(
            "/graphql",
            json={"query": CREATE_USER, "variables": variables},
            headers={"traceparent": TRACEPARENT},
        )
    result: dict[str, Any] = response.get_json()["data"]["createUser"]
    return result


def webhook_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    [webhook] = [
        span
        for span in exporter.get_finished_spans()
        if span.name == "POST" and span.kind is SpanKind.CLIENT
    ]
    return webhook


def test_the_webhook_call_is_a_client_span_that_carries_the_trace_on(
    settings: Settings,
    session_factory: sessionmaker[Session],
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    admin: models.User,
    tokens: TokenService,
) -> None:
    behaviour = Behaviour()
    result = create_with_webhook(
        behaviour, settings, session_factory, provider, lambda c: authorized(c, tokens, admin)
    )
    assert result["__typename"] == "CreateUserSuccess"
    webhook = webhook_span(exporter)
    [operation] = by_name(exporter.get_finished_spans(), "mutation")
    assert parent_of(webhook) == operation.context.span_id
    attributes: dict[str, Any] = dict(webhook.attributes or {})
    assert attributes["http.response.status_code"] == 200
    assert attributes["url.full"].endswith("/hook"), "no query string: it may hold a secret"
    [received] = behaviour.received
    sent = {name.lower(): value for name, value in received["headers"].items()}
    assert sent["traceparent"] == f"00-{TRACE_ID}-{webhook.context.span_id:016x}-01"


def test_a_refused_webhook_marks_its_span(
    settings: Settings,
    session_factory: sessionmaker[Session],
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    admin: models.User,
    tokens: TokenService,
) -> None:
    result = create_with_webhook(
        Behaviour(status=409),
        settings,
        session_factory,
        provider,
        lambda c: authorized(c, tokens, admin),
    )
    assert result["__typename"] == "ProvisioningFailed"
    webhook = webhook_span(exporter)
    assert webhook.status.status_code is StatusCode.ERROR
    assert (webhook.attributes or {})["error.type"] == "refused"
    assert (webhook.attributes or {})["http.response.status_code"] == 409


def test_with_tracing_off_nothing_is_traced_and_the_log_line_has_no_trace(
    app: Flask, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.setFormatter(JsonLogFormatter())
    caplog.set_level(logging.INFO, logger="userql.request")
    app.test_client().post(
        "/graphql", json={"query": "{ __typename }"}, headers={"traceparent": TRACEPARENT}
    )
    assert exporter.get_finished_spans() == ()
    [line] = [json.loads(text) for text in caplog.text.splitlines()]
    assert "trace_id" not in line
    assert "span_id" not in line


def test_fetching_google_s_certificates_is_a_client_span_that_carries_the_trace_on(
    settings: Settings,
    session_factory: sessionmaker[Session],
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    key = make_google_key("trace-key")
    behaviour = Behaviour(
        body=certs_body(key),
        headers={"Content-Type": "application/json", "Cache-Control": "public, max-age=3600"},
    )
    with stub_server(behaviour, "/oauth2/v1/certs") as url:
        app = create_app(
            dataclasses.replace(settings, google_client_ids=(CLIENT_ID,), google_certs_url=url),
            session_factory=session_factory,
            tracer_provider=provider,
        )
        sign_in = {
            "query": "mutation($t: String!) { signInWithGoogle(idToken: $t) { __typename } }",
            "variables": {"t": id_token(key)},
        }
        for _ in range(2):  # the second sign-in finds the certificates cached
            response = app.test_client().post(
                "/graphql", json=sign_in, headers={"traceparent": TRACEPARENT}
            )
            assert response.get_json()["data"]["signInWithGoogle"]["__typename"] == "SignInSuccess"
    fetches = [
        span
        for span in exporter.get_finished_spans()
        if span.name == "GET" and span.kind is SpanKind.CLIENT
    ]
    [fetch] = fetches
    [operation, _] = by_name(exporter.get_finished_spans(), "mutation")
    assert parent_of(fetch) == operation.context.span_id
    assert (fetch.attributes or {})["http.response.status_code"] == 200
    assert str((fetch.attributes or {})["url.full"]).endswith("/oauth2/v1/certs")
    [received] = behaviour.received
    sent = {name.lower(): value for name, value in received["headers"].items()}
    assert sent["traceparent"] == f"00-{TRACE_ID}-{fetch.context.span_id:016x}-01"
