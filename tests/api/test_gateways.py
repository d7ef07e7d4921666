"""userql behind real gateways, on loopback: examples/federation's projects subgraph
(@apollo/subgraph) extends User, and Apollo Gateway and Hive Gateway compose both in process,
from each subgraph's `_service { sdl }`. The statements userql runs are counted."""

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from graphql import parse
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from db import models
from schema.limits import QueryLimits, query_cost
from schema.root import executable_schema
from services.auth import Access, TokenService
from settings import Settings
from tests.api.test_sql_budget import statements
from tests.conftest import TEST_SECRET
from tests.factories import make_users
from tests.servers import call, free_port, serve_in_thread

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "federation"
NODE_ENV = {"PATH": "/usr/bin:/bin", "NODE_ENV": "production"}


def node() -> str:
    found = shutil.which("node")
    assert found
    assert (EXAMPLE / "node_modules" / "@apollo" / "gateway").is_dir(), "run `make install`"
    return found


@contextmanager
def node_server(script: str, log: Path, **env: str) -> Iterator[str]:
    """A script of the example that prints {"url": ...} once it listens; yields that URL."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [node(), script],
            cwd=EXAMPLE,
            env={**NODE_ENV, "PORT": "0", **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while not (url := _announced(log)):
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"{script} never listened"
                time.sleep(0.1)
            yield url
        finally:
            process.kill()
            process.wait()


def _announced(log: Path) -> str | None:
    for line in log.read_text().splitlines():
        if line.startswith('{"url"'):
            url: str = json.loads(line)["url"]
            return url
    return None


@contextmanager
def hive_gateway(log: Path, subgraphs: Mapping[str, str], max_cost: int) -> Iterator[str]:
    port = free_port()
    services = [
        argument
        for name, url in subgraphs.items()
        for argument in ("--dev-service", f"{name}={url}")
    ]
    output = log.open("wb")
    process = subprocess.Popen(
        [
            node(),
            str(EXAMPLE / "node_modules" / "@graphql-hive" / "gateway" / "dist" / "bin.js"),
            "supergraph",
            "-c",
            "hive-gateway.config.mjs",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *services,
        ],
        cwd=EXAMPLE,
        env={**NODE_ENV, "MAX_COST": str(max_cost), "JWT_SECRET": TEST_SECRET},
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _ready(f"{base}/readiness"):
            assert process.poll() is None, "Hive Gateway exited"
            assert time.monotonic() < deadline, "Hive Gateway never became ready"
            time.sleep(0.3)
        yield f"{base}/graphql"
    finally:
        process.kill()
        process.wait()
        output.close()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def people(session_factory: sessionmaker[Session], admin: models.User) -> list[models.User]:
    """The admin and 99 others: a page of 100."""
    return [admin, *make_users(session_factory, 99)]


@pytest.fixture
def tokens_for(tokens: TokenService, member: models.User, admin: models.User) -> dict[str, str]:
    return {
        "USER": tokens.issue(user_id=member.id, role=Access.USER).token,
        "ADMIN": tokens.issue(user_id=admin.id, role=Access.ADMIN).token,
    }


@pytest.fixture
def subgraphs(
    settings: Settings,
    session_factory: sessionmaker[Session],
    people: list[models.User],
    member: models.User,
    tmp_path: Path,
) -> Iterator[dict[str, str]]:
    """userql (FEDERATION=true) and the projects subgraph; the first ten people own two
    projects each."""
    app = create_app(replace(settings, federation=True), session_factory=session_factory)
    owners = ",".join(str(person.id) for person in people[:10])
    with (
        serve_in_thread(app) as users_url,
        node_server(
            "projects-subgraph.mjs", tmp_path / "projects.log", PROJECT_OWNERS=owners
        ) as projects_url,
    ):
        yield {"users": users_url, "projects": projects_url}


@pytest.fixture
def apollo(subgraphs: dict[str, str], tmp_path: Path) -> Iterator[str]:
    with (
        node_server(
            "apollo-gateway.mjs",
            tmp_path / "apollo.log",
            USERQL_URL=subgraphs["users"],
            PROJECTS_URL=subgraphs["projects"],
        ) as url,
    ):
        yield url


def selects(engine: Engine, url: str, query: str, token: str) -> tuple[dict[str, Any], int]:
    """The gateway's answer, and how many SELECTs userql ran for it."""
    with statements(engine) as seen:
        status, body = call(url, {"query": query}, token=token)
    assert status == 200, body
    return body, seen.count("SELECT")


BOTH = "{ projects { name owner { id name email } } }"
PAGE_WITH_PROJECTS = "{ users(first: 100) { edges { node { id name projects { name } } } } }"


def test_apollo_gateway_batches_the_entities_a_document_needs(
    apollo: str, engine: Engine, people: list[models.User], tokens_for: dict[str, str]
) -> None:
    body, count = selects(engine, apollo, BOTH, tokens_for["ADMIN"])
    projects = body["data"]["projects"]
    assert len(projects) == 20
    assert {p["owner"]["id"] for p in projects} == {str(person.id) for person in people[:10]}
    assert projects[0]["owner"]["email"] == people[0].email
    # The caller's role, then all twenty owners (ten users) in one _entities statement.
    assert count == 2


def test_apollo_gateway_forwards_the_token_and_userql_refuses_admin_fields(
    apollo: str, engine: Engine, member: models.User, tokens_for: dict[str, str]
) -> None:
    query = f'{{ user(id: "{member.id}") {{ id name deactivatedAt }} }}'
    body, _ = selects(engine, apollo, query, tokens_for["USER"])
    assert body["data"] == {
        "user": {"id": str(member.id), "name": member.name, "deactivatedAt": None}
    }
    [error] = body["errors"]
    assert error["message"] == "User.deactivatedAt needs the ADMIN role."
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert error["extensions"]["serviceName"] == "users"
    _, anonymous = call(apollo, {"query": BOTH})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_apollo_gateway_reads_a_page_with_its_extension_in_one_statement(
    apollo: str, engine: Engine, people: list[models.User], tokens_for: dict[str, str]
) -> None:
    body, count = selects(engine, apollo, PAGE_WITH_PROJECTS, tokens_for["USER"])
    nodes = [edge["node"] for edge in body["data"]["users"]["edges"]]
    assert len(nodes) == 100
    assert [len(node["projects"]) for node in nodes] == [2] * 10 + [0] * 90
    # The caller's role and the page; the projects come from the other subgraph.
    assert count == 2
    deeper = PAGE_WITH_PROJECTS.replace("projects { name }", "projects { name owner { name } }")
    body, count = selects(engine, apollo, deeper, tokens_for["USER"])
    owners = [
        p["owner"]["name"] for e in body["data"]["users"]["edges"] for p in e["node"]["projects"]
    ]
    assert owners == [person.name for person in people[:10] for _ in range(2)]
    # Two requests to userql, each the caller's role and one read: the page, then all twenty
    # projects' owners at once.
    assert count == 4


# Documents on which a gateway's demand control and userql's cost limit agree, and the
# connection fields userql multiplies by `first` and no @listSize can size.
AGREED = (
    "{ users(first: 100) { edges { node { id name email } } } }",
    "query($id: ID!) { user(id: $id) { id name sessions { id userAgent } } }",
    "{ auditEvents(first: 5) { edges { cursor node { id action changes { field } } } } }",
)
UNSIZED = "{ users(first: 10) { totalCount pageInfo { hasNextPage } edges { node { id } } } }"


def userql_cost(query: str, variables: dict[str, Any]) -> int:
    subgraph = executable_schema(fast_execution=True, federation=True)
    return query_cost(subgraph.graphql_schema, parse(query), None, variables)


def test_hive_gateway_s_demand_control_agrees_with_userql_s_cost(
    subgraphs: dict[str, str],
    engine: Engine,
    admin: models.User,
    tokens_for: dict[str, str],
    tmp_path: Path,
) -> None:
    variables = {"id": str(admin.id)}
    costs = [userql_cost(query, variables) for query in AGREED]
    assert costs == [501, 6, 36]
    with hive_gateway(tmp_path / "hive.log", subgraphs, 2000) as hive:
        for query, cost in zip(AGREED, costs, strict=True):
            status, body = call(
                hive, {"query": query, "variables": variables}, token=tokens_for["ADMIN"]
            )
            assert status == 200
            assert "errors" not in body, body
            assert body["extensions"]["cost"] == {"estimated": cost, "max": 2000}
        _, unsized = call(hive, {"query": UNSIZED}, token=tokens_for["ADMIN"])
        # userql: 1 + 10 * (1 + 2 + 3); the gateway multiplies only edges' subtree.
        assert (userql_cost(UNSIZED, {}), unsized["extensions"]["cost"]["estimated"]) == (61, 34)


def test_hive_gateway_and_userql_refuse_the_same_documents_at_the_same_limit(
    settings: Settings,
    session_factory: sessionmaker[Session],
    admin: models.User,
    tokens_for: dict[str, str],
    people: list[models.User],
    tmp_path: Path,
) -> None:
    limit = 500  # the first document costs 501, the others less
    limited = replace(settings, federation=True, query_limits=QueryLimits(max_cost=limit))
    app = create_app(limited, session_factory=session_factory)
    variables = {"id": str(admin.id)}
    with (
        serve_in_thread(app) as users_url,
        node_server("projects-subgraph.mjs", tmp_path / "projects.log") as projects_url,
        hive_gateway(
            tmp_path / "hive.log", {"users": users_url, "projects": projects_url}, limit
        ) as hive,
    ):
        for query in AGREED:
            request = {"query": query, "variables": variables}
            _, at_gateway = call(hive, request, token=tokens_for["ADMIN"])
            _, at_userql = call(users_url, request, token=tokens_for["ADMIN"])
            gateway_refused = "COST_ESTIMATED_TOO_EXPENSIVE" in json.dumps(at_gateway)
            userql_refused = "QUERY_TOO_COMPLEX" in json.dumps(at_userql)
            assert gateway_refused == userql_refused == (query == AGREED[0]), (
                at_gateway,
                at_userql,
            )


def test_hive_gateway_enforces_userql_s_rules_at_the_edge(
    subgraphs: dict[str, str],
    member: models.User,
    tokens_for: dict[str, str],
    tmp_path: Path,
) -> None:
    deactivated = f'{{ user(id: "{member.id}") {{ id deactivatedAt }} }}'
    own_email = f'{{ user(id: "{member.id}") {{ id email }} }}'
    with hive_gateway(tmp_path / "hive.log", subgraphs, 2000) as hive:
        _, as_user = call(hive, {"query": deactivated}, token=tokens_for["USER"])
        _, anonymous = call(hive, {"query": "{ users { edges { node { id } } } }"})
        # Refused by the gateway, from the SDL's directives, with its own code (userql's would
        # be FORBIDDEN and UNAUTHENTICATED); the rest of the document still runs.
        assert as_user["data"] == {"user": {"id": str(member.id), "deactivatedAt": None}}
        assert [e["extensions"]["code"] for e in as_user["errors"]] == [
            "UNAUTHORIZED_FIELD_OR_TYPE"
        ]
        assert as_user["errors"][0]["path"] == ["user", "deactivatedAt"]
        assert [e["extensions"]["code"] for e in anonymous["errors"]] == [
            "UNAUTHORIZED_FIELD_OR_TYPE"
        ]
        # `User.email` is ADMIN or self: the gateway lets any signed-in caller through, and
        # userql answers the member their own.
        _, own = call(hive, {"query": own_email}, token=tokens_for["USER"])
        assert own == {
            "data": {"user": {"id": str(member.id), "email": member.email}},
            "extensions": own["extensions"],
        }
        _, admitted = call(hive, {"query": deactivated}, token=tokens_for["ADMIN"])
        assert admitted["data"] == {"user": {"id": str(member.id), "deactivatedAt": None}}
        status, forged = call(hive, {"query": deactivated}, token=tokens_for["ADMIN"] + "x")
        # A token userql did not sign never gets past the gateway.
        assert (status, forged) == (401, {"errors": [{"message": "Unauthenticated"}]})
