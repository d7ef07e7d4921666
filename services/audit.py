"""The audit log: one append-only row per change, written by the unit of work that makes the
change, before its commit, so that an event exists exactly when its change was committed.

Who acted comes from the unit of work's `Actor`: the request's caller, request id and
operation (see RequestConnection), or nobody for the command line. Secrets never reach a row:
services pass only the fields of a user that changed, and an email is kept as its SHA-256
when the log is set to redact it (AUDIT_REDACT_EMAIL).
"""

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, insert, select

from db import models
from db.base import utc_now

if TYPE_CHECKING:  # the unit of work writes events through this module
    from services.unit_of_work import UnitOfWork

AUDIT_EVENTS = cast(Table, models.AuditEvent.__table__)
INSERT_EVENT = insert(AUDIT_EVENTS)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes the changes of a unit of work, as the audit log records them."""

    user_id: int | None = None
    role: str | None = None
    """The role they acted with (after authentication narrowed it)."""
    request_id: str | None = None
    operation_name: str | None = None


NOBODY = Actor()


@dataclass(frozen=True, slots=True)
class AuditTrail:
    """How a unit of work's events are attributed and written."""

    actor: Callable[[], Actor] = lambda: NOBODY
    """Asked when an event is written: the operation's name is known only by then."""
    redact_email: bool = False


def _value(name: str, value: Any, trail: AuditTrail) -> Any:
    if value is None:
        return None
    if name == "email" and trail.redact_email:
        return "sha256:" + hashlib.sha256(str(value).encode()).hexdigest()
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The fields whose value differs, each with its value before and after."""
    return {
        name: (before.get(name), after.get(name))
        for name in dict.fromkeys([*before, *after])
        if before.get(name) != after.get(name)
    }


def encode(changed: Mapping[str, tuple[Any, Any]], trail: AuditTrail) -> str:
    return json.dumps(
        {
            name: {"before": _value(name, old, trail), "after": _value(name, new, trail)}
            for name, (old, new) in changed.items()
        },
        sort_keys=True,
    )


def event_row(
    trail: AuditTrail, action: str, target_user_id: int | None, changed: Mapping[str, Any]
) -> dict[str, Any]:
    actor = trail.actor()
    return {
        "occurred_at": utc_now(),
        "actor_id": actor.user_id,
        "actor_role": actor.role,
        "request_id": actor.request_id,
        "operation_name": None
        if actor.operation_name is None
        else actor.operation_name[: models.AUDIT_OPERATION_MAX_LENGTH],
        "action": action,
        "target_user_id": target_user_id,
        "changes": encode(changed, trail),
    }


UNATTRIBUTED = AuditTrail()
"""Events written by nobody in particular: the command line, and tests."""


MAX_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class AuditPage:
    events: Sequence[Any]
    """Rows with the columns of audit_events, newest first."""
    has_next_page: bool


def list_events(
    uow: "UnitOfWork",
    *,
    first: int,
    before_id: int | None = None,
    target_user_id: int | None = None,
    actor_id: int | None = None,
    action: str | None = None,
) -> AuditPage:
    """Events newest first, `first` of them older than `before_id`, matching every filter
    given; one statement, however deep the page (keyset pagination by id)."""
    if not 1 <= first <= MAX_PAGE_SIZE:
        raise ValueError(f"first must be between 1 and {MAX_PAGE_SIZE}")
    columns = AUDIT_EVENTS.c
    query = select(AUDIT_EVENTS).order_by(columns.id.desc()).limit(first + 1)
    if before_id is not None:
        query = query.where(columns.id < before_id)
    if target_user_id is not None:
        query = query.where(columns.target_user_id == target_user_id)
    if actor_id is not None:
        query = query.where(columns.actor_id == actor_id)
    if action is not None:
        query = query.where(columns.action == action)
    with uow:
        rows = uow.connection().execute(query).all()
    return AuditPage(events=rows[:first], has_next_page=len(rows) > first)
