import logging
from collections.abc import Callable
from types import TracebackType
from typing import NoReturn, Self

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from services.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

# The connection failed, not the statement: the server is down, unreachable, too slow, or
# every pooled connection is busy.
_OUTAGES = (OperationalError, InterfaceError, PoolTimeout)


def _unavailable(error: BaseException) -> NoReturn:
    # The driver's own error only: the wrapper's text carries the SQL and parameters.
    logger.warning("database unavailable: %s", getattr(error, "orig", None) or error)
    raise DatabaseUnavailable("The database is unavailable; try again shortly.") from error


class UnitOfWork:
    """One database transaction: committed only by an explicit `commit()`, else rolled back."""

    session: Session

    def __init__(self, session_factory: Callable[[], Session]) -> None:
        self._session_factory = session_factory

    def __enter__(self) -> Self:
        try:
            self.session = self._session_factory()
        except _OUTAGES as error:
            _unavailable(error)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Closing rolls back whatever was not committed: on an exception or an early return
        # everything the use case wrote is discarded. Unlike rollback() it does not expire
        # the loaded objects, so what a read service returns stays readable.
        self.session.close()
        if isinstance(exc, _OUTAGES):
            _unavailable(exc)

    def commit(self) -> None:
        self.session.commit()


class RequestConnection:
    """Lends one pooled connection to every unit of work of one request.

    Checking a connection out of the pool pings the server and returning it rolls back: done
    once per request instead of once per unit of work (authentication, then the operation).
    Each unit of work is still a transaction of its own. The connection is checked out on
    first use, so a request that reads nothing takes none; `close()` gives it back.
    """

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory
        self._connection: Connection | None = None

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self._session)

    def _session(self) -> Session:
        bind = self._session_factory.kw.get("bind")
        if not isinstance(bind, Engine):
            return self._session_factory()  # already bound to one connection
        if self._connection is None:
            self._connection = bind.connect()
        return self._session_factory(bind=self._connection)

    def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()
