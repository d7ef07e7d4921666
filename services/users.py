import functools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import (
    Column,
    CursorResult,
    Select,
    Table,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from db import models
from db.base import utc_now
from services import audit
from services.errors import (
    CannotTargetSelf,
    DatabaseUnavailable,
    EmailTaken,
    LastActiveAdmin,
    UserNotFound,
)
from services.provisioning import NewUser, Provisioner, RemovedUser
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
    @property
    def deactivated_at(self) -> datetime | None: ...
    @property
    def tokens_valid_after(self) -> datetime | None: ...


USERS = cast(Table, models.User.__table__)
SESSIONS = cast(Table, models.Session.__table__)
USER_FIELDS = (
    "id",
    "name",
    "email",
    "role",
    "created_at",
    "updated_at",
    "deactivated_at",
    "tokens_valid_after",
)
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
def _user_by_id(fields: frozenset[str] | None, *, active_only: bool = False) -> Select[Any]:
    query = select(*_columns(fields)).where(USERS.c.id == bindparam("user_id"))
    return query.where(USERS.c.deactivated_at.is_(None)) if active_only else query


@functools.cache
def _users_by_id(fields: frozenset[str] | None, *, active_only: bool) -> Select[Any]:
    # An expanding parameter: one statement for any number of ids, cached once per set of
    # columns as the others are.
    query = select(*_columns(fields)).where(USERS.c.id.in_(bindparam("user_ids", expanding=True)))
    return query.where(USERS.c.deactivated_at.is_(None)) if active_only else query


@functools.cache
def _page(fields: frozenset[str] | None, *, after: bool, active: bool | None) -> Select[Any]:
    query = select(*_columns(fields)).order_by(USERS.c.id).limit(bindparam("limit"))
    if active is not None:
        deactivated = USERS.c.deactivated_at
        query = query.where(deactivated.is_(None) if active else deactivated.is_not(None))
    return query.where(USERS.c.id > bindparam("after_id")) if after else query


_INSERT_USER = insert(USERS)
_USER_FOR_UPDATE = _user_by_id(None).with_for_update()


def _known(fields: Collection[str] | None) -> frozenset[str] | None:
    return None if fields is None else frozenset(fields).intersection(USER_FIELDS)


@dataclass(frozen=True, slots=True)
class UserPage:
    users: Sequence[UserRecord]
    has_next_page: bool
    total_count: int | None


def normalize_email(email: str) -> str:
    return email.strip().lower()


@dataclass(frozen=True, slots=True)
class UserChanges:
    """What an update sets; None leaves an attribute as it is."""

    name: str | None = None
    email: str | None = None
    role: models.Role | None = None


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
    now = utc_now()
    values = {
        "name": name.strip(),
        "email": email,
        "role": role,
        "created_at": now,
        "updated_at": now,
        "deactivated_at": None,
        "tokens_valid_after": None,
    }
    with uow:
        # A Core INSERT, not the ORM's flush: for one row the unit of work's bookkeeping
        # costs more than the statement.
        try:
            inserted = uow.connection().execute(_INSERT_USER, values)
        except IntegrityError as error:
            # The unique index decides, for concurrent requests too: a read before the write
            # would cost every creation a round trip and still not settle a race.
            raise EmailTaken(email) from error
        (user_id,) = inserted.inserted_primary_key or (None,)
        user = models.User(id=user_id, **values)
        provisioner.provision(
            NewUser(id=user.id, name=user.name, email=email, role=role.value, created_at=now)
        )
        created = {"name": user.name, "email": email, "role": role.value}
        uow.record("user.created", target_user_id=user.id, changed=audit.changes({}, created))
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
            uow.session.flush()
            role_change = {"role": (models.Role.USER.value, models.Role.ADMIN.value)}
            uow.record("user.role_changed", target_user_id=user.id, changed=role_change)
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
    uow: UnitOfWork,
    *,
    user_id: int,
    fields: Collection[str] | None = None,
    active_only: bool = False,
) -> UserRecord | None:
    """The user with this id, or None (also when deactivated, with `active_only`); with
    `fields`, only those attributes (see UserRecord)."""
    query = _user_by_id(_known(fields), active_only=active_only)
    with uow:
        row = uow.connection().execute(query, {"user_id": user_id}).first()
        return cast(UserRecord | None, row)


def get_users(
    uow: UnitOfWork,
    *,
    user_ids: Sequence[int],
    fields: Collection[str] | None = None,
    active_only: bool = False,
) -> list[UserRecord | None]:
    """The users with these ids, in their order, None for each id that names nobody (also a
    deactivated user, with `active_only`); one statement however many ids. With `fields`,
    only those attributes (see UserRecord)."""
    if not user_ids:
        return []
    query = _users_by_id(_known(fields), active_only=active_only)
    with uow:
        rows = uow.connection().execute(query, {"user_ids": sorted(set(user_ids))}).all()
    found = {row.id: cast(UserRecord, row) for row in rows}
    return [found.get(user_id) for user_id in user_ids]


def list_users(
    uow: UnitOfWork,
    *,
    first: int,
    after_id: int | None = None,
    with_total: bool = False,
    fields: Collection[str] | None = None,
    active: bool | None = None,
) -> UserPage:
    """Users ordered by id, `first` of them after `after_id`; two statements at most. With
    `fields`, only those attributes (see UserRecord); with `active`, only the active users
    (True) or the deactivated ones (False). The total counts every user.

    Keyset pagination: the page costs the same however deep it is. Raises ValueError when
    `first` is outside 1..MAX_PAGE_SIZE.
    """
    if not 1 <= first <= MAX_PAGE_SIZE:
        raise ValueError(f"first must be between 1 and {MAX_PAGE_SIZE}")
    query = _page(_known(fields), after=after_id is not None, active=active)
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


# Every change that can lower the number of active admins locks the active admins' rows first,
# then its target: one order, so two admins acting on each other at once wait for one another
# instead of deadlocking, and the second sees what the first did.


# InnoDB's deadlock: it rolled the whole transaction back, which may simply run again.
_DEADLOCK = 1213
_ATTEMPTS = 3
T = TypeVar("T")


def _retrying_deadlocks(operation: Callable[[], T]) -> T:
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return operation()
        except DatabaseUnavailable as error:
            orig = getattr(error.__cause__, "orig", None)
            code = orig.args[0] if orig is not None and orig.args else None
            if code != _DEADLOCK or attempt == _ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _active_admins(uow: UnitOfWork) -> list[int]:
    query = (
        select(models.User.id)
        .where(models.User.role == models.Role.ADMIN, models.User.deactivated_at.is_(None))
        .with_for_update()
    )
    return list(uow.session.scalars(query))


def _target(uow: UnitOfWork, user_id: int) -> models.User:
    user = uow.session.get(models.User, user_id, with_for_update=True)
    if user is None:
        raise UserNotFound(user_id)
    return user


def _keep_an_admin(admins: list[int], user_id: int) -> None:
    if user_id in admins and len(admins) <= 1:
        raise LastActiveAdmin()


def revoke_sessions(uow: UnitOfWork, user_id: int, now: datetime) -> int:
    """Revokes the user's open sessions, in the caller's transaction; how many there were."""
    revoked: CursorResult[Any] = uow.session.execute(  # type: ignore[assignment]
        update(SESSIONS)
        .where(SESSIONS.c.user_id == user_id, SESSIONS.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(revoked.rowcount)


def end_sessions(uow: UnitOfWork, user_id: int, now: datetime) -> int:
    """Revokes the user's sessions and refuses every access token issued before `now`, in the
    caller's transaction; how many sessions were still open."""
    # The cut-off is no change of the user's own: updatedAt stays.
    uow.session.execute(
        update(USERS)
        .where(USERS.c.id == user_id)
        .values(tokens_valid_after=now, updated_at=USERS.c.updated_at)
    )
    return revoke_sessions(uow, user_id, now)


def update_user(uow: UnitOfWork, *, user_id: int, changes: UserChanges) -> models.User:
    """Applies the changes; an attribute set to its current value is no change, and an update
    that changes nothing writes nothing. A demotion ends the user's sessions.

    Raises UserNotFound, EmailTaken (also when a concurrent request wins the race) and
    LastActiveAdmin.
    """
    return _retrying_deadlocks(lambda: _update_user(uow, user_id, changes))


def _update_user(uow: UnitOfWork, user_id: int, changes: UserChanges) -> models.User:
    with uow:
        admins = _active_admins(uow) if changes.role is models.Role.USER else []
        # Core statements, as in create_user: the row locked, then one UPDATE of what changed.
        connection = uow.connection()
        row = connection.execute(_USER_FOR_UPDATE, {"user_id": user_id}).first()
        if row is None:
            raise UserNotFound(user_id)
        current = dict(row._mapping)
        wanted = {
            "name": None if changes.name is None else changes.name.strip(),
            "email": None if changes.email is None else normalize_email(changes.email),
            "role": changes.role,
        }
        values: dict[str, Any] = {
            name: value
            for name, value in wanted.items()
            if value is not None and value != current[name]
        }
        if values:
            now = values["updated_at"] = utc_now()
            if values.get("role") is models.Role.USER:
                _keep_an_admin(admins, user_id)
                values["tokens_valid_after"] = now
                revoke_sessions(uow, user_id, now)
            try:
                connection.execute(update(USERS).where(USERS.c.id == user_id).values(**values))
            except IntegrityError as error:
                raise EmailTaken(values.get("email", current["email"])) from error
            changed: dict[str, tuple[Any, Any]] = {
                name: (current[name], values[name])
                for name in ("name", "email", "role")
                if name in values
            }
            action = "user.role_changed" if "role" in changed else "user.updated"
            uow.record(action, target_user_id=user_id, changed=changed)
        uow.commit()
        return models.User(**{**current, **values})


def set_active(uow: UnitOfWork, *, actor_id: int, user_id: int, active: bool) -> models.User:
    """Deactivates (ending every session) or reactivates the user; doing it twice changes
    nothing more. Raises UserNotFound, CannotTargetSelf and LastActiveAdmin."""
    return _retrying_deadlocks(lambda: _set_active(uow, actor_id, user_id, active))


def _set_active(uow: UnitOfWork, actor_id: int, user_id: int, active: bool) -> models.User:
    with uow:
        admins = [] if active else _active_admins(uow)
        user = _target(uow, user_id)
        if user.id == actor_id:
            raise CannotTargetSelf("reactivate" if active else "deactivate")
        if active and user.deactivated_at is not None:
            changed: dict[str, tuple[Any, Any]] = {"deactivated_at": (user.deactivated_at, None)}
            user.deactivated_at = None
            uow.session.flush()
            uow.record("user.reactivated", target_user_id=user.id, changed=changed)
        elif not active and user.deactivated_at is None:
            _keep_an_admin(admins, user.id)
            user.deactivated_at = user.tokens_valid_after = utc_now()
            revoke_sessions(uow, user.id, user.deactivated_at)
            uow.session.flush()
            changed = {"deactivated_at": (None, user.deactivated_at)}
            uow.record("user.deactivated", target_user_id=user.id, changed=changed)
        uow.commit()
        return user


def delete_user(
    uow: UnitOfWork, provisioner: Provisioner, *, actor_id: int, user_id: int
) -> RemovedUser:
    """Deletes the user and their sessions, and deprovisions them, in one transaction: a
    refusal by the provisioning service leaves the user as they were. Raises UserNotFound,
    CannotTargetSelf, LastActiveAdmin and ProvisioningError."""
    return _retrying_deadlocks(lambda: _delete_user(uow, provisioner, actor_id, user_id))


def _delete_user(
    uow: UnitOfWork, provisioner: Provisioner, actor_id: int, user_id: int
) -> RemovedUser:
    with uow:
        admins = _active_admins(uow)
        user = _target(uow, user_id)
        if user.id == actor_id:
            raise CannotTargetSelf("delete")
        _keep_an_admin(admins, user.id)
        removed = RemovedUser(id=user.id, email=user.email, deleted_at=utc_now())
        gone = {"name": user.name, "email": user.email, "role": user.role.value}
        uow.session.delete(user)
        uow.session.flush()
        uow.record("user.deleted", target_user_id=removed.id, changed=audit.changes(gone, {}))
        provisioner.deprovision(removed)
        uow.commit()
        return removed
