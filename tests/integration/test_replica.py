"""Reads from a replica, on a MariaDB primary and its replica (.ci/mariadb-pair starts them):
each server's own status counters say which statements it answered. The app connects as a
user with the grants DATABASE_READ_URL needs, so a write that reached the read-only
replica would fail the request rather than pass unseen."""

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest
from alembic import command
from flask.testing import FlaskClient
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from app import create_app
from db import models
from db.migrations import alembic_config
from db.replica import connect_replica
from db.session import PoolOptions, make_engine, make_reading_engine, make_session_factory
from services import users
from services.auth import TokenService
from services.provisioning import NoopProvisioner
from services.unit_of_work import RequestConnection, UnitOfWork
from settings import Settings
from tests.conftest import PRIMARY_URL_VARIABLE, REPLICA_URL_VARIABLE, empty
from tests.factories import make_user
from tests.graphql import CREATE_USER, authorized, gql
from tests.report import REPORT
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.replica
APP_USER = "userql_app"
USER = "query($id: ID!) { user(id: $id) { id email } }"
USERS = "{ users(first: 5) { totalCount edges { node { id } } } }"
# Status counters: every statement a client sent (pings are not statements), the reads, and
# the app's replication checks.
COUNTERS = ("Questions", "Com_select", "Com_insert", "Com_show_slave_status")
# Short enough that a lagging replica loses its reads within a few seconds of a write.
MAX_LAG_SECONDS = 1.0
# A bound on each wait for the app to change its mind, well over the check interval.
CHANGE_SECONDS = 10.0


@dataclass(frozen=True)
class Pair:
    primary: Engine
    replica: Engine
    """As root, in autocommit: reading the counters moves them by that one statement, and
    no ROLLBACK follows it."""
    primary_url: str
    replica_url: str
    """As the app's user."""

    def caught_up(self) -> None:
        with self.primary.connect() as connection:
            position = connection.scalar(text("SELECT @@gtid_binlog_pos"))
        with self.replica.connect() as connection:
            waited = connection.scalar(text("SELECT MASTER_GTID_WAIT(:at, 10)"), {"at": position})
        assert waited == 0, "the replica did not catch up within 10 s"


def _autocommit(url: str) -> Engine:
    engine = make_reading_engine(url)
    assert engine is not None
    return engine


def _as_app_user(url: str) -> str:
    return make_url(url).set(username=APP_USER, password=None).render_as_string()


@pytest.fixture(scope="session")
def pair() -> Iterator[Pair]:
    """The pair, migrated, with the app's user; a pair that is down fails here."""
    primary_url, replica_url = os.environ[PRIMARY_URL_VARIABLE], os.environ[REPLICA_URL_VARIABLE]
    command.upgrade(alembic_config(primary_url), "head")
    primary, replica = _autocommit(primary_url), _autocommit(replica_url)
    database = make_url(primary_url).database
    with primary.begin() as connection:
        # Created on the primary, replicated like everything else.
        connection.exec_driver_sql(f"CREATE USER IF NOT EXISTS '{APP_USER}'@'127.0.0.1'")
        connection.exec_driver_sql(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON {database}.* TO '{APP_USER}'@'127.0.0.1'"
        )
        connection.exec_driver_sql(f"GRANT REPLICA MONITOR ON *.* TO '{APP_USER}'@'127.0.0.1'")
        empty(connection)
    found = Pair(primary, replica, _as_app_user(primary_url), _as_app_user(replica_url))
    found.caught_up()
    yield found
    primary.dispose()
    replica.dispose()


@pytest.fixture
def clean(pair: Pair) -> Iterator[Pair]:
    yield pair
    with pair.primary.begin() as connection:
        empty(connection)
    pair.caught_up()


@pytest.fixture
def replica_settings(settings: Settings, clean: Pair) -> Settings:
    return replace(
        settings,
        database_url=clean.primary_url,
        database_read_url=clean.replica_url,
        replica_max_lag_seconds=MAX_LAG_SECONDS,
    )


@pytest.fixture
def admin(clean: Pair) -> models.User:
    user = make_user(make_session_factory(clean.primary), role=models.Role.ADMIN)
    clean.caught_up()
    return user


@pytest.fixture
def admin_client(
    replica_settings: Settings, admin: models.User, tokens: TokenService
) -> FlaskClient:
    return authorized(create_app(replica_settings).test_client(), tokens, admin)


@pytest.fixture
def replication(clean: Pair) -> Iterator[Callable[[str], None]]:
    """Runs statements on the replica as root; replication runs undelayed again afterwards."""

    def run(statements: str) -> None:
        with clean.replica.connect() as connection:
            for statement in statements.split(";"):
                connection.exec_driver_sql(statement)

    yield run
    run("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=0; START SLAVE")
    clean.caught_up()


def counters(engine: Engine) -> dict[str, int]:
    names = ", ".join(f"'{name}'" for name in COUNTERS)
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})"
        ).all()
    return {name: int(value) for name, value in rows}


def counted(engine: Engine, run: Callable[[], object]) -> dict[str, int]:
    """How far each counter moved while `run` ran, less the one statement that read them."""
    before = counters(engine)
    run()
    after = counters(engine)
    moved = {name: after[name] - before[name] for name in COUNTERS}
    moved["Questions"] -= 1
    return moved


def replica_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "db.replica"]


def until(condition: Callable[[], bool], *, act: Callable[[], object]) -> None:
    """`act` every tenth of a second until `condition` holds, for at most CHANGE_SECONDS."""
    deadline = time.monotonic() + CHANGE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "the app did not change its mind in time"
        act()
        time.sleep(0.1)


def test_reads_go_to_the_replica_and_writes_to_the_primary(
    admin_client: FlaskClient, clean: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    # Every pool holds its connection before counting: connecting sends statements too.
    gql(admin_client, USERS)
    writes = 5
    created: list[str] = []

    def create() -> None:
        for number in range(writes):
            body = gql(
                admin_client,
                CREATE_USER,
                input={"name": f"Reader {number}", "email": f"reader{number}@example.com"},
            )
            created.append(body["data"]["createUser"]["user"]["id"])

    on_primary: dict[str, int] = {}
    on_replica = counted(clean.replica, lambda: on_primary.update(counted(clean.primary, create)))
    assert on_primary["Com_insert"] == 2 * writes  # each user and its audit event
    # The replica answered nothing but the app's checks of its replication.
    assert on_replica["Questions"] - on_replica["Com_show_slave_status"] == 0

    clean.caught_up()
    requests = 2 * writes

    def read() -> None:
        for user_id in created:
            assert gql(admin_client, USER, id=user_id)["data"]["user"]["id"] == user_id
            assert gql(admin_client, USERS)["data"]["users"]["totalCount"] == writes + 1

    on_primary = {}
    on_replica = counted(clean.replica, lambda: on_primary.update(counted(clean.primary, read)))
    # Each request's authentication reads the primary (one SELECT); all else, the replica.
    assert on_primary["Questions"] == on_primary["Com_select"] == requests
    assert on_replica["Com_select"] >= requests
    assert on_replica["Questions"] - on_replica["Com_show_slave_status"] == on_replica["Com_select"]
    share = on_replica["Com_select"] / (on_replica["Com_select"] + on_primary["Com_select"])
    REPORT.append(
        f"replica's share of reads, signed-in user(id) and users(first: 5): {share:.0%} "
        f"({on_replica['Com_select']} SELECTs on the replica, {on_primary['Com_select']} on "
        f"the primary, {requests} requests)"
    )
    assert replica_log(caplog) == []


def test_a_request_reads_the_replica_until_it_writes(clean: Pair) -> None:
    pool = PoolOptions()
    primary = make_engine(clean.primary_url, pool)
    reading = make_reading_engine(clean.primary_url, pool)
    assert reading is not None
    replica = connect_replica(
        clean.replica_url, pool, request_timeout_seconds=5, max_lag_seconds=MAX_LAG_SECONDS
    )

    def server(uow: UnitOfWork) -> int:
        with uow:
            found = uow.connection().scalar(text("SELECT @@server_id"))
        assert isinstance(found, int)
        return found

    database = RequestConnection(make_session_factory(primary), reading, replica=replica)
    try:
        assert server(database.reading()) == 2  # .ci/mariadb-pair: the replica is server 2
        assert server(database.reading(current=True)) == 1
        users.create_user(
            database.unit_of_work(),
            NoopProvisioner(),
            name="Writer",
            email="writer@example.com",
            role=models.Role.USER,
        )
        assert server(database.reading()) == 1
    finally:
        database.close()
    expecting = RequestConnection(make_session_factory(primary), reading, replica=replica)
    expecting.expect_writes()
    try:
        assert server(expecting.reading()) == 1
    finally:
        expecting.close()
    primary.dispose()
    reading.dispose()


@pytest.fixture
def proxied_settings(replica_settings: Settings) -> Iterator[tuple[Settings, TcpProxy]]:
    url = make_url(replica_settings.database_read_url or "")
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 3306))
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    yield replace(replica_settings, database_read_url=proxied), proxy
    proxy.close()


def test_a_replica_that_is_down_sends_reads_to_the_primary(
    proxied_settings: tuple[Settings, TcpProxy],
    admin: models.User,
    tokens: TokenService,
    clean: Pair,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="db.replica")
    settings, proxy = proxied_settings
    app = create_app(settings)
    client = authorized(app.test_client(), tokens, admin)

    def read() -> None:
        assert gql(client, USER, id=str(admin.id))["data"]["user"]["email"] == admin.email

    read()  # connecting sends statements too: counted from the second request on
    assert counted(clean.replica, read)["Com_select"] == 1
    proxy.cut()
    # Not an error: the first read after the cut already comes from the primary.
    on_replica = counted(clean.replica, read)
    assert on_replica["Com_select"] == 0
    # Unreachable, or not answering its check: whichever the app tried first.
    (line,) = replica_log(caplog)
    assert line.startswith("reads go to the primary: the replica is ")
    for _ in range(15):  # across several checks, each of which finds it down
        read()
        time.sleep(0.1)
    assert len(replica_log(caplog)) == 1
    # Ready: the primary serves every request by itself.
    assert app.test_client().get("/readyz").status_code == 200

    proxy.restore()
    until(lambda: len(replica_log(caplog)) == 2, act=read)
    assert replica_log(caplog)[1] == (
        "reads go to the replica again: it replicates within the lag limit"
    )
    assert counted(clean.replica, read)["Com_select"] == 1


def test_a_replica_gone_silent_costs_a_request_its_timeouts_not_its_budget(
    proxied_settings: tuple[Settings, TcpProxy],
    admin: models.User,
    tokens: TokenService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings, proxy = proxied_settings
    # The primary's bounds too: a silent replica is waited for no longer than these.
    pool = PoolOptions(connect_timeout_seconds=0.5, read_timeout_seconds=0.5)
    client = authorized(
        create_app(replace(settings, database_pool=pool)).test_client(), tokens, admin
    )

    def read() -> float:
        started = time.monotonic()
        assert gql(client, USER, id=str(admin.id))["data"]["user"]["email"] == admin.email
        return time.monotonic() - started

    read()
    proxy.freeze()  # packets dropped both ways: nothing refused, nothing answered
    took = []
    for _ in range(25):  # across two checks or more, each of which waits its 0.5 s
        took.append(read())
        time.sleep(0.1)
    # The first: the pool's ping, then a new connection, each waiting its 0.5 s.
    assert max(took) < 2.0, took
    assert sorted(took)[len(took) // 2] < 0.2, took  # the others go to the primary at once
    assert len(replica_log(caplog)) == 1


def test_a_replica_that_stops_replicating_or_lags_loses_its_reads_until_it_catches_up(
    admin_client: FlaskClient,
    clean: Pair,
    replication: Callable[[str], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="db.replica")

    def read() -> None:
        gql(admin_client, USERS)

    def on_replica() -> bool:
        return counted(clean.replica, read)["Com_select"] > 0

    assert on_replica()
    replication("STOP SLAVE")
    until(lambda: not on_replica(), act=read)
    replication("START SLAVE")
    until(on_replica, act=read)
    assert replica_log(caplog) == [
        "reads go to the primary: the replica is not replicating (SHOW REPLICA STATUS: none, "
        "or a thread stopped)",
        "reads go to the replica again: it replicates within the lag limit",
    ]
    caplog.clear()

    replication("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=60; START SLAVE")
    body = gql(admin_client, CREATE_USER, input={"name": "Late", "email": "late@example.com"})
    late = body["data"]["createUser"]["user"]["id"]
    until(lambda: len(replica_log(caplog)) == 1, act=read)
    assert replica_log(caplog)[0].startswith("reads go to the primary: the replica is ")
    assert replica_log(caplog)[0].endswith(
        " s behind the primary, more than DB_REPLICA_MAX_LAG_SECONDS (1)"
    )
    # The replica has not applied the new user yet; the primary, which now answers, has it.
    found = gql(admin_client, USER, id=late)["data"]["user"]
    assert found == {"id": late, "email": "late@example.com"}
    assert not on_replica()

    replication("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=0; START SLAVE")
    until(on_replica, act=read)
    assert replica_log(caplog)[1:] == [
        "reads go to the replica again: it replicates within the lag limit"
    ]
