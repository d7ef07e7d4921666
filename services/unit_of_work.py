import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, NoReturn, Self

from sqlalchemy import Connection, Engine, Transaction
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from db.deadline import DeadlineExceeded
from db.replica import ReplicaReads
from services import audit
from services.errors import DatabaseUnavailable, OutcomeUnknown, RequestTimedOut

logger = logging.getLogger(__name__)

# The connection failed, not the statement: the server is down, unreachable, too slow, or
# every pooled connection is busy.
_OUTAGES = (OperationalError, InterfaceError, PoolTimeout)


def _unavailable(error: BaseException) -> NoReturn:
    # The driver's own error only: the wrapper's text carries the SQL and parameters.
    logger.warning("database unavailable: %s", getattr(error, "orig", None) or error)
    raise DatabaseUnavailable("The database is unavailable; try again shortly.") from error


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """For statements run outside a unit of work: the same errors as inside one."""
    try:
        yield
    except _OUTAGES as error:
        _unavailable(error)
    except DeadlineExceeded as error:
        raise RequestTimedOut("The request ran out of time; nothing was saved.") from error


class UnitOfWork:
    """One database transaction: committed only by an explicit `commit()`, else rolled back.

    A read-only one may share its transaction with other reads (see RequestConnection) and
    refuses to commit. The session is opened on first use, inside the `with` block, where an
    outage becomes DatabaseUnavailable like any other.
    """

    def __init__(
        self,
        session_factory: Callable[[], Session],
        *,
        read_only: bool = False,
        connection_factory: Callable[[], Connection | None] | None = None,
        trail: audit.AuditTrail = audit.UNATTRIBUTED,
        held: bool = False,
    ) -> None:
        self._session_factory = session_factory
        self._trail = trail
        self._held = held
        """While the request holds its writes (RequestConnection.hold): commit() then only
        flushes, and a failure rolls the held transaction back."""
        self._committed = False
        self._connection_factory = connection_factory
        self._session: Session | None = None
        self._connection: Connection | None = None
        """The lent connection a writing unit of work ran Core statements on, without a
        Session: its transaction is this unit of work's to end."""
        self.read_only = read_only

    def __enter__(self) -> Self:
        return self

    @property
    def session(self) -> Session:
        """For ORM work: objects, identity, flushes."""
        if self._session is None:
            self._session = self._session_factory()
        return self._session

    def connection(self) -> Connection:
        """For Core statements: they run straight on the request's connection, reads and
        writes alike, since a Session costs a request more to open, commit and close than the
        statement it would run."""
        if self._session is not None:
            return self._session.connection()
        connection = None if self._connection_factory is None else self._connection_factory()
        if connection is None:
            return self.session.connection()
        if not self.read_only:
            self._connection = connection
        return connection

    def record(
        self, action: str, *, target_user_id: int | None, changed: Mapping[str, tuple[Any, Any]]
    ) -> None:
        """Writes an audit event of this unit of work's change, in its transaction: call it
        before commit(), so that the event commits with the change or not at all."""
        if self.read_only:
            raise RuntimeError("a read-only unit of work changes nothing to record")
        row = audit.event_row(self._trail, action, target_user_id, changed)
        self.connection().execute(audit.INSERT_EVENT, row)

    def _abandon_hold(self, connection: Connection | None) -> None:
        if not self._held or (self._session is None and connection is None):
            return  # wrote nothing
        with contextlib.suppress(*_OUTAGES):
            if self._session is not None:
                self._session.rollback()
            elif connection is not None and connection.in_transaction():
                connection.rollback()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Closing rolls back whatever was not committed: on an exception or an early return
        # everything the use case wrote is discarded. Unlike rollback() it does not expire
        # the loaded objects, so what a read service returns stays readable.
        connection, self._connection = self._connection, None
        if self._held and not self._committed:
            self._abandon_hold(connection)
        committed, self._committed = self._committed, False
        if self._session is not None:
            self._session.close()
            self._session = None
        elif connection is not None and not committed and connection.in_transaction():
            # A connection that went away took what was not committed with it.
            with contextlib.suppress(*_OUTAGES):
                connection.rollback()
        if isinstance(exc, _OUTAGES):
            _unavailable(exc)
        if isinstance(exc, DeadlineExceeded):
            raise RequestTimedOut("The request ran out of time; nothing was saved.") from exc

    def commit(self) -> None:
        """Commits. Raises OutcomeUnknown when the database went away after COMMIT was sent
        (the change may be saved or not); an outage before then is DatabaseUnavailable, and
        nothing was saved."""
        if self.read_only:
            raise RuntimeError("a read-only unit of work cannot commit; use unit_of_work()")
        self._committed = True
        if self._held:
            # The request commits its writes together (RequestConnection.release).
            if self._session is not None:
                self._session.commit()  # joined "rollback_only": it flushes, and no more
            return
        if self._session is None and self._connection is not None:
            ending: Callable[[], None] = self._connection.commit
        else:
            session = self.session
            session.flush()  # what fails here was never committed
            ending = session.commit
        try:
            ending()
        except _OUTAGES as error:
            logger.warning(
                "database went away during COMMIT; outcome unknown: %s",
                getattr(error, "orig", None) or error,
            )
            raise OutcomeUnknown(
                "The database stopped answering while saving; the change may or may not have "
                "been saved. Read it back before trying again."
            ) from error


class RequestConnection:
    """Lends one pooled connection to every unit of work of one request.

    Checking a connection out of the pool pings the server, and ending a transaction is a
    round trip too: a request pays each once, not once per unit of work. The reads of a
    request (authentication, then the operation's) share one transaction, rolled back when
    the request ends; a unit of work that writes continues it, and its commit ends both.
    Given a `reading_engine` (see db.session.make_reading_engine), the reads run on a
    connection of its own instead, with no transaction to end, unless the request expects
    to write (`expect_writes`). Given a `replica` too (db.replica), reads go there while it
    may be read, except those that must see the primary as it is now, and every read of a
    request once it has begun to write. Connections are checked out on first use, so a
    request that reads nothing takes none; `close()` gives them back.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        reading_engine: Engine | None = None,
        trail: audit.AuditTrail = audit.UNATTRIBUTED,
        replica: ReplicaReads | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._reading_engine = reading_engine
        self._trail = trail
        self._replica = replica
        self._connection: Connection | None = None
        self._reads: Connection | None = None
        self._replica_reads: Connection | None = None
        self._replica_asked = False
        self._reads_with_writes = False
        self._wrote = False
        self._holding = False
        self._held_savepoint: Transaction | None = None

    def expect_writes(self) -> None:
        """The request will probably write: its reads go on the writing connection, in the
        transaction its first write then continues, rather than on a connection of their own,
        which would cost a checkout and its ping more."""
        self._reads_with_writes = True

    def reading(self, *, current: bool = False) -> UnitOfWork:
        """For services that only read; `current`: from the primary, never a replica, for
        reads that must see every write committed so far (who the caller is, whether their
        token still holds)."""
        return UnitOfWork(
            functools.partial(self._reading_session, current=current),
            read_only=True,
            connection_factory=functools.partial(self._reading_connection, current=current),
        )

    def unit_of_work(self) -> UnitOfWork:
        """For services that write: in the request's transaction, which their commit ends
        (or, while the request holds its writes, `release()`)."""
        self._wrote = True
        return UnitOfWork(
            self._writing_session,
            connection_factory=self._checkout,
            trail=self._trail,
            held=self._holding,
        )

    def hold(self) -> Connection:
        """From now on the request's writes commit together, when `release()` says so, in
        the transaction of the connection returned (where a caller without a token looks up
        its key's earlier request). A unit of work that fails rolls it all back."""
        self._wrote = True
        connection = self._checkout()
        if connection is None:
            # A factory bound to a connection (the tests'): its sessions use savepoints,
            # and the hold is one more.
            bind = self._session_factory.kw["bind"]
            self._held_savepoint = bind.begin_nested()
            connection = bind
        elif not connection.in_transaction():
            connection.begin()
        self._holding = True
        return connection

    def release(self, write: Callable[[Connection], None] | None) -> None:
        """Ends the hold: `write(connection)` runs in the held transaction, then it commits;
        without `write`, or when it raises, everything is rolled back. Raises OutcomeUnknown
        as UnitOfWork.commit does."""
        self._holding = False
        savepoint, self._held_savepoint = self._held_savepoint, None
        connection = self._checkout() or self._session_factory.kw["bind"]

        def roll_back() -> None:
            with contextlib.suppress(*_OUTAGES):
                if savepoint is not None:
                    savepoint.rollback()
                elif connection.in_transaction():
                    connection.rollback()

        if write is None:
            roll_back()
            return
        try:
            write(connection)
        except BaseException:
            roll_back()
            raise
        if savepoint is not None:
            savepoint.commit()
            return
        try:
            connection.commit()
        except _OUTAGES as error:
            raise OutcomeUnknown(
                "The database stopped answering while saving; the change may or may not have "
                "been saved. Read it back before trying again."
            ) from error

    def _reading_session(self, *, current: bool = False) -> Session:
        connection = self._reading_connection(current=current)
        if connection is None:
            return self._session_factory()
        # Joined to a transaction it did not begin, the session leaves it open when it closes.
        return self._session_factory(bind=connection)

    def _reading_connection(self, *, current: bool = False) -> Connection | None:
        if not current and (replica := self._replica_connection()) is not None:
            return replica
        if self._reading_engine is not None and not self._reads_with_writes:
            if self._reads is None:
                self._reads = self._reading_engine.connect()
            return self._reads
        connection = self._checkout()
        if connection is not None and not connection.in_transaction():
            connection.begin()
        return connection

    def _replica_connection(self) -> Connection | None:
        """The request's connection to the replica; None when its reads go to the primary:
        it expects to write or has written (its own writes are there), or the replica may
        not be read now. A replica that cannot be reached sends this request's reads, and
        the process's until its next check, to the primary."""
        if self._replica is None or self._reads_with_writes or self._wrote:
            return None
        if not self._replica_asked:
            self._replica_asked = True
            engine = self._replica.engine()
            if engine is not None:
                try:
                    self._replica_reads = engine.connect()
                except _OUTAGES as error:
                    self._replica.failed(error)
        return self._replica_reads

    def _writing_session(self) -> Session:
        connection = self._checkout()
        if connection is None:
            return self._session_factory()
        if self._holding:
            # The hold's transaction: the session flushes into it, and rolls it back if it
            # fails, but commits nothing (see release()).
            if not connection.in_transaction():
                connection.begin()
            return self._session_factory(bind=connection, join_transaction_mode="rollback_only")
        if connection.in_transaction():
            # The reads' transaction: the write continues it, and its commit or rollback
            # ends both (reads at READ COMMITTED promise nothing a transaction would keep).
            return self._session_factory(bind=connection, join_transaction_mode="control_fully")
        return self._session_factory(bind=connection)

    def _checkout(self) -> Connection | None:
        """The request's connection; None when the factory is bound to one already."""
        bind = self._session_factory.kw.get("bind")
        if not isinstance(bind, Engine):
            return None
        if self._connection is None:
            self._connection = bind.connect()
        return self._connection

    def close(self) -> None:
        held = (self._connection, self._reads, self._replica_reads)
        self._replica_reads = self._reads = self._connection = None
        # Each is closed even when closing another fails.
        with contextlib.ExitStack() as closing:
            for connection in held:
                if connection is not None:
                    closing.callback(connection.close)
