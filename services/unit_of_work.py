import logging
from types import TracebackType
from typing import Self

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from services.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

# The connection failed, not the statement: the server is down, unreachable, too slow, or
# every pooled connection is busy.
_OUTAGES = (OperationalError, InterfaceError, PoolTimeout)


class UnitOfWork:
    """One database transaction: committed only by an explicit `commit()`, else rolled back."""

    session: Session

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def __enter__(self) -> Self:
        self.session = self._session_factory()
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
            # The driver's own error only: the wrapper's text carries the SQL and parameters.
            logger.warning("database unavailable: %s", getattr(exc, "orig", None) or exc)
            raise DatabaseUnavailable("The database is unavailable; try again shortly.") from exc

    def commit(self) -> None:
        self.session.commit()
