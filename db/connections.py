"""What a server process talks to the database with, built once per worker."""

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db import session
from db.replica import ReplicaReads, connect_replica


@dataclass(frozen=True, slots=True)
class Databases:
    session_factory: sessionmaker[Session]
    """Sessions for writes (and, without a reading engine, for reads)."""
    reading_engine: Engine | None
    """Where requests read on MySQL and MariaDB (db.session.make_reading_engine)."""
    readiness_factory: sessionmaker[Session]
    """Sessions for readiness checks, on a pool of their own."""
    replica: ReplicaReads | None = None
    """Reads from DATABASE_READ_URL while it may be read (db.replica)."""

    @classmethod
    def given(cls, session_factory: sessionmaker[Session]) -> "Databases":
        """One session factory for everything (the tests')."""
        return cls(session_factory, None, session_factory)


def connect(
    url: str,
    read_url: str | None,
    pool: session.PoolOptions,
    wait_seconds: float,
    *,
    request_timeout_seconds: float,
    max_lag_seconds: float,
) -> Databases:
    """The primary as db.session.connect makes it (waiting up to `wait_seconds`), and the
    replica at `read_url` if there is one. Readiness asks the primary only: without the
    replica, reads go there."""
    writes, reads, readiness = session.connect(
        url, pool, wait_seconds, request_timeout_seconds=request_timeout_seconds
    )
    replica = (
        None
        if read_url is None
        else connect_replica(
            read_url,
            pool,
            request_timeout_seconds=request_timeout_seconds,
            max_lag_seconds=max_lag_seconds,
        )
    )
    return Databases(writes, reads, readiness, replica)
