"""A Redis that hangs (SIGSTOP: it accepts nothing, answers nothing) costs persisted-query
clients one timeout per backoff period, not one per request. The Redis is the test's own
(own port, own directory), never the machine's, and only it is stopped and killed."""

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app import create_app
from services import documents
from settings import Settings
from tests.servers import free_port

pytestmark = pytest.mark.redis
ME = "{ me { id } }"
# The client's socket timeout (SharedRedis.from_url): what one call to a hung Redis costs.
TIMEOUT = 0.5


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is needed (Debian's redis-server package)"
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        os.kill(process.pid, signal.SIGCONT)
        process.kill()
        process.wait()


def test_a_hung_redis_costs_one_timeout_per_backoff(
    settings: Settings,
    session_factory: sessionmaker[Session],
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, process = own_redis
    client = create_app(replace(settings, redis_url=url), session_factory=session_factory)
    http = client.test_client()
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": documents.digest(ME)}}
    assert http.post("/graphql", json={"query": ME, "extensions": extensions}).status_code == 200

    os.kill(process.pid, signal.SIGSTOP)
    durations: list[float] = []
    started = time.monotonic()
    while time.monotonic() - started < 1.5 and len(durations) < 200:
        before = time.monotonic()
        answer = http.post("/graphql", json={"extensions": extensions}).get_json()
        durations.append(time.monotonic() - before)
        assert answer == {"data": {"me": None}}  # this process's own copy answers
    elapsed = time.monotonic() - started
    slow = [duration for duration in durations if duration >= TIMEOUT * 0.8]
    # Backoffs of 1 s then 2 s: within 1.5 s, Redis is asked twice at most.
    assert 1 <= len(slow) <= 2, (len(slow), len(durations))
    assert len(durations) > 20
    assert elapsed < 1.5 + 2 * TIMEOUT

    os.kill(process.pid, signal.SIGCONT)
