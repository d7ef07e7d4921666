"""The Dockerfile's exact CMD, under the real gunicorn config, against the test database:
migrate, readiness, a query, then SIGTERM while a slow request is in flight."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import TEST_SECRET
from tests.graphql import CREATE_USER
from tests.http_stub import Behaviour, stub_server

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent


def dockerfile_cmd() -> list[str]:
    [line] = [
        line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")
    ]
    command: list[str] = json.loads(line.removeprefix("CMD "))
    return command


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def call(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", "X-Request-ID": "smoke-test"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base: str
    token: str
    provisioning: Behaviour
    log: Path


@pytest.fixture
def server(
    database_url: str,
    committing_session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> Iterator[Server]:
    provisioning = Behaviour(delay_seconds=2.0)
    with stub_server(provisioning) as webhook:
        env = {
            "PATH": f"{BIN}:/usr/bin:/bin",
            "DATABASE_URL": database_url,
            "USERQL_ENV": "production",
            "JWT_SECRET": TEST_SECRET,
            "USER_PROVISIONING_WEBHOOK_URL": webhook,
            "BIND": f"127.0.0.1:{free_port()}",
            "WEB_CONCURRENCY": "2",
            "GUNICORN_GRACEFUL_TIMEOUT": "15",
        }

        def userql(*args: str) -> str:
            result = subprocess.run(
                [str(BIN / "userql"), *args], env=env, cwd=tmp_path, capture_output=True, text=True
            )
            assert result.returncode == 0, result.stdout + result.stderr
            return result.stdout

        userql("migrate")
        # Without a webhook: the admin is the test's setup, not what it measures.
        env_without_hook = {k: v for k, v in env.items() if k != "USER_PROVISIONING_WEBHOOK_URL"}
        subprocess.run(
            [str(BIN / "userql"), "create-admin", "--email", "ops@example.com", "--name", "Ops"],
            env=env_without_hook,
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )
        token = userql("issue-token", "--email", "ops@example.com").strip()
        command = dockerfile_cmd()
        log = tmp_path / "server.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [str(BIN / command[0]), *command[1:]],
                env=env,
                cwd=ROOT,  # where gunicorn finds gunicorn.conf.py, as in the image's WORKDIR
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        base = f"http://{env['BIND']}"
        try:
            yield Server(process, base, token, provisioning, log)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log.read_text()
        try:
            if call(f"{server.base}/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail("gunicorn never became ready:\n" + server.log.read_text())


def test_gunicorn_serves_and_drains_on_sigterm(server: Server) -> None:
    wait_until_ready(server)
    assert call(f"{server.base}/livez") == (200, {"status": "ok"})
    query = {"query": "{ users { totalCount } }"}
    assert call(f"{server.base}/graphql", query, server.token) == (
        200,
        {"data": {"users": {"totalCount": 1}}},
    )

    in_flight: list[tuple[int, Any]] = []
    mutation = {
        "query": CREATE_USER,
        "variables": {"input": {"name": "Late", "email": "late@example.com"}},
    }
    request = threading.Thread(
        target=lambda: in_flight.append(call(f"{server.base}/graphql", mutation, server.token))
    )
    request.start()
    deadline = time.monotonic() + 20
    while not server.provisioning.received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.provisioning.received, "the slow request never reached provisioning"

    os.kill(server.process.pid, signal.SIGTERM)
    request.join(timeout=30)
    assert server.process.wait(timeout=30) == 0
    [(status, body)] = in_flight
    assert status == 200
    assert body["data"]["createUser"]["__typename"] == "CreateUserSuccess"

    output = server.log.read_text()
    request_lines = [json.loads(line) for line in output.splitlines() if '"userql.request"' in line]
    assert {line["request_id"] for line in request_lines if line["path"] == "/graphql"} == {
        "smoke-test"
    }
    assert server.token not in output
    assert "Handling signal: term" in output
