"""gunicorn in its production configuration, on MariaDB through a TCP proxy the test
controls: a black-holed, a slow and a silent-but-accepting database. While four requests
hang, the health port answers every probe within 100 ms, and every hung request ends by
its deadline (REQUEST_TIMEOUT_SECONDS, counted from its arrival) with a clean JSON error."""

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import delete
from sqlalchemy.engine import make_url

from db import models
from db.migrations import alembic_config
from db.session import make_engine
from tests.conftest import TEST_SECRET
from tests.report import REPORT
from tests.servers import call, free_port, start_gunicorn, stop, userql, wait_until_ready
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.mysql
BUDGET = 3.0
HANGING = 4
QUERY = {"query": "{ users(first: 1) { totalCount } }"}
CLEAN_CODES = {"SERVICE_UNAVAILABLE", "REQUEST_TIMEOUT"}


@dataclass
class Server:
    base: str
    health: str
    token: str
    proxy: TcpProxy
    log: Path


@pytest.fixture
def server(mysql_url: str, tmp_path: Path) -> Iterator[Server]:
    command.upgrade(alembic_config(mysql_url), "head")
    url = make_url(mysql_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 3306))
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    port, health_port = free_port(), free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": proxied,
        "USERQL_ENV": "production",
        "JWT_SECRET": TEST_SECRET,
        "BIND": f"127.0.0.1:{port}",
        "HEALTH_PORT": str(health_port),
        "WEB_CONCURRENCY": "2",
        "REQUEST_TIMEOUT_SECONDS": str(BUDGET),
        "DB_CONNECT_TIMEOUT_SECONDS": "1",
        "DB_WAIT_SECONDS": "1",
    }
    userql(env, tmp_path, "create-admin", "--email", "ops@example.com", "--name", "Ops")
    token = userql(env, tmp_path, "issue-token", "--email", "ops@example.com").strip()
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as output:
        process = start_gunicorn(env, output)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process, log)
        yield Server(base, f"http://127.0.0.1:{health_port}", token, proxy, log)
    finally:
        stop(process)
        proxy.close()
        engine = make_engine(mysql_url)
        with engine.begin() as connection:
            connection.execute(delete(models.User))
        engine.dispose()


def graphql(server: Server) -> tuple[float, int, Any]:
    started = time.monotonic()
    request = urllib.request.Request(
        f"{server.base}/graphql",
        data=json.dumps(QUERY).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {server.token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, body = response.status, json.load(response)
    except urllib.error.HTTPError as error:
        status, body = error.code, json.load(error)
    return time.monotonic() - started, status, body


def while_hanging(server: Server) -> tuple[list[tuple[float, int, Any]], list[float]]:
    """Four requests at once, with /livez probed on the health port every 100 ms until they
    have all ended; their outcomes and every probe's time."""
    outcomes: list[tuple[float, int, Any]] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(graphql(server))) for _ in range(HANGING)
    ]
    for thread in threads:
        thread.start()
    probes: list[float] = []
    deadline = time.monotonic() + BUDGET + 5
    while any(thread.is_alive() for thread in threads) and time.monotonic() < deadline:
        started = time.monotonic()
        status, body = call(f"{server.health}/livez")
        assert (status, body) == (200, {"status": "ok"})
        probes.append(time.monotonic() - started)
        time.sleep(0.1)
    for thread in threads:
        thread.join(timeout=5)
    return outcomes, probes


def assert_bounded(outcomes: list[tuple[float, int, Any]], probes: list[float]) -> None:
    assert len(outcomes) == HANGING
    for seconds, status, body in outcomes:
        assert seconds <= BUDGET + 1, seconds
        assert status == 503, body
        assert {error["extensions"]["code"] for error in body["errors"]} <= CLEAN_CODES, body
    assert len(probes) >= 10
    assert max(probes) < 0.1, probes


def recovers(server: Server) -> None:
    server.proxy.restore()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _, status, body = graphql(server)
        if status == 200:
            assert body == {"data": {"users": {"totalCount": 1}}}
            return
        time.sleep(0.2)
    raise AssertionError("the API did not recover:\n" + server.log.read_text())


OUTAGES: dict[str, Callable[[TcpProxy], None]] = {
    "black-holed": TcpProxy.freeze,
    "slow": lambda proxy: proxy.slow_down(2.0),
    "silent but accepting": TcpProxy.blackhole,
}


@pytest.mark.parametrize("outage", sorted(OUTAGES))
def test_hung_requests_end_by_their_deadline_and_health_answers(
    server: Server, outage: str
) -> None:
    assert graphql(server)[1] == 200
    OUTAGES[outage](server.proxy)
    outcomes, probes = while_hanging(server)
    REPORT.append(
        f"{outage} database: slowest of {HANGING} hung requests {max(o[0] for o in outcomes):.2f} s"
        f" (budget {BUDGET} s), slowest of {len(probes)} health probes {max(probes) * 1000:.1f} ms"
    )
    assert_bounded(outcomes, probes)
    recovers(server)
