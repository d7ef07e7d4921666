"""GET /metrics: who may read it, and what a request adds to it. The metrics live once per
process, so each test compares a scrape before with a scrape after."""

import dataclasses
import hashlib
import json
import logging
import os
import re
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from db import models
from services.auth import TokenService
from services.metrics import OTHER, MetricsAccess, OperationNames
from services.rate_limit import Rate
from settings import Settings
from tests.conftest import PROMTOOL_VARIABLE
from tests.graphql import CREATE_USER, authorized
from tests.http_stub import Behaviour, stub_server

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
METRICS_TOKEN = "m" * 24


def metered(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, metrics_access=MetricsAccess.LOOPBACK, **changes)


@pytest.fixture
def metered_app(settings: Settings, session_factory: sessionmaker[Session]) -> Flask:
    return create_app(metered(settings), session_factory=session_factory)


def scrape(client: FlaskClient, **options: Any) -> str:
    response = client.get("/metrics", **options)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    return response.get_data(as_text=True)


def samples(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def delta(client: FlaskClient, action: Callable[[], object]) -> Samples:
    before = samples(scrape(client))
    action()
    after = samples(scrape(client))
    return {
        key: value - before.get(key, 0.0)
        for key, value in after.items()
        if value != before.get(key, 0.0)
    }


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


def test_a_query_counts_by_name_type_and_outcome_with_its_latency_and_statements(
    metered_app: Flask, admin: models.User, tokens: TokenService
) -> None:
    client = authorized(metered_app.test_client(), tokens, admin)
    # A comment of its own: the document cache is the process's, and must not know it yet.
    page = "query Page { users(first: 2) { edges { node { id } } } }"
    query = {"query": f"{page} # {uuid.uuid4()}"}

    changed = delta(client, lambda: client.post("/graphql", json=query))
    requests = labels(operation_name="Page", operation_type="query", outcome="ok")
    assert changed[("userql_graphql_requests_total", requests)] == 1
    latency = labels(operation_name="Page", operation_type="query")
    assert changed[("userql_graphql_request_duration_seconds_count", latency)] == 1
    assert changed[("userql_sql_statements_per_request_count", ())] == 1
    # The caller's lookup and the page: two statements (and the fixture's savepoints).
    assert changed[("userql_sql_statements_per_request_sum", ())] >= 2
    assert changed[("userql_document_cache_lookups_total", labels(result="miss"))] == 1
    again = delta(client, lambda: client.post("/graphql", json=query))
    assert again[("userql_document_cache_lookups_total", labels(result="hit"))] == 1
    assert ("userql_document_cache_lookups_total", labels(result="miss")) not in again


def test_errors_count_by_code_and_the_request_as_an_error(metered_app: Flask) -> None:
    client = metered_app.test_client()
    changed = delta(client, lambda: client.post("/graphql", json={"query": "{ nope }"}))
    assert changed[("userql_graphql_errors_total", labels(code="GRAPHQL_VALIDATION_FAILED"))] == 1
    requests = labels(operation_name="(none)", operation_type="(none)", outcome="error")
    assert changed[("userql_graphql_requests_total", requests)] == 1
    bad_json = delta(
        client,
        lambda: client.post("/graphql", data="{", content_type="application/json"),
    )
    assert bad_json[("userql_graphql_requests_total", requests)] == 1


def test_rate_limit_refusals_count_by_limit(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    app = create_app(
        metered(settings, rate_limits={"sign_in": Rate(1, 60), "create_user": Rate(30, 60)}),
        session_factory=session_factory,
    )
    client = app.test_client()
    sign_in = {"query": 'mutation { signInWithGoogle(idToken: "x") { __typename } }'}

    def twice() -> None:
        client.post("/graphql", json=sign_in)
        client.post("/graphql", json=sign_in)

    changed = delta(client, twice)
    assert changed[("userql_rate_limit_refusals_total", labels(limit="sign_in"))] == 1
    assert changed[("userql_graphql_errors_total", labels(code="RATE_LIMITED"))] == 1


def test_persisted_queries_count_hits_and_misses(metered_app: Flask) -> None:
    client = metered_app.test_client()
    document = "query Typename { __typename }"
    digest = hashlib.sha256(document.encode()).hexdigest()
    persisted = {"persistedQuery": {"version": 1, "sha256Hash": digest}}

    def miss_register_hit() -> None:
        client.post("/graphql", json={"extensions": persisted})
        client.post("/graphql", json={"query": document, "extensions": persisted})
        client.post("/graphql", json={"extensions": persisted})

    changed = delta(client, miss_register_hit)
    assert changed[("userql_persisted_query_lookups_total", labels(result="miss"))] == 1
    assert changed[("userql_persisted_query_lookups_total", labels(result="hit"))] == 1


def test_the_webhook_counts_calls_by_outcome_with_their_latency(
    settings: Settings,
    session_factory: sessionmaker[Session],
    admin: models.User,
    tokens: TokenService,
) -> None:
    with stub_server(Behaviour(status=503)) as url:
        app = create_app(
            metered(settings, provisioning_webhook_url=url), session_factory=session_factory
        )
        client = authorized(app.test_client(), tokens, admin)
        variables = {"input": {"name": "Ada", "email": "ada@example.com"}}
        changed = delta(
            client,
            lambda: client.post("/graphql", json={"query": CREATE_USER, "variables": variables}),
        )
    assert changed[("userql_provisioning_webhook_calls_total", labels(outcome="refused"))] == 1
    duration = ("userql_provisioning_webhook_duration_seconds_count", labels(outcome="refused"))
    assert changed[duration] == 1


def test_build_info_and_the_pool_gauges_are_exported(metered_app: Flask) -> None:
    text = scrape(metered_app.test_client())
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "userql_build_info",
        "userql_db_pool_checked_out_connections",
        "userql_db_pool_overflow_connections",
    } <= families
    [build] = [
        sample
        for family in text_string_to_metric_families(text)
        if family.name == "userql_build_info"
        for sample in family.samples
    ]
    assert set(build.labels) == {"version", "python", "strawberry", "graphql_core"}
    assert build.value == 1


def test_operation_names_beyond_the_cap_share_one_label() -> None:
    names = OperationNames(cap=2)
    assert [names.label(name) for name in ("A", "B", "C", "A", None)] == [
        "A",
        "B",
        OTHER,
        "A",
        "(anonymous)",
    ]
    trusted = OperationNames(trusted={"Me"})
    assert (trusted.label("Me"), trusted.label("Other")) == ("Me", OTHER)


def test_no_label_carries_a_user_id_an_email_a_token_or_a_document(
    metered_app: Flask, admin: models.User, tokens: TokenService
) -> None:
    client = authorized(metered_app.test_client(), tokens, admin)
    token = client.environ_base["HTTP_AUTHORIZATION"].removeprefix("Bearer ")
    document = 'query Secretive { user(id: "ID") { email } }'.replace("ID", str(admin.id))
    client.post("/graphql", json={"query": document})
    variables = {"input": {"name": "Grace", "email": "grace.hopper@example.com"}}
    client.post("/graphql", json={"query": CREATE_USER, "variables": variables})
    text = scrape(client)
    for secret in (token, admin.email, "grace.hopper@example.com", "Grace", document, "email }"):
        assert secret not in text
    values = {
        value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for name, value in sample.labels.items()
        if name not in {"le", "version", "python", "strawberry", "graphql_core"}
    }
    assert str(admin.id) not in values


def test_loopback_access_refuses_other_addresses(metered_app: Flask) -> None:
    client = metered_app.test_client()
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert response.status_code == 403
    assert response.get_json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def test_token_access_needs_the_token(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    app = create_app(
        dataclasses.replace(
            settings, metrics_access=MetricsAccess.TOKEN, metrics_token=METRICS_TOKEN
        ),
        session_factory=session_factory,
    )
    client = app.test_client()
    for sent in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": METRICS_TOKEN}):
        response = client.get("/metrics", headers=sent)
        assert response.status_code == 401, sent
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    assert "userql_build_info" in scrape(client, headers=headers)
    # Any address, with the token: a scraper in another container.
    assert scrape(client, headers=headers, environ_base={"REMOTE_ADDR": "203.0.113.9"})


def test_metrics_off_serves_nothing_and_counts_nothing(app: Flask, metered_app: Flask) -> None:
    unmetered = app.test_client()
    assert unmetered.get("/metrics").status_code == 404
    changed = delta(
        metered_app.test_client(),
        lambda: unmetered.post("/graphql", json={"query": "query Quiet { __typename }"}),
    )
    assert not [key for key in changed if key[0].startswith("userql_graphql_")], changed


@pytest.mark.promtool
def test_promtool_finds_the_exposition_clean(
    metered_app: Flask, admin: models.User, tokens: TokenService
) -> None:
    client = authorized(metered_app.test_client(), tokens, admin)
    client.post(
        "/graphql", json={"query": "query Page { users(first: 1) { edges { node { id } } } }"}
    )
    client.post("/graphql", json={"query": "{ nope }"})
    result = subprocess.run(
        [os.environ[PROMTOOL_VARIABLE], "check", "metrics"],
        input=scrape(client),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def exported_names(text: str) -> set[str]:
    """Every series name the exposition can hold, samples or not."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in suffixes.get(family.type, ("",))
    }


def test_the_grafana_dashboard_uses_only_metrics_that_exist(
    metered_app: Flask, project_root: Path
) -> None:
    dashboard = json.loads((project_root / "docs" / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expression in expressions for name in re.findall(r"\buserql_\w+", expression)}
    exported = exported_names(scrape(metered_app.test_client()))
    assert used, "the dashboard queries userql's metrics"
    assert used <= exported, sorted(used - exported)
    # Every metric userql exports has a panel.
    families = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in used}
    assert families == {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in exported}


def test_a_scrape_logs_at_debug_like_the_health_probes(
    metered_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="userql.request")
    scrape(metered_app.test_client())
    [record] = [record for record in caplog.records if record.name == "userql.request"]
    assert (record.levelno, record.getMessage()) == (logging.DEBUG, "GET /metrics 200")
