"""The client examples in examples/, run against a live userql."""

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from db import models
from schema.limits import IntrospectionPolicy
from services.auth import Access, TokenService
from settings import Environment, Settings
from tests.factories import make_users
from tests.servers import serve_in_thread

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"


@pytest.fixture
def live(
    settings: Settings,
    session_factory: sessionmaker[Session],
    admin: models.User,
    tokens: TokenService,
) -> Iterator[dict[str, str]]:
    make_users(session_factory, 3)
    # Production exposure: introspection only for the ADMIN the examples act as.
    configured = replace(
        settings, environment=Environment.PRODUCTION, introspection=IntrospectionPolicy.ADMIN
    )
    app = create_app(configured, session_factory=session_factory)
    with serve_in_thread(app) as url:
        yield {
            "PATH": "/usr/bin:/bin",
            "USERQL_URL": url,
            "USERQL_TOKEN": tokens.issue(user_id=admin.id, role=Access.ADMIN).token,
        }


def test_apollo_client_with_persisted_queries(live: dict[str, str]) -> None:
    node = shutil.which("node")
    assert node
    example = EXAMPLES / "apollo-client"
    assert (example / "node_modules" / "@apollo" / "client").is_dir(), "run `make install`"
    run = subprocess.run(
        [node, "persisted-queries.mjs"],
        cwd=example,
        env=live,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    # The first request misses (hash only), Apollo retries with the query, the next one hits.
    assert report["exchanges"] == [
        {
            "method": "GET",
            "sentFullQuery": False,
            "status": 400,
            "errors": ["PERSISTED_QUERY_NOT_FOUND"],
        },
        {"method": "POST", "sentFullQuery": True, "status": 200, "errors": []},
        {"method": "GET", "sentFullQuery": False, "status": 200, "errors": []},
    ]
    assert report["first"] == report["second"]
    assert report["first"]["users"]["totalCount"] == 4


def test_gql_introspects_and_validates_locally(live: dict[str, str]) -> None:
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "python-gql" / "introspect_and_validate.py")],
        env=live,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["introspection_requests"] == 1
    assert report["types"] > 20
    assert report["users"] == {"users": {"totalCount": 4}}
    assert report["local_error"] == "Cannot query field 'passwordHash' on type 'User'."
    # Introspection and the valid query went out; the broken document never did.
    assert report["requests_sent"] == 2


def _same_user_once(report: dict[str, Any], session_factory: sessionmaker[Session]) -> None:
    assert report["replayed"] == [False, True]
    assert report["first"] == report["retry"]
    created = report["first"]["createUser"]
    assert created["__typename"] == "CreateUserSuccess"
    with session_factory() as session:
        emails = session.scalars(
            select(models.User.email).where(models.User.email == created["user"]["email"])
        ).all()
    assert len(emails) == 1


def test_apollo_client_sends_an_idempotency_key(
    live: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    node = shutil.which("node")
    assert node
    run = subprocess.run(
        [node, "idempotent-mutation.mjs"],
        cwd=EXAMPLES / "apollo-client",
        env=live,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    _same_user_once(json.loads(run.stdout), session_factory)


def test_gql_sends_an_idempotency_key(
    live: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "python-gql" / "idempotent_mutation.py")],
        env=live,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    _same_user_once(json.loads(run.stdout), session_factory)
