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
