"""Reads from a replica (DATABASE_READ_URL): where a process sends its requests' reads, the
replica while it replicates within DB_REPLICA_MAX_LAG_SECONDS of the primary, else the
primary. Which one is decided once per check interval per process, not per request, and
each change of mind is one log line."""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from db.session import PoolOptions, make_reading_engine

logger = logging.getLogger(__name__)

# Often enough that a replica falling behind loses its reads within about a second, rarely
# enough that the check costs nothing next to the reads it routes.
CHECK_INTERVAL_SECONDS = 1.0
# The check runs inside a request (the one that finds it due): a replica that stopped
# answering costs that request this long, then the primary serves it. No pre-ping: a
# connection the replica dropped fails the check once, and the next one reconnects.
CHECK_POOL = PoolOptions(
    size=1,
    max_overflow=0,
    pre_ping=False,
    timeout_seconds=0.5,
    connect_timeout_seconds=0.5,
    read_timeout_seconds=0.5,
    statement_cap_seconds=0.5,
)


def replication_lag(engine: Engine) -> float | None:
    """Seconds the replica's applied changes trail the primary's (SHOW REPLICA STATUS, the
    worst of its channels); None when it does not replicate: none configured, a replication
    thread stopped, or the connection to the primary lost. Raises SQLAlchemyError when the
    replica cannot be asked, e.g. it is down or its user lacks REPLICA MONITOR (MariaDB) or
    REPLICATION CLIENT (MySQL)."""
    with engine.connect() as connection:
        rows = connection.exec_driver_sql("SHOW REPLICA STATUS").mappings().all()
    # MariaDB names the column after the master, MySQL 8.0.22 and later after the source.
    lags = [row.get("Seconds_Behind_Master", row.get("Seconds_Behind_Source")) for row in rows]
    if not lags or any(lag is None for lag in lags):
        return None
    return float(max(lags))


class ReplicaReads:
    """The replica's engine while reads may go there. A request that finds the check due
    runs it; requests meanwhile, and while it runs, take the last answer."""

    def __init__(
        self,
        replica: Engine,
        *,
        lag: Callable[[], float | None],
        max_lag_seconds: float,
        interval_seconds: float = CHECK_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._replica = replica
        self._lag = lag
        self._max_lag = max_lag_seconds
        self._interval = interval_seconds
        self._clock = clock
        self._checking = threading.Lock()
        self._switching = threading.Lock()
        self._next_check = clock()
        self._on_replica = True

    @property
    def replica(self) -> Engine:
        """The replica's engine, whether reads go there now or not."""
        return self._replica

    def engine(self) -> Engine | None:
        """The replica's engine, or None while reads go to the primary."""
        if self._clock() >= self._next_check and self._checking.acquire(blocking=False):
            try:
                self._check()
            finally:
                self._checking.release()
        return self._replica if self._on_replica else None

    def failed(self, error: BaseException) -> None:
        """A connection to the replica could not be had: reads go to the primary until the
        next check finds the replica well."""
        self._next_check = self._clock() + self._interval
        self._switch(f"unreachable ({getattr(error, 'orig', None) or error})")

    def _check(self) -> None:
        # Due again an interval from now, whatever this check ends in: a replica that fails
        # to answer is asked once per interval, not by every request.
        self._next_check = self._clock() + self._interval
        try:
            lag = self._lag()
        except SQLAlchemyError as error:
            self._switch(
                f"not answering SHOW REPLICA STATUS ({getattr(error, 'orig', None) or error})"
            )
            return
        if lag is None:
            self._switch("not replicating (SHOW REPLICA STATUS: none, or a thread stopped)")
        elif lag > self._max_lag:
            self._switch(
                f"{lag:g} s behind the primary, more than DB_REPLICA_MAX_LAG_SECONDS "
                f"({self._max_lag:g})"
            )
        else:
            self._switch(None)

    def _switch(self, trouble: str | None) -> None:
        with self._switching:
            on_replica = trouble is None
            if on_replica == self._on_replica:
                return
            self._on_replica = on_replica
        if trouble is None:
            logger.info("reads go to the replica again: it replicates within the lag limit")
        else:
            logger.warning("reads go to the primary: the replica is %s", trouble)


def connect_replica(
    url: str, pool: PoolOptions, *, request_timeout_seconds: float, max_lag_seconds: float
) -> ReplicaReads:
    """Requests' reads on the replica at `url`, through a pool like the primary's reading
    one, and its replication checked on a pool of its own with short timeouts. Nothing is
    asked of the replica here: the first request checks it."""
    check = make_reading_engine(url, CHECK_POOL)
    reads = make_reading_engine(url, replace(pool, statement_cap_seconds=request_timeout_seconds))
    if check is None or reads is None:
        raise ValueError("a replica must be MySQL or MariaDB")
    return ReplicaReads(reads, lag=lambda: replication_lag(check), max_lag_seconds=max_lag_seconds)
