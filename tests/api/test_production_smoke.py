"""The Dockerfile's exact CMD, under the real gunicorn config, against the test database:
migrate, readiness, a query, then SIGTERM while a slow request is in flight."""

import json
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import TEST_SECRET
from tests.graphql import CREATE_USER
from tests.http_stub import Behaviour, stub_server
from tests.servers import (
    call,
    free_port,
    raw,
    start_gunicorn,
    stop,
    userql,
    wait_until_ready,
    workers_of,
)


@dataclass
class Server:
    process: Any
    base: str
    token: str
    provisioning: Behaviour
    log: Path


@contextmanager
def production_server(database_url: str, tmp_path: Path, **settings: str) -> Iterator[Server]:
    """gunicorn as the Dockerfile runs it, migrated, with an admin and a provisioning
    webhook that takes 2 s (a slow request to have in flight)."""
    provisioning = Behaviour(delay_seconds=2.0)
    with stub_server(provisioning) as webhook:
        env = {
            "PATH": "/usr/bin:/bin",
            "DATABASE_URL": database_url,
            "USERQL_ENV": "production",
            "JWT_SECRET": TEST_SECRET,
            "BIND": f"127.0.0.1:{free_port()}",
            **settings,
        }
        userql(env, tmp_path, "migrate")
        # Without a webhook: the admin is the test's setup, not what it measures.
        userql(env, tmp_path, "create-admin", "--email", "ops@example.com", "--name", "Ops")
        token = userql(env, tmp_path, "issue-token", "--email", "ops@example.com").strip()
        log = tmp_path / "server.log"
        with log.open("wb") as output:
            process = start_gunicorn({**env, "USER_PROVISIONING_WEBHOOK_URL": webhook}, output)
        try:
            yield Server(process, f"http://{env['BIND']}", token, provisioning, log)
        finally:
            stop(process)


@pytest.fixture
def server(
    database_url: str, committing_session_factory: sessionmaker[Session], tmp_path: Path
) -> Iterator[Server]:
    with production_server(
        database_url, tmp_path, WEB_CONCURRENCY="2", GUNICORN_GRACEFUL_TIMEOUT="15"
    ) as started:
        yield started


def test_gunicorn_serves_and_drains_on_sigterm(server: Server) -> None:
    wait_until_ready(server.base, server.process, server.log)
    assert call(f"{server.base}/livez") == (200, {"status": "ok"})
    query = {"query": "{ users { totalCount } }"}
    request_id = {"X-Request-ID": "smoke-test"}
    assert call(f"{server.base}/graphql", query, token=server.token, headers=request_id) == (
        200,
        {"data": {"users": {"totalCount": 1}}},
    )

    in_flight: list[tuple[int, Any]] = []
    variables = {"input": {"name": "Late", "email": "late@example.com"}}
    mutation = {"query": CREATE_USER, "variables": variables}
    request = threading.Thread(
        target=lambda: in_flight.append(
            call(f"{server.base}/graphql", mutation, token=server.token, headers=request_id)
        )
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
    lines = [json.loads(line) for line in output.splitlines() if '"userql.request"' in line]
    graphql_ids = {line["request_id"] for line in lines if line["path"] == "/graphql"}
    assert graphql_ids == {"smoke-test"}
    assert server.token not in output
    assert "Handling signal: term" in output


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "BAD_REQUEST"),
        (b"GET /" + b"x" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414, "URI_TOO_LONG"),
        (
            b"GET /livez HTTP/1.1\r\nHost: h\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n",
            431,
            "HEADERS_TOO_LARGE",
        ),
    ],
)
def test_what_gunicorn_refuses_itself_is_answered_as_json(
    server: Server, request_bytes: bytes, status: int, code: str
) -> None:
    wait_until_ready(server.base, server.process, server.log)
    answered, headers, body = raw(int(server.base.rpartition(":")[2]), request_bytes)
    assert (answered, headers["content-type"]) == (status, "application/json")
    assert [error["extensions"]["code"] for error in body["errors"]] == [code]


def create(email: str) -> dict[str, Any]:
    return {"query": CREATE_USER, "variables": {"input": {"name": "Queued", "email": email}}}


def test_a_request_whose_client_hung_up_while_it_queued_is_not_run(tmp_path: Path) -> None:
    """One worker thread, busy with a slow createUser; a second createUser arrives whole and
    its client hangs up before a thread is free: it is never run, so no user is created that
    nobody is waiting for. A third, whose client waits, runs afterwards."""
    database = tmp_path / "queue.sqlite3"
    answers: list[tuple[int, Any]] = []
    with production_server(
        f"sqlite:///{database}", tmp_path, WEB_CONCURRENCY="1", GUNICORN_THREADS="1"
    ) as server:
        base, token = server.base, server.token
        wait_until_ready(base, server.process, server.log)
        busy = threading.Thread(
            target=lambda: answers.append(call(f"{base}/graphql", create("a@x.io"), token=token))
        )
        busy.start()
        deadline = time.monotonic() + 10
        while not server.provisioning.received and time.monotonic() < deadline:
            time.sleep(0.02)
        body = json.dumps(create("gone@x.io")).encode()
        with socket.create_connection(("127.0.0.1", int(base.rpartition(":")[2]))) as gone:
            head = (
                "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            gone.sendall(head.encode() + body)
        waiting = call(f"{base}/graphql", {"query": "{ me { email } }"}, token=token)
        busy.join(timeout=20)
    assert waiting == (200, {"data": {"me": {"email": "ops@example.com"}}})
    [(status, created)] = answers
    assert (status, created["data"]["createUser"]["__typename"]) == (200, "CreateUserSuccess")
    emails = {row[0] for row in sqlite3.connect(database).execute("SELECT email FROM users")}
    assert emails == {"ops@example.com", "a@x.io"}
    assert [received["body"]["email"] for received in server.provisioning.received] == ["a@x.io"]
    assert "client went away before its request started; not run" in server.log.read_text()


DRAINING = (503, {"status": "draining", "reason": "the server is shutting down"})


def wait_until_every_worker_serves(server: Server, workers: int) -> None:
    """wait_until_ready sees one worker ready; a SIGTERM before another has booted would stop
    that one at once, with no drain to see."""
    wait_until_ready(server.base, server.process, server.log)
    deadline = time.monotonic() + 30
    while server.log.read_text().count("health endpoints on port") < workers:
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.05)


def wait_until_draining(server: Server, health: str) -> None:
    """Until /readyz says draining on the API's port and on the health port, several times
    in a row: the master relays SIGTERM to every worker, and either may answer."""
    deadline = time.monotonic() + 1.5
    in_a_row, both = 0, None
    while in_a_row < 4:
        assert time.monotonic() < deadline, both
        both = (call(f"{server.base}/readyz"), call(health))
        in_a_row = in_a_row + 1 if both == (DRAINING, DRAINING) else 0
        time.sleep(0.02)


@contextmanager
def two_workers_draining(tmp_path: Path, drain_seconds: int) -> Iterator[tuple[Server, str]]:
    """production_server with two workers that each serve, a health port, and a drain of
    `drain_seconds` on SIGTERM; the server and the health port's base URL."""
    health_port = free_port()
    with production_server(
        f"sqlite:///{tmp_path / 'drain.sqlite3'}",
        tmp_path,
        WEB_CONCURRENCY="2",
        HEALTH_PORT=str(health_port),
        SHUTDOWN_DRAIN_SECONDS=str(drain_seconds),
    ) as server:
        wait_until_every_worker_serves(server, 2)
        yield server, f"http://127.0.0.1:{health_port}"


def test_on_sigterm_each_worker_drains_before_it_stops(tmp_path: Path) -> None:
    """SHUTDOWN_DRAIN_SECONDS=2: after SIGTERM /readyz answers 503 draining on both ports,
    /livez and queries are still answered 200, and gunicorn exits 0 once the drain is over,
    not before."""
    with two_workers_draining(tmp_path, 2) as (server, health):
        assert call(f"{health}/readyz")[0] == 200
        os.kill(server.process.pid, signal.SIGTERM)
        signalled = time.monotonic()
        wait_until_draining(server, f"{health}/readyz")
        query = {"query": "{ me { email } }"}
        served = [call(f"{server.base}/graphql", query, token=server.token) for _ in range(5)]
        live = [call(f"{server.base}/livez"), call(f"{health}/livez")]
        served_within = time.monotonic() - signalled
        still_running = server.process.poll() is None
        assert server.process.wait(timeout=20) == 0
        exited_after = time.monotonic() - signalled
    assert served == [(200, {"data": {"me": {"email": "ops@example.com"}}})] * 5
    assert live == [(200, {"status": "ok"})] * 2
    assert still_running
    assert served_within < 2, served_within
    assert exited_after >= 2, exited_after
    assert server.log.read_text().count("SIGTERM: draining for 2 s") == 2


@pytest.mark.parametrize("second", ["SIGTERM to each worker", "SIGINT to the master"])
def test_a_second_signal_during_the_drain_stops_gunicorn_promptly(
    tmp_path: Path, second: str
) -> None:
    with two_workers_draining(tmp_path, 20) as (server, health):
        workers = workers_of(server.process)
        assert len(workers) == 2, workers
        os.kill(server.process.pid, signal.SIGTERM)
        wait_until_draining(server, f"{health}/readyz")
        signalled = time.monotonic()
        if second == "SIGINT to the master":
            os.kill(server.process.pid, signal.SIGINT)
        else:
            for worker in workers:
                os.kill(worker, signal.SIGTERM)
        assert server.process.wait(timeout=10) == 0
        stopped_after = time.monotonic() - signalled
    # Well within the drain's 20 s.
    assert stopped_after < 5, stopped_after


def test_a_drain_as_long_as_the_graceful_timeout_is_refused_at_start(tmp_path: Path) -> None:
    """The master kills its workers GUNICORN_GRACEFUL_TIMEOUT after SIGTERM, drain included:
    a drain that long would leave in-flight requests no time, so gunicorn does not start."""
    with production_server(
        f"sqlite:///{tmp_path / 'drain.sqlite3'}",
        tmp_path,
        WEB_CONCURRENCY="1",
        SHUTDOWN_DRAIN_SECONDS="5",
        GUNICORN_GRACEFUL_TIMEOUT="5",
    ) as server:
        assert server.process.wait(timeout=60) != 0
    assert (
        "SHUTDOWN_DRAIN_SECONDS (5) must be less than GUNICORN_GRACEFUL_TIMEOUT (5)"
        in server.log.read_text()
    )
