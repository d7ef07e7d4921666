"""Two gunicorn workers, one Redis: the limit is the same whichever worker answers."""

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_SECRET
from tests.servers import (
    call,
    free_port,
    only,
    serving_workers,
    start_gunicorn,
    stop,
    wait_until_ready,
    workers_of,
)

pytestmark = pytest.mark.redis
SIGN_IN = {"query": 'mutation { signInWithGoogle(idToken: "x") { __typename } }'}
LIMIT, WINDOW = 5, 4


@pytest.fixture
def server(
    redis_url: str, database_url: str, engine: object, tmp_path: Path
) -> Iterator[tuple[str, list[int]]]:
    env = {
        "DATABASE_URL": database_url,
        "USERQL_ENV": "production",
        "JWT_SECRET": TEST_SECRET,
        "BIND": f"127.0.0.1:{free_port()}",
        "WEB_CONCURRENCY": "2",
        "REDIS_URL": redis_url,
        "RATE_LIMIT_SIGN_IN": f"{LIMIT}/{WINDOW}",
    }
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        process = start_gunicorn(env, output)
    base = f"http://{env['BIND']}"
    try:
        wait_until_ready(base, process, log)
        workers = serving_workers(process, log)
        yield base, workers
        answered = [
            json.loads(line)["pid"]
            for line in log.read_text().splitlines()
            if '"userql.request"' in line
        ]
        assert set(answered) == set(workers), (
            "both workers should have answered some of the requests"
        )
    finally:
        for worker in workers_of(process):
            os.kill(worker, signal.SIGCONT)
        stop(process)


def attempts(base: str, count: int) -> list[str]:
    outcomes = []
    for _ in range(count):
        # A new connection each time, so the kernel spreads them over both workers.
        status, body = call(f"{base}/graphql", SIGN_IN, headers={"Connection": "close"})
        assert status == 200
        errors = body.get("errors") or []
        outcomes.append(errors[0]["extensions"]["code"] if errors else "allowed")
    return outcomes


def test_the_limit_holds_across_workers_and_resets(server: tuple[str, list[int]]) -> None:
    base, (first, second) = server
    # Start just after a window boundary, so all the attempts fall in one window.
    time.sleep(WINDOW - time.time() % WINDOW + 0.05)
    with only([first, second], first):
        outcomes = attempts(base, 3)
    with only([first, second], second):
        outcomes += attempts(base, 2 * LIMIT - 3)
    # The second worker refuses once the first and it together have used the limit.
    assert outcomes == ["allowed"] * LIMIT + ["RATE_LIMITED"] * LIMIT
    time.sleep(WINDOW - time.time() % WINDOW + 0.05)
    with only([first, second], first):
        assert attempts(base, 1) == ["allowed"]
