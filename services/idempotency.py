"""Idempotency keys for mutations (the IETF httpapi draft "The Idempotency-Key HTTP Header
Field", as Stripe's API uses it).

A caller's first request with a key runs, and its answer is stored under the key in the
mutation's own transaction, just before it commits: the stored answer and the change commit
together or not at all. The row is written last so that a keyed mutation costs one statement
more than an unkeyed one: the earlier request under the key is read by the statement that
authenticates the caller. A repeat of the same request gets the stored answer and runs
nothing; the same key with another request is refused. A repeat that arrives while the first
still runs waits at the first row both write (the first holds it until it commits), or at the
key's unique index; its own writes are then rolled back and it gets the first's answer: the
database, not a flag, says whether the first finished.
"""

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, FromClause, Select, Table, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError

from db import models
from services.errors import ServiceError

KEYS = cast(Table, models.IdempotencyKey.__table__)
# Built once: a statement built per call costs a keyed mutation more than its round trip
# (the construct, then its cache key, each time).
_KEEP = insert(KEYS)
_OF_KEY = (KEYS.c.principal == bindparam("owner")) & (KEYS.c.key == bindparam("claimed"))
# The earlier request's id is all the caller's lookup reads beside the caller: each column of
# a result costs the driver its description on every request, and an earlier request is rare.
_EARLIER_ID = KEYS.c.id.label("earlier_id")
_EARLIER = select(_EARLIER_ID).where(_OF_KEY)
_STORED = select(KEYS).where(KEYS.c.id == bindparam("earlier"))
_DROP = delete(KEYS).where(KEYS.c.id == bindparam("dropped"))
# Made once: json.dumps with options builds an encoder on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
# 1 to 255 visible ASCII characters: the draft's sf-string, without the quotes and escapes.
KEY_SHAPE = re.compile(r"[\x21-\x7e]{1,255}")
# Expired rows that storing an answer removes on its way: enough to keep up with any rate of
# new keys, few enough to cost it next to nothing.
PURGED_PER_KEEP = 20
# It purges at most this often in each process: a statement on every keyed request would cost
# a keyed mutation more than the keys it removes are worth.
PURGE_EVERY_SECONDS = 10
_last_purge: datetime | None = None
# Answers that say something about the moment, not about the request: a retry must run again.
NOT_KEPT = frozenset(
    {
        "SERVICE_UNAVAILABLE",
        "REQUEST_TIMEOUT",
        "OUTCOME_UNKNOWN",
        "RATE_LIMITED",
        "GOOGLE_UNAVAILABLE",
        "INTERNAL",
        "UNAUTHENTICATED",
        "FORBIDDEN",
    }
)


class InvalidIdempotencyKey(ServiceError):
    code = "INVALID_IDEMPOTENCY_KEY"


class IdempotencyKeyReused(ServiceError):
    """The key was used for another request: a client bug, never a retry."""

    code = "IDEMPOTENCY_KEY_REUSED"


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    status: int
    content_type: str
    body: bytes


def checked_key(header: str) -> str:
    if not KEY_SHAPE.fullmatch(header):
        raise InvalidIdempotencyKey(
            "An Idempotency-Key is 1 to 255 visible ASCII characters (no spaces)."
        )
    return header


def request_hash(operations: list[tuple[str, str | None, Any]]) -> str:
    """What makes a repeat the same request: each operation's document, name and variables."""
    return hashlib.sha256(_CANONICAL.encode(operations).encode()).hexdigest()


def owner(user_id: int | None, address: str) -> str:
    """Whose key it is: a signed-in caller's, or a caller's without a token by their address."""
    return f"user:{user_id}" if user_id is not None else f"address:{address}"


def joined_to(selected: Select[Any], base: FromClause) -> Select[Any]:
    """`selected` (from `base`) with the id of the earlier request under the key `claimed` of
    `owner` beside it, in the same row (None when there is none): the caller's lookup and the
    key's share one round trip."""
    return selected.add_columns(_EARLIER_ID).select_from(base.outerjoin(KEYS, _OF_KEY))


def earlier_of(row: Any) -> int | None:
    """The earlier request's id in a row of a `joined_to` statement (or of none)."""
    return None if row is None else cast(int | None, row.earlier_id)


def lookup(connection: Connection, *, principal: str, key: str) -> int | None:
    """The earlier request's id under the key, for a caller whose lookup did not read it."""
    return earlier_of(connection.execute(_EARLIER, {"owner": principal, "claimed": key}).first())


def replayed(
    connection: Connection, earlier: int | None, digest: str, now: datetime
) -> StoredAnswer | None:
    """The answer to give instead of running: the earlier request's when it sent the same;
    None when the key is free (never used, or expired). Raises IdempotencyKeyReused when it
    sent another."""
    if earlier is None:
        return None
    found = connection.execute(_STORED, {"earlier": earlier}).one()
    if found.expires_at <= now:
        return None
    if found.request_hash != digest:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used for another request; send a new key."
        )
    return StoredAnswer(
        status=found.status, content_type=found.content_type, body=found.body.encode()
    )


def keep(
    connection: Connection,
    *,
    principal: str,
    key: str,
    digest: str,
    answer: StoredAnswer,
    now: datetime,
    ttl_seconds: int,
) -> StoredAnswer | None:
    """Stores the answer under the key, in the transaction about to commit; None when it is
    stored. When a request with the same key committed first (it ran meanwhile), its answer:
    this request's writes must then be rolled back, and that answer given. Raises
    IdempotencyKeyReused when that request sent another."""
    global _last_purge
    if _last_purge is None or (now - _last_purge).total_seconds() >= PURGE_EVERY_SECONDS:
        _last_purge = now
        _purge(connection, now, limit=PURGED_PER_KEEP)
    row = {
        "principal": principal,
        "key": key,
        "request_hash": digest,
        "status": answer.status,
        "content_type": answer.content_type,
        "body": answer.body.decode(),
        "created_at": now,
        "expires_at": now + timedelta(seconds=ttl_seconds),
    }
    try:
        # MySQL and SQLite refuse the statement, not the transaction: no savepoint needed.
        connection.execute(_KEEP, row)
    except IntegrityError:
        pass  # stored already, and committed: at READ COMMITTED the next read sees it
    else:
        return None
    earlier = lookup(connection, principal=principal, key=key)
    first = replayed(connection, earlier, digest, now)
    if first is None:
        # Expired and not yet purged (or purged just now): the key is free again.
        connection.execute(_DROP, {"dropped": earlier})
        connection.execute(_KEEP, row)
    return first


def purge(connection: Connection, now: datetime, *, batch: int = 1000) -> int:
    """Removes expired keys, a batch per statement; how many (`userql purge-idempotency-keys`)."""
    removed = 0
    while (count := _purge(connection, now, limit=batch)) > 0:
        removed += count
    return removed


def _purge(connection: Connection, now: datetime, *, limit: int) -> int:
    expired = select(KEYS.c.id).where(KEYS.c.expires_at < now).limit(limit)
    ids = list(connection.execute(expired).scalars())
    if not ids:
        return 0
    connection.execute(delete(KEYS).where(KEYS.c.id.in_(ids)))
    return len(ids)
