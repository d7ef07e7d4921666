"""GraphiQL served by userql itself: no other origin, a strict CSP, pinned unmodified assets,
and in development a role switcher."""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import strawberry
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from db import models
from schema.limits import IntrospectionPolicy
from settings import Environment, Settings
from tests.factories import make_user
from tests.graphql import gql
from tests.servers import serve_in_thread
from web.graphiql import GRAPHIQL_CSP, GRAPHIQL_DIR

NODE_TOOLS = Path(__file__).resolve().parent.parent / "node"
HTML = {"Accept": "text/html"}


@pytest.fixture
def development(settings: Settings, session_factory: sessionmaker[Session]) -> Flask:
    configured = replace(
        settings,
        environment=Environment.DEVELOPMENT,
        graphiql=True,
        introspection=IntrospectionPolicy.EVERYONE,
    )
    return create_app(configured, session_factory=session_factory)


def asset_paths(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/graphiql/[^"]+)"', html)


def test_the_page_uses_only_its_own_origin(development: Flask) -> None:
    client = development.test_client()
    page = client.get("/graphql", headers=HTML)
    assert page.status_code == 200
    assert page.headers["Content-Security-Policy"] == GRAPHIQL_CSP
    assert "script-src 'self';" in GRAPHIQL_CSP
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = page.get_data(as_text=True)
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)
    assert "<script>" not in html  # nothing inline: the CSP needs no hash or nonce
    paths = asset_paths(html)
    assert len(paths) == 8
    for path in paths:
        with client.get(path) as asset:
            assert asset.status_code == 200, path
            assert asset.headers["Cache-Control"] == "public, max-age=31536000, immutable"


def test_only_the_assets_are_served(development: Flask) -> None:
    client = development.test_client()
    for path in (
        "package.json",
        "vendor.mjs",
        "index.html",
        "NOTICE",
        "../app.py",
        "vendor/../package.json",
    ):
        assert client.get(f"/graphiql/{path}").status_code == 404, path


def test_the_vendored_files_are_the_pinned_npm_files() -> None:
    # Strawberry's own template pins the same versions with SRI hashes of the CDN copies.
    template = (Path(strawberry.__file__).parent / "static" / "graphiql.html").read_text()
    pinned = dict(re.findall(r'unpkg\.com/([^"]+)"\s+integrity="sha384-([^"]+)"', template))
    ours = [p for p in pinned if not p.startswith("js-cookie")]
    assert len(ours) == 6
    for path in ours:
        digest = hashlib.sha384((GRAPHIQL_DIR / "vendor" / path).read_bytes()).digest()
        assert base64.b64encode(digest).decode() == pinned[path], path


def test_the_notice_names_every_vendored_package() -> None:
    notice = (GRAPHIQL_DIR / "NOTICE").read_text()
    for folder in (GRAPHIQL_DIR / "vendor").glob("**/*@*"):
        if folder.is_dir() and folder.name != "@graphiql":
            name, version = folder.name.rsplit("@", 1)
            assert f"{name} {version}" in notice, folder.name


def test_the_role_switcher_mints_short_tokens_in_development(
    development: Flask, session_factory: sessionmaker[Session]
) -> None:
    client = development.test_client()
    html = client.get("/graphql", headers=HTML).get_data(as_text=True)
    assert 'data-token-url="/graphiql/token"' in html
    admin = make_user(session_factory, email="boss@example.com", role=models.Role.ADMIN)
    issued = client.post("/graphiql/token", json={"role": "ADMIN"}).get_json()
    assert issued["email"] == "boss@example.com"
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {issued['token']}"
    assert gql(client, "{ me { id role } }")["data"]["me"] == {"id": str(admin.id), "role": "ADMIN"}
    # No USER yet: one is created for the switcher.
    user_token = development.test_client().post("/graphiql/token", json={"role": "USER"}).get_json()
    assert user_token["email"] == "graphiql-user@userql.test"


@pytest.mark.parametrize("body", [{"role": "ROOT"}, {}, ["ADMIN"], None])
def test_the_role_switcher_wants_a_role(development: Flask, body: object) -> None:
    response = development.test_client().post("/graphiql/token", json=body)
    assert response.status_code == 400


@pytest.mark.parametrize("environment", [Environment.PRODUCTION, Environment.TEST])
def test_no_role_switcher_outside_development(
    settings: Settings, session_factory: sessionmaker[Session], environment: Environment
) -> None:
    app = create_app(
        replace(settings, environment=environment, graphiql=True), session_factory=session_factory
    )
    client = app.test_client()
    assert client.post("/graphiql/token", json={"role": "ADMIN"}).status_code == 405
    html = client.get("/graphql", headers=HTML).get_data(as_text=True)
    assert 'data-token-url=""' in html


def test_no_assets_without_graphiql(client: FlaskClient) -> None:
    assert client.get("/graphiql/userql-graphiql.js").status_code == 404


@pytest.fixture
def served(development: Flask) -> Iterator[str]:
    with serve_in_thread(development) as url:
        yield url


@pytest.mark.browser
def test_graphiql_runs_a_query_in_chromium_with_other_origins_blocked(
    served: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    make_user(session_factory, email="boss@example.com", role=models.Role.ADMIN)
    make_user(session_factory, email="member@example.com")
    node = shutil.which("node")
    assert node
    screenshot = os.environ.get("USERQL_TEST_SCREENSHOT", str(tmp_path / "graphiql.png"))
    run = subprocess.run(
        [
            node,
            str(NODE_TOOLS / "graphiql.mjs"),
            served,
            os.environ["USERQL_TEST_CHROMIUM"],
            screenshot,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["blocked"] == []
    assert report["consoleErrors"] == []
    assert report["pageErrors"] == []
    assert report["csp"] == GRAPHIQL_CSP
    assert report["result"] == {
        "data": {
            "me": {"email": "boss@example.com", "role": "ADMIN"},
            "users": {
                "totalCount": 2,
                "edges": [
                    {"node": {"email": "boss@example.com"}},
                    {"node": {"email": "member@example.com"}},
                ],
            },
        }
    }
