import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pymysql.connections
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from db import statements
from db.deadline import bounded

logger = logging.getLogger(__name__)

# Longer than the provisioning timeout, so a writer waiting for SQLite's lock outlasts a
# transaction that is waiting on the provisioning webhook.
SQLITE_BUSY_TIMEOUT_SECONDS = 15.0
# Local state of a development install, the way Flask places instance data.
INSTANCE_DIR = Path(__file__).resolve().parent.parent / "instance"
# Each statement sees what was committed before it: a request that lost a race re-reads the
# winner's row, and concurrent inserts on a unique index take no gap locks.
MYSQL_ISOLATION_LEVEL = "READ COMMITTED"


@dataclass(frozen=True, slots=True)
class PoolOptions:
    size: int = 5
    max_overflow: int = 10
    # Below MySQL's default wait_timeout (8 hours) and the usual 1 hour of proxies.
    recycle_seconds: int = 1800
    pre_ping: bool = True
    timeout_seconds: float = 5.0
    """How long a request waits for a free pooled connection."""
    connect_timeout_seconds: float = 3.0
    read_timeout_seconds: float = 30.0
    """Bounds a statement on a connection whose server went silent."""
    statement_cap_seconds: float | None = None
    """The server itself stops a statement after this long (MariaDB's max_statement_time,
    MySQL's max_execution_time, which covers SELECTs); a server process sets it to its
    request budget, so no statement outlives the request that sent it. None: no cap (the
    CLI, whose migrations may take longer)."""


# Readiness asks the database on a pool of its own with short timeouts: a probe must answer
# within a second, whatever the requests' pool is waiting for.
READINESS_POOL = PoolOptions(
    size=1,
    max_overflow=1,
    timeout_seconds=0.5,
    connect_timeout_seconds=0.9,
    read_timeout_seconds=0.9,
)


def default_database_url() -> str:
    return f"sqlite:///{INSTANCE_DIR / 'userql.sqlite3'}"


def make_engine(url: str, pool: PoolOptions | None = None) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        return _make_sqlite_engine(url)
    pool = pool or PoolOptions()
    return _bounded(create_engine(url, **_server_options(url, pool)), pool)


def make_reading_engine(url: str, pool: PoolOptions | None = None) -> Engine | None:
    """An engine of its own for requests' reads on MySQL and MariaDB, whose connections run
    each statement on its own (autocommit); None elsewhere, where reads share the writers'.

    At READ COMMITTED a transaction of reads promises nothing its statements do not, yet
    ending one is a round trip to the server: the reads of a request pay for none. The pool is
    its own because switching a pooled connection in and out of autocommit costs a round trip
    each way; rollback is skipped only on a connection the server reports in autocommit.
    """
    if make_url(url).get_backend_name() not in ("mysql", "mariadb"):
        return None
    pool = pool or PoolOptions()
    options = _server_options(url, pool)
    options.update(isolation_level="AUTOCOMMIT", skip_autocommit_rollback=True)
    return _bounded(create_engine(url, **options), pool)


def _server_options(url: str, pool: PoolOptions) -> dict[str, Any]:
    parsed = make_url(url)
    options: dict[str, Any] = {
        "pool_size": pool.size,
        "max_overflow": pool.max_overflow,
        "pool_recycle": pool.recycle_seconds,
        "pool_pre_ping": pool.pre_ping,
        "pool_timeout": pool.timeout_seconds,
        "poolclass": DeadlinePool,
    }
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        options["isolation_level"] = MYSQL_ISOLATION_LEVEL
        # A Connection that closes with its transaction open rolls it back itself; one that
        # committed has nothing left to roll back, yet the pool would send a ROLLBACK on every
        # return: after each write, a round trip for nothing.
        options["pool_reset_on_return"] = None
    if parsed.get_driver_name() == "pymysql":
        options["connect_args"] = {
            "charset": "utf8mb4",
            "connect_timeout": pool.connect_timeout_seconds,
            # PyMySQL reads the server's greeting under read_timeout: a server that accepts
            # and stays silent must fail within the connect timeout, so the connection starts
            # with that and gets the statements' timeouts once connected (BoundedConnection).
            "read_timeout": pool.connect_timeout_seconds,
            "write_timeout": pool.connect_timeout_seconds,
        }
    return options


def _bounded(engine: Engine, pool: PoolOptions) -> Engine:
    """PyMySQL connections whose every statement, commit, rollback and ping waits no longer
    than the request's deadline (db.deadline) allows, within DB_READ_TIMEOUT_SECONDS (the
    ping: DB_CONNECT_TIMEOUT_SECONDS)."""
    if engine.dialect.driver != "pymysql":
        return engine

    # Once per new connection: no cost on the statements themselves, unlike a
    # before_cursor_execute listener, which puts SQLAlchemy's event dispatch on every one.
    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        return BoundedConnection(
            *args,
            statement_timeout=pool.read_timeout_seconds,
            ping_timeout=pool.connect_timeout_seconds,
            statement_cap=pool.statement_cap_seconds,
            **kwargs,
        )

    return engine


class BoundedConnection(pymysql.connections.Connection):  # type: ignore[misc]
    """A PyMySQL connection that sets its socket timeouts before each round trip it starts.

    PyMySQL applies its `_read_timeout`/`_write_timeout` attributes to the socket before
    each read and write (pymysql.connections, 1.1 and 1.2), which is what lets them change
    between statements of one connection; tests/integration/test_slow_database.py fails if
    a PyMySQL release stops doing so. Connecting (the server's greeting included) waits the
    connect timeout, passed as the read timeout of the handshake.
    """

    def __init__(
        self,
        *args: Any,
        statement_timeout: float,
        ping_timeout: float,
        statement_cap: float | None = None,
        **kwargs: Any,
    ) -> None:
        self._statement_timeout = statement_timeout
        self._ping_timeout = ping_timeout
        super().__init__(*args, **kwargs)
        if statement_cap is not None:
            if "mariadb" in self.get_server_info().lower():
                self.query(f"SET SESSION max_statement_time = {statement_cap:.3f}")
            else:
                self.query(f"SET SESSION max_execution_time = {round(statement_cap * 1000)}")

    def _within(self, seconds: float) -> None:
        self._read_timeout = self._write_timeout = bounded(seconds)

    def query(self, sql: Any, unbuffered: bool = False) -> Any:
        self._within(self._statement_timeout)
        statements.sent()
        return super().query(sql, unbuffered)

    def commit(self) -> None:
        self._within(self._statement_timeout)
        statements.sent()
        super().commit()

    def rollback(self) -> None:
        self._within(self._statement_timeout)
        statements.sent()
        super().rollback()

    def ping(self, *args: Any, **kwargs: Any) -> None:
        self._within(self._ping_timeout)
        super().ping(*args, **kwargs)


class DeadlinePool(QueuePool):
    """A QueuePool whose wait for a free connection is no longer than the request has left
    (db.deadline), within DB_POOL_TIMEOUT_SECONDS. QueuePool reads `_timeout` when it
    waits; here that attribute is the bounded value. recreate() (engine.dispose()) reads it
    too, and is called outside requests, where it is the configured value."""

    @property
    def _timeout(self) -> float:
        return bounded(self._pool_timeout)

    @_timeout.setter
    def _timeout(self, seconds: float) -> None:
        self._pool_timeout = seconds


def _make_sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})

    # sqlite3's own transaction handling skips BEGIN before SELECT and breaks SAVEPOINT; the
    # SQLAlchemy docs' recipe hands BEGIN to us. IMMEDIATE takes the write lock up front, so
    # concurrent writers queue on the busy timeout instead of failing when a read-then-write
    # transaction cannot upgrade its lock.
    @event.listens_for(engine, "connect")
    def _disable_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.set_trace_callback(statements.sent)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_session_factory(bind: Engine | Connection) -> sessionmaker[Session]:
    # Objects returned by a committed service stay readable after the session closes.
    return sessionmaker(bind=bind, expire_on_commit=False)


def wait_for_database(engine: Engine, *, seconds: float, interval: float = 1.0) -> bool:
    """Whether the database answered within `seconds`, trying every `interval`."""
    deadline = time.monotonic() + seconds
    attempt = 0
    while True:
        attempt += 1
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except (OperationalError, InterfaceError) as error:
            if time.monotonic() + interval > deadline:
                logger.error("database still unreachable at attempt %d: %s", attempt, error.orig)
                return False
            logger.warning("database not reachable yet (attempt %d): %s", attempt, error.orig)
            time.sleep(interval)
        else:
            if attempt > 1:
                logger.info("database reachable after %d attempts", attempt)
            return True


def connect(
    url: str, pool: PoolOptions, wait_seconds: float, *, request_timeout_seconds: float
) -> tuple[sessionmaker[Session], Engine | None, sessionmaker[Session]]:
    """What a server process talks to the database with: sessions for writes, the engine
    for reads (MySQL and MariaDB, else None), and sessions for readiness checks, each
    statement capped by the server at the request budget. Waits up to `wait_seconds` for
    the database, then goes on without it."""
    pool = replace(pool, statement_cap_seconds=request_timeout_seconds)
    engine = make_engine(url, pool)
    if not wait_for_database(engine, seconds=wait_seconds):
        logger.warning("starting without the database; /readyz answers 503 until it is back")
    return (
        make_session_factory(engine),
        make_reading_engine(url, pool),
        make_session_factory(make_engine(url, replace(READINESS_POOL, statement_cap_seconds=1.0))),
    )
