import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import inspect, text

from services.errors import DatabaseUnavailable
from services.unit_of_work import UnitOfWork

# Where alembic records the revision a database is at.
VERSION_TABLE = "alembic_version"


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str | None = None


def check_readiness(uow: UnitOfWork, *, expected_revision: str) -> Readiness:
    """Whether the database answers and its schema is at `expected_revision`."""
    try:
        with uow:
            connection = uow.connection()
            current = None
            if inspect(connection).has_table(VERSION_TABLE):
                current = connection.scalar(text(f"SELECT version_num FROM {VERSION_TABLE}"))  # noqa: S608 - a constant
    except DatabaseUnavailable:
        return Readiness(ready=False, reason="the database is unreachable")
    if current != expected_revision:
        return Readiness(
            ready=False,
            reason=f"the database schema is at {current or 'no revision'}, "
            f"the code expects {expected_revision}; run `userql migrate`",
        )
    return Readiness(ready=True)


class ReadinessProbe:
    """Readiness, checked at most once per `max_age_seconds` however many probes ask.

    A probe never waits for another probe's check: while one check runs, the others get the
    last answer. So a slow database costs one check's timeout per period, and probes cannot
    pile up on workers.
    """

    def __init__(
        self,
        check: Callable[[], Readiness],
        *,
        max_age_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._max_age = max_age_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._checking = threading.Lock()
        self._last: Readiness | None = None
        self._checked_at = -math.inf

    def current(self) -> Readiness:
        with self._lock:
            if self._last is not None and self._clock() - self._checked_at < self._max_age:
                return self._last
        if not self._checking.acquire(blocking=False):
            with self._lock:
                return self._last or Readiness(ready=False, reason="the first check is under way")
        try:
            readiness = self._check()
            with self._lock:
                self._last, self._checked_at = readiness, self._clock()
            return readiness
        finally:
            self._checking.release()
