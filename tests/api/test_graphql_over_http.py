"""The GraphQL-over-HTTP spec: media types, status codes, methods, sizes, batching, CSRF."""

import io
import json
from dataclasses import replace
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from settings import Settings

GRAPHQL_RESPONSE = "application/graphql-response+json"


def post(client: FlaskClient, accept: str | None, body: dict[str, Any]) -> Any:
    headers = {} if accept is None else {"Accept": accept}
    return client.post("/graphql", json=body, headers=headers)


REQUEST_ERRORS = {
    "parse": {"query": "{ me { "},
    "validation": {"query": "{ nope }"},
    "variable coercion": {
        "query": "query($n: Int) { users(first: $n) { totalCount } }",
        "variables": {"n": "x"},
    },
    "limit": {
        "query": "{ a: me { id } b: me { id } c: me { id } "
        + " ".join(f"x{i}: me {{ id }}" for i in range(20))
        + " }"
    },
}


@pytest.mark.parametrize("body", REQUEST_ERRORS.values(), ids=REQUEST_ERRORS.keys())
def test_request_errors_are_400_without_data_in_the_new_media_type(
    client: FlaskClient, body: dict[str, Any]
) -> None:
    response = post(client, GRAPHQL_RESPONSE, body)
    assert response.status_code == 400
    assert response.content_type == f"{GRAPHQL_RESPONSE}; charset=utf-8"
    payload = response.get_json(force=True)
    assert "data" not in payload
    assert payload["errors"]


@pytest.mark.parametrize("body", REQUEST_ERRORS.values(), ids=REQUEST_ERRORS.keys())
@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_request_errors_stay_200_for_application_json(
    client: FlaskClient, body: dict[str, Any], accept: str | None
) -> None:
    response = post(client, accept, body)
    assert (response.status_code, response.content_type) == (200, "application/json")
    assert response.get_json()["data"] is None


def test_a_client_accepting_both_gets_the_new_media_type(client: FlaskClient) -> None:
    # graphql-request and urql send exactly this.
    response = post(client, f"{GRAPHQL_RESPONSE}, application/json", {"query": "{ me { id } }"})
    assert response.content_type == f"{GRAPHQL_RESPONSE}; charset=utf-8"
    assert response.get_json(force=True) == {"data": {"me": None}}
    preferring_json = post(
        client, f"application/json, {GRAPHQL_RESPONSE};q=0.5", {"query": "{ me { id } }"}
    )
    assert preferring_json.content_type == "application/json"


def test_media_types_are_matched_whatever_their_case(client: FlaskClient) -> None:
    response = post(client, "Application/GraphQL-Response+JSON", {"query": "{ nope }"})
    assert (response.status_code, response.content_type) == (
        400,
        f"{GRAPHQL_RESPONSE}; charset=utf-8",
    )


def test_execution_errors_keep_200_and_data(client: FlaskClient) -> None:
    # An error at a field means execution happened: 200 in both media types.
    response = post(client, GRAPHQL_RESPONSE, {"query": "{ me { id } users { totalCount } }"})
    assert response.status_code == 200
    payload = response.get_json(force=True)
    assert payload["data"] is None
    assert payload["errors"][0]["path"] == ["users"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/graphql",
        "application/json; charset=latin-1",
        None,
    ],
)
def test_anything_but_json_posts_is_415(client: FlaskClient, content_type: str | None) -> None:
    # HTML forms can send the first three cross-site without a preflight: that is the CSRF.
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = client.post("/graphql", data='{"query": "{ me { id } }"}', headers=headers)
    assert response.status_code == 415
    assert response.get_json()["errors"][0]["extensions"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


def test_json_with_a_utf8_charset_is_fine(client: FlaskClient) -> None:
    response = client.post(
        "/graphql",
        data='{"query": "{ me { id } }"}',
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )
    assert response.get_json() == {"data": {"me": None}}


def test_a_body_over_the_limit_is_413(client: FlaskClient) -> None:
    huge = "{ " + "me { id } " * 110_000 + "}"  # about 1 MiB
    response = client.post("/graphql", json={"query": huge})
    assert response.status_code == 413
    assert response.get_json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


def chunked(client: FlaskClient, body: bytes) -> Any:
    """A body without Content-Length, as gunicorn hands on a chunked one."""
    return client.post(
        "/graphql",
        input_stream=io.BytesIO(body),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_a_chunked_body_over_the_limit_is_413_not_cut_and_parsed(client: FlaskClient) -> None:
    # Valid JSON whose first 100 KiB alone would parse as a query.
    body = json.dumps({"query": "{ me { id } }", "pad": "x" * 200_000}).encode()
    response = chunked(client, body)
    assert response.status_code == 413
    assert response.get_json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


def test_a_chunked_body_within_the_limit_is_read_whole(client: FlaskClient) -> None:
    response = chunked(client, json.dumps({"query": "{ me { id } }"}).encode())
    assert response.get_json() == {"data": {"me": None}}


def test_batches_are_off_by_default(client: FlaskClient) -> None:
    response = client.post("/graphql", json=[{"query": "{ me { id } }"}] * 100)
    assert response.status_code == 400
    assert response.get_json()["errors"][0]["message"] == "Batching is not enabled."


def test_batches_when_enabled_up_to_their_maximum(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    app = create_app(replace(settings, batch_max=3), session_factory=session_factory)
    client = app.test_client()
    ok = client.post("/graphql", json=[{"query": "{ me { id } }"}, {"query": "{ nope }"}])
    assert ok.status_code == 200
    first, second = ok.get_json()
    assert first == {"data": {"me": None}}
    assert second["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    too_many = client.post("/graphql", json=[{"query": "{ me { id } }"}] * 4)
    assert too_many.status_code == 400
    assert too_many.get_json()["errors"][0]["message"] == "A batch may hold at most 3 operations."


def test_get_needs_a_preflight_header_when_csrf_protection_is_on(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    app = create_app(
        replace(settings, csrf_require_preflight=True), session_factory=session_factory
    )
    client = app.test_client()
    query = {"query": "{ me { id } }"}
    refused = client.get("/graphql", query_string=query)
    assert refused.status_code == 400
    assert "GraphQL-Require-Preflight" in refused.get_json()["errors"][0]["message"]
    for header in (
        "GraphQL-Require-Preflight",
        "Apollo-Require-Preflight",
        "X-Apollo-Operation-Name",
    ):
        allowed = client.get("/graphql", query_string=query, headers={header: "1"})
        assert allowed.get_json() == {"data": {"me": None}}
    assert client.post("/graphql", json=query).get_json() == {"data": {"me": None}}
