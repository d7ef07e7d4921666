"""Apollo's Automatic Persisted Queries, and trusted documents."""

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from db import models
from services.auth import TokenService
from settings import ConfigError, Settings
from tests.graphql import authorized

ME = "query Me { me { id } }"
USERS = "query Count { users { totalCount } }"


def sha(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def persisted(key: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": key}}


def test_the_apq_round_trip(client: FlaskClient) -> None:
    miss = client.post("/graphql", json={"extensions": persisted(sha(ME))}).get_json()
    assert miss == {
        "data": None,
        "errors": [
            {
                "message": "PersistedQueryNotFound",
                "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"},
            }
        ],
    }
    register = client.post("/graphql", json={"query": ME, "extensions": persisted(sha(ME))})
    assert register.get_json() == {"data": {"me": None}}
    hit = client.post("/graphql", json={"extensions": persisted(sha(ME))})
    assert hit.get_json() == {"data": {"me": None}}


def test_a_hashed_query_over_get_for_cdn_caching(client: FlaskClient) -> None:
    client.post("/graphql", json={"query": ME, "extensions": persisted(sha(ME))})
    response = client.get(
        "/graphql",
        query_string={"operationName": "Me", "extensions": json.dumps(persisted(sha(ME)))},
    )
    assert response.get_json() == {"data": {"me": None}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query": ME, "extensions": persisted(sha(USERS))}, "provided sha does not match query"),
        ({"extensions": persisted("not-a-hash")}, "persistedQuery needs a sha256Hash in hex."),
        ({"extensions": {"persistedQuery": "yes"}}, "persistedQuery needs a sha256Hash in hex."),
    ],
)
def test_bad_persisted_queries(client: FlaskClient, body: dict[str, Any], message: str) -> None:
    [error] = client.post("/graphql", json=body).get_json()["errors"]
    assert error == {"message": message, "extensions": {"code": "PERSISTED_QUERY_INVALID"}}


def test_the_new_media_type_gets_400_for_a_miss(client: FlaskClient) -> None:
    response = client.post(
        "/graphql",
        json={"extensions": persisted(sha(USERS))},
        headers={"Accept": "application/graphql-response+json"},
    )
    assert response.status_code == 400


@pytest.fixture
def manifest_app(settings: Settings, session_factory: sessionmaker[Session]) -> Flask:
    trusted = {sha(ME): ME}
    return create_app(replace(settings, trusted_documents=trusted), session_factory=session_factory)


def test_trusted_documents_refuse_other_operations_for_non_admins(
    manifest_app: Flask, member: models.User, tokens: TokenService
) -> None:
    anonymous = manifest_app.test_client()
    user = authorized(manifest_app.test_client(), tokens, member)
    for client, me in ((anonymous, None), (user, {"id": str(member.id)})):
        assert client.post("/graphql", json={"query": ME}).get_json() == {"data": {"me": me}}
        by_hash = client.post("/graphql", json={"extensions": persisted(sha(ME))})
        assert by_hash.get_json() == {"data": {"me": me}}
        [error] = client.post("/graphql", json={"query": USERS}).get_json()["errors"]
        assert error == {
            "message": "Only the operations in the trusted-documents manifest may run.",
            "extensions": {"code": "OPERATION_NOT_TRUSTED"},
        }
        # Nor can they register a new one.
        body = {"query": USERS, "extensions": persisted(sha(USERS))}
        refused = client.post("/graphql", json=body).get_json()
        assert refused["errors"][0]["extensions"]["code"] == "OPERATION_NOT_TRUSTED"


def test_trusted_documents_let_admins_run_anything(
    manifest_app: Flask, admin: models.User, tokens: TokenService
) -> None:
    client = authorized(manifest_app.test_client(), tokens, admin)
    assert client.post("/graphql", json={"query": USERS}).get_json() == {
        "data": {"users": {"totalCount": 1}}
    }


def test_the_manifest_is_checked_at_startup(tmp_path: Path) -> None:
    good, bad, shape = tmp_path / "good.json", tmp_path / "bad.json", tmp_path / "shape.json"
    good.write_text(json.dumps({sha(ME): ME}))
    bad.write_text(json.dumps({sha(USERS): ME}))
    shape.write_text(json.dumps([ME]))
    environ = {"JWT_SECRET": "x" * 32}
    settings = Settings.from_env(
        {**environ, "TRUSTED_DOCUMENTS": str(good)}, dotenv_path=tmp_path / "x"
    )
    assert settings.trusted_documents == {sha(ME): ME}
    with pytest.raises(ConfigError, match="is not the SHA-256 of its document"):
        Settings.from_env({**environ, "TRUSTED_DOCUMENTS": str(bad)}, dotenv_path=tmp_path / "x")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        Settings.from_env({**environ, "TRUSTED_DOCUMENTS": str(shape)}, dotenv_path=tmp_path / "x")


@pytest.mark.redis
def test_persisted_queries_are_shared_through_redis(
    settings: Settings, session_factory: sessionmaker[Session], redis_url: str
) -> None:
    configured = replace(settings, redis_url=redis_url)
    first = create_app(configured, session_factory=session_factory).test_client()
    second = create_app(configured, session_factory=session_factory).test_client()
    first.post("/graphql", json={"query": ME, "extensions": persisted(sha(ME))})
    assert second.post("/graphql", json={"extensions": persisted(sha(ME))}).get_json() == {
        "data": {"me": None}
    }


def test_a_redis_outage_keeps_persisted_queries_in_this_process(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    configured = replace(settings, redis_url="redis://127.0.0.1:1/0")
    client = create_app(configured, session_factory=session_factory).test_client()
    client.post("/graphql", json={"query": ME, "extensions": persisted(sha(ME))})
    assert client.post("/graphql", json={"extensions": persisted(sha(ME))}).get_json() == {
        "data": {"me": None}
    }
