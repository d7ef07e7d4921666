import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask
from sqlalchemy import insert, select

from app import build_token_service
from cli import SOURCE_ROOT, main, parser
from cli.schema_tools import (
    MATRIX_END,
    MATRIX_START,
    ROLE_SCHEMAS_END,
    ROLE_SCHEMAS_START,
    role_schemas_markdown,
)
from db import models
from db.session import make_engine
from schema.permissions import permission_matrix
from schema.root import schema
from services.auth import Access
from settings import Settings
from tests.conftest import TEST_SECRET
from tests.http_stub import Behaviour, stub_server

README_QUERY = '{"query":"{ users(first: 2) { totalCount edges { node { id name } } } }"}'


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("USERQL_ENV", "test")
    monkeypatch.setenv("JWT_SECRET", TEST_SECRET)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return url


@pytest.fixture
def migrated(sqlite_env: str) -> str:
    assert main(["migrate"]) == 0
    return sqlite_env


def test_seed_is_idempotent(migrated: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["seed"]) == 0
    assert "seeded 4 example users" in capsys.readouterr().out
    assert main(["seed"]) == 0
    assert "seeded 0 example users" in capsys.readouterr().out


def test_export_schema_writes_the_sdl_the_matrix_and_the_role_schemas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out.graphql"
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n{MATRIX_START}stale\n{MATRIX_END}\nafter\n")
    api_doc = tmp_path / "api.md"
    api_doc.write_text(f"# API\n{ROLE_SCHEMAS_START}stale\n{ROLE_SCHEMAS_END}\nafter\n")
    args = ["export-schema", "--path", str(target), "--readme", str(readme)]
    assert main([*args, "--api-doc", str(api_doc)]) == 0
    assert target.read_text() == schema.as_str() + "\n"
    assert (
        readme.read_text() == f"# Title\n{MATRIX_START}{permission_matrix()}{MATRIX_END}\nafter\n"
    )
    assert api_doc.read_text() == (
        f"# API\n{ROLE_SCHEMAS_START}{role_schemas_markdown()}{ROLE_SCHEMAS_END}\nafter\n"
    )
    out = capsys.readouterr().out
    assert str(target) in out
    assert str(api_doc) in out


@pytest.mark.parametrize(
    ("readme_text", "api_doc_text", "missing"),
    [
        ("# no markers\n", f"{ROLE_SCHEMAS_START}{ROLE_SCHEMAS_END}\n", "permission-matrix"),
        (f"{MATRIX_START}{MATRIX_END}\n", "# no markers\n", "role-schemas"),
    ],
)
def test_export_schema_needs_the_markers_and_then_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    readme_text: str,
    api_doc_text: str,
    missing: str,
) -> None:
    readme, api_doc, target = tmp_path / "README.md", tmp_path / "api.md", tmp_path / "s.graphql"
    readme.write_text(readme_text)
    api_doc.write_text(api_doc_text)
    args = ["export-schema", "--path", str(target), "--readme", str(readme)]
    assert main([*args, "--api-doc", str(api_doc)]) == 2
    assert f"has no <!-- {missing}:start" in capsys.readouterr().err
    assert (readme.read_text(), api_doc.read_text()) == (readme_text, api_doc_text)
    assert not target.exists()


def test_export_schema_writes_the_project_docs_by_default() -> None:
    export = parser().parse_args(["export-schema"])
    assert (export.path, export.readme, export.api_doc) == (
        SOURCE_ROOT / "schema.graphql",
        SOURCE_ROOT / "README.md",
        SOURCE_ROOT / "docs" / "api.md",
    )


def test_create_admin_is_idempotent_and_promotes(
    migrated: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["create-admin", "--email", "Root@Example.com", "--name", "Root"]
    assert main(args) == 0
    assert "root@example.com (id 1) is now an ADMIN" in capsys.readouterr().out
    assert main(args) == 0
    assert "already was an ADMIN" in capsys.readouterr().out
    assert main(["seed"]) == 0
    capsys.readouterr()
    assert main(["create-admin", "--email", "grace@example.com", "--name", "ignored"]) == 0
    assert "grace@example.com (id 3) is now an ADMIN" in capsys.readouterr().out


def test_create_admin_reports_a_provisioning_refusal(
    migrated: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with stub_server(Behaviour(status=500)) as url:
        monkeypatch.setenv("USER_PROVISIONING_WEBHOOK_URL", url)
        assert main(["create-admin", "--email", "root@example.com", "--name", "Root"]) == 1
    assert "refused the user (HTTP 500)" in capsys.readouterr().err


def test_issue_token(migrated: str, settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["seed"]) == 0
    capsys.readouterr()
    assert main(["issue-token", "--email", "ADA@example.com", "--ttl", "120"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    claims = build_token_service(settings).verify(token)
    assert (claims.user_id, claims.role) == (1, Access.ADMIN)
    assert f'{{"Authorization": "Bearer {token}"}}' in err
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["exp"] - int(payload["iat"]) == 120


def test_issue_session(
    migrated: str, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["seed"]) == 0
    capsys.readouterr()
    assert main(["issue-session", "--email", "ADA@example.com"]) == 0
    session = json.loads(capsys.readouterr().out)
    assert set(session) == {
        "accessToken",
        "expiresAt",
        "refreshToken",
        "refreshTokenExpiresAt",
        "sessionId",
    }
    claims = build_token_service(settings).verify(session["accessToken"])
    assert (claims.user_id, claims.role, claims.session_id) == (
        1,
        Access.ADMIN,
        int(session["sessionId"]),
    )
    assert main(["issue-session", "--email", "nobody@example.com"]) == 1
    assert "no user has the email nobody@example.com" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--email", "nobody@example.com"], 1, "no user has the email nobody@example.com"),
        (["--email", "ada@example.com", "--ttl", "0"], 2, "--ttl must be a positive number"),
    ],
)
def test_issue_token_refuses(
    migrated: str, capsys: pytest.CaptureFixture[str], args: list[str], status: int, message: str
) -> None:
    assert main(["issue-token", *args]) == status
    assert message in capsys.readouterr().err


def test_serve_runs_the_app_on_the_given_address(
    sqlite_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(Flask, "run", lambda self, **kwargs: calls.append(kwargs))
    assert main(["serve", "--host", "0.0.0.0", "--port", "9123"]) == 0  # noqa: S104
    assert calls == [{"host": "0.0.0.0", "port": 9123}]  # noqa: S104


def test_a_configuration_error_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("USERQL_ENV", "staging")
    assert main(["migrate"]) == 2
    assert "configuration error: USERQL_ENV must be one of" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def running_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """What `make run` does, through the installed `userql` script: migrate, seed, serve."""
    userql = str(Path(sys.executable).with_name("userql"))
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.sqlite3'}",
        "JWT_SECRET": TEST_SECRET,
    }
    for step in (["migrate"], ["seed"]):
        subprocess.run([userql, *step], env=env, cwd=tmp_path, check=True, capture_output=True)
    token = subprocess.run(
        [userql, "issue-token", "--email", "ada@example.com"],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = _free_port()
    server = subprocess.Popen(
        [userql, "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/graphql"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url, token
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_readme_curl_works_against_a_real_server(running_server: tuple[str, str]) -> None:
    url, token = running_server
    request = urllib.request.Request(
        url,
        data=README_QUERY.encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.load(response)
    assert body == {
        "data": {
            "users": {
                "totalCount": 4,
                "edges": [
                    {"node": {"id": "1", "name": "Ada Lovelace"}},
                    {"node": {"id": "2", "name": "Grace Hopper"}},
                ],
            }
        }
    }
    page = urllib.request.Request(url, headers={"accept": "text/html"})
    with urllib.request.urlopen(page, timeout=10) as response:
        assert "graphiql" in response.read().decode().lower()


@pytest.mark.parametrize(
    "args",
    [
        ["issue-token", "--email", "ada@example.com"],
        ["issue-session", "--email", "ada@example.com"],
        ["create-admin", "--email", "ada@example.com", "--name", "Ada"],
        ["seed"],
    ],
)
def test_an_unreachable_database_is_a_sentence_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    # Nothing listens on port 1: the connection is refused at once.
    monkeypatch.setenv("DATABASE_URL", "mysql+pymysql://root@127.0.0.1:1/gone")
    monkeypatch.setenv("USERQL_ENV", "development")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "userql: The database is unavailable; try again shortly."
    assert "Traceback" not in err


def test_purge_idempotency_keys_removes_the_expired_ones_only(
    migrated: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine(migrated)
    now = datetime.now(UTC)
    rows = [
        {
            "principal": "user:1",
            "key": name,
            "request_hash": "0" * 64,
            "created_at": now - timedelta(days=2),
            "expires_at": now + timedelta(seconds=offset),
        }
        for name, offset in (("old", -60), ("older", -3600), ("fresh", 3600))
    ]
    with engine.begin() as connection:
        connection.execute(insert(models.IdempotencyKey), rows)
    assert main(["purge-idempotency-keys"]) == 0
    assert capsys.readouterr().out.strip() == "removed 2 expired idempotency keys"
    with engine.connect() as connection:
        left = connection.scalars(select(models.IdempotencyKey.key)).all()
    engine.dispose()
    assert left == ["fresh"]
