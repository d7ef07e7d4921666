from types import TracebackType
from typing import Self

from sqlalchemy.orm import Session, sessionmaker


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

    def commit(self) -> None:
        self.session.commit()
