import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Column, Select, Table, bindparam, func, select
from sqlalchemy.exc import IntegrityError

from db import models
from services.errors import EmailTaken
from services.provisioning import NewUser, Provisioner
from services.unit_of_work import UnitOfWork

MAX_PAGE_SIZE = 100


class UserRecord(Protocol):
    """What a read returns of a user: an ORM object, or a plain row where that is cheaper.

    A read given `fields` returns rows with those attributes (and `id`) only: reading
    another one is an AttributeError, so ask for every attribute the caller will read.
    """

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def role(self) -> models.Role: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...


USERS = cast(Table, models.User.__table__)
USER_FIELDS = ("id", "name", "email", "role", "created_at", "updated_at")
"""The attributes of a UserRecord, in column order."""


def _columns(fields: frozenset[str] | None) -> list[Column[Any]]:
    return [
        USERS.c[name] for name in USER_FIELDS if fields is None or name == "id" or name in fields
    ]


# Reads select table columns, not ORM attributes, and so return plain rows: building ORM
# objects, and a column nobody reads (a datetime costs the driver the most), cost more than the
# rest of the read. Each statement is built once per set of columns (at most 2**5): building
# one and its cache key costs as much as running it.


@functools.cache
def _user_by_id(fields: frozenset[str] | None) -> Select[Any]:
    return select(*_columns(fields)).where(USERS.c.id == bindparam("user_id"))


@functools.cache
def _page(fields: frozenset[str] | None, *, after: bool) -> Select[Any]:
    query = select(*_columns(fields)).order_by(USERS.c.id).limit(bindparam("limit"))
    return query.where(USERS.c.id > bindparam("after_id")) if after else query


def _known(fields: Collection[str] | None) -> frozenset[str] | None:
    return None if fields is None else frozenset(fields).intersection(USER_FIELDS)


@dataclass(frozen=True, slots=True)
class UserPage:
    users: Sequence[UserRecord]
    has_next_page: bool
    total_count: int | None


def normalize_email(email: str) -> str:
    return email.strip().lower()


def create_user(
    uow: UnitOfWork,
    provisioner: Provisioner,
    *,
    name: str,
    email: str,
    role: models.Role = models.Role.USER,
) -> models.User:
    """Create a user and provision it, in one transaction.

    The provisioner runs after the row is written and before the commit, so a refusal leaves
    nothing behind. Raises EmailTaken (in any letter case, also when a concurrent request wins
    the race) and ProvisioningError.
    """
    email = normalize_email(email)
    with uow:
        if uow.session.scalar(select(models.User.id).where(models.User.email == email)):
            raise EmailTaken(email)
        user = models.User(name=name.strip(), email=email, role=role)
        uow.session.add(user)
        try:
            uow.session.flush()
        except IntegrityError as error:
            # Another transaction inserted the same email after our check.
            raise EmailTaken(email) from error
        provisioner.provision(
            NewUser(
                id=user.id,
                name=user.name,
                email=user.email,
                role=user.role.value,
                created_at=user.created_at,
            )
        )
        uow.commit()
        return user


def ensure_admin(
    uow: UnitOfWork, provisioner: Provisioner, *, name: str, email: str
) -> tuple[models.User, bool]:
    """The admin with this email, created (and provisioned) or promoted if need be.

    Idempotent. Returns the user and whether anything changed. Raises ProvisioningError.
    """
    email = normalize_email(email)
    with uow:
        user = uow.session.scalar(select(models.User).where(models.User.email == email))
        if user is not None:
            if user.role is models.Role.ADMIN:
                return user, False
            user.role = models.Role.ADMIN
            uow.commit()
            return user, True
    return create_user(uow, provisioner, name=name, email=email, role=models.Role.ADMIN), True


def development_user(
    uow: UnitOfWork, provisioner: Provisioner, *, role: models.Role
) -> models.User:
    """A user who has exactly this role, for development tools: the first there is, or a new
    one. Raises ProvisioningError."""
    with uow:
        existing = uow.session.scalar(
            select(models.User).where(models.User.role == role).order_by(models.User.id).limit(1)
        )
    if existing is not None:
        return existing
    name = f"GraphiQL {role.value.title()}"
    email = f"graphiql-{role.value.lower()}@userql.test"
    return create_user(uow, provisioner, name=name, email=email, role=role)


def get_user(
    uow: UnitOfWork, *, user_id: int, fields: Collection[str] | None = None
) -> UserRecord | None:
    """The user with this id, or None; with `fields`, only those attributes (see UserRecord)."""
    query = _user_by_id(_known(fields))
    with uow:
        row = uow.connection().execute(query, {"user_id": user_id}).first()
        return cast(UserRecord | None, row)


def list_users(
    uow: UnitOfWork,
    *,
    first: int,
    after_id: int | None = None,
    with_total: bool = False,
    fields: Collection[str] | None = None,
) -> UserPage:
    """Users ordered by id, `first` of them after `after_id`; two statements at most. With
    `fields`, only those attributes (see UserRecord).

    Keyset pagination: the page costs the same however deep it is. Raises ValueError when
    `first` is outside 1..MAX_PAGE_SIZE.
    """
    if not 1 <= first <= MAX_PAGE_SIZE:
        raise ValueError(f"first must be between 1 and {MAX_PAGE_SIZE}")
    query = _page(_known(fields), after=after_id is not None)
    # One row past the page tells whether another page exists, without a second query.
    parameters = {"limit": first + 1, "after_id": after_id}
    with uow:
        rows = cast(list[UserRecord], uow.connection().execute(query, parameters).all())
        total = _count(uow) if with_total else None
    return UserPage(users=rows[:first], has_next_page=len(rows) > first, total_count=total)


def count_users(uow: UnitOfWork) -> int:
    """How many users exist."""
    with uow:
        return _count(uow)


def _count(uow: UnitOfWork) -> int:
    return uow.connection().scalar(select(func.count()).select_from(USERS)) or 0
