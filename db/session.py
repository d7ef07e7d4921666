from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

# Below MySQL's default wait_timeout (8 hours) and below the usual 1 hour of proxies and
# load balancers in front of managed databases.
POOL_RECYCLE_SECONDS = 1800
# Longer than the provisioning timeout, so a writer waiting for SQLite's lock outlasts a
# transaction that is waiting on the provisioning webhook.
SQLITE_BUSY_TIMEOUT_SECONDS = 15.0


# Local state of a development install, the way Flask places instance data.
INSTANCE_DIR = Path(__file__).resolve().parent.parent / "instance"


def default_database_url() -> str:
    return f"sqlite:///{INSTANCE_DIR / 'userql.sqlite3'}"


def make_engine(url: str, **engine_options: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _make_sqlite_engine(url, **engine_options)
    return create_engine(
        url, pool_pre_ping=True, pool_recycle=POOL_RECYCLE_SECONDS, **engine_options
    )


def _make_sqlite_engine(url: str, **engine_options: Any) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}, **engine_options
    )

    # sqlite3's own transaction handling skips BEGIN before SELECT and breaks SAVEPOINT; the
    # SQLAlchemy docs' recipe hands BEGIN to us. IMMEDIATE takes the write lock up front, so
    # concurrent writers queue on the busy timeout instead of failing when a read-then-write
    # transaction cannot upgrade its lock.
    @event.listens_for(engine, "connect")
    def _disable_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
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
