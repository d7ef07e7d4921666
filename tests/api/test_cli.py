import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import main
from schema.root import schema

README_QUERY = '{"query":"{ users(first: 2) { totalCount edges { node { id name } } } }"}'


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("USERQL_ENV", "test")
    monkeypatch.chdir(tmp_path)  # no stray .env
    return url


def test_migrate_then_seed_is_idempotent(
    sqlite_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate"]) == 0
    assert main(["seed"]) == 0
    assert "seeded 4 example users" in capsys.readouterr().out
    assert main(["seed"]) == 0
    assert "seeded 0 example users" in capsys.readouterr().out


def test_export_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out.graphql"
    assert main(["export-schema", "--path", str(target)]) == 0
    assert target.read_text() == schema.as_str() + "\n"
    assert str(target) in capsys.readouterr().out


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
def running_server(tmp_path: Path) -> Iterator[str]:
    """What `make run` does, through the installed `userql` script: migrate, seed, serve."""
    userql = str(Path(sys.executable).with_name("userql"))
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path / 'run.sqlite3'}"}
    for step in (["migrate"], ["seed"]):
        subprocess.run([userql, *step], env=env, cwd=tmp_path, check=True, capture_output=True)
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
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_readme_curl_works_against_a_real_server(running_server: str) -> None:
    request = urllib.request.Request(
        running_server, data=README_QUERY.encode(), headers={"content-type": "application/json"}
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
    page = urllib.request.Request(running_server, headers={"accept": "text/html"})
    with urllib.request.urlopen(page, timeout=10) as response:
        assert "graphiql" in response.read().decode().lower()
