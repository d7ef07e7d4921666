"""Idempotency keys for mutations (the IETF httpapi draft "The Idempotency-Key HTTP Header
Field", as Stripe's API uses it).

A caller's first request with a key claims it: a row inserted in the transaction the mutation
then runs in, and given the response before that transaction commits, so the stored answer and
the change commit together or not at all. A repeat of the same request gets the stored answer
and runs nothing; the same key with another request is refused. A repeat that arrives while
the first still runs waits at the row's unique index until the first commits, then gets its
answer: the database, not a flag, says whether the first finished.
"""

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from db import models
from services.errors import ServiceError

KEYS = cast(Table, models.IdempotencyKey.__table__)
# Built once: a statement built per call costs a keyed mutation more than its round trip
# (the construct, then its cache key, each time).
_CLAIM = insert(KEYS)
_OF_KEY = (KEYS.c.principal == bindparam("owner")) & (KEYS.c.key == bindparam("claimed"))
_CLAIMED = select(KEYS).where(_OF_KEY)
_STORE = (
    update(KEYS)
    .where(_OF_KEY)
    .values(
        status=bindparam("answer_status"),
        content_type=bindparam("answer_content_type"),
        body=bindparam("answer_body"),
    )
)
_FORGET = delete(KEYS).where(_OF_KEY)
_DROP = delete(KEYS).where(KEYS.c.id == bindparam("dropped"))
# 1 to 255 visible ASCII characters: the draft's sf-string, without the quotes and escapes.
KEY_SHAPE = re.compile(r"[\x21-\x7e]{1,255}")
# Expired rows a claim removes on its way: enough to keep up with any rate of new keys,
# few enough to cost a claim next to nothing.
PURGED_PER_CLAIM = 20
# A claim purges at most this often in each process: a statement on every claim would cost
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
    canonical = json.dumps(operations, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _claim_row(
    principal: str, key: str, digest: str, now: datetime, ttl_seconds: int
) -> dict[str, Any]:
    return {
        "principal": principal,
        "key": key,
        "request_hash": digest,
        "created_at": now,
        "expires_at": now + timedelta(seconds=ttl_seconds),
    }


def claim(
    connection: Connection,
    *,
    principal: str,
    key: str,
    digest: str,
    now: datetime,
    ttl_seconds: int,
) -> StoredAnswer | None:
    """Claims the key in the connection's transaction; None when this request is the first.
    Returns the stored answer of an earlier request that sent the same; raises
    IdempotencyKeyReused for an earlier one that sent another."""
    global _last_purge
    if _last_purge is None or (now - _last_purge).total_seconds() >= PURGE_EVERY_SECONDS:
        _last_purge = now
        _purge(connection, now, limit=PURGED_PER_CLAIM)
    row = _claim_row(principal, key, digest, now, ttl_seconds)
    try:
        # MySQL and SQLite refuse the statement, not the transaction: no savepoint needed.
        connection.execute(_CLAIM, row)
    except IntegrityError:
        pass  # claimed already, and committed: the earlier request's answer is there
    else:
        return None
    found = connection.execute(_CLAIMED, {"owner": principal, "claimed": key}).one()
    if found.expires_at <= now:
        # Expired and not yet purged: the key is free again.
        connection.execute(_DROP, {"dropped": found.id})
        connection.execute(_CLAIM, row)
        return None
    if found.request_hash != digest:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used for another request; send a new key."
        )
    return StoredAnswer(
        status=found.status, content_type=found.content_type, body=found.body.encode()
    )


def store(connection: Connection, *, principal: str, key: str, answer: StoredAnswer) -> None:
    """Gives the claimed key its answer, in the transaction that claimed it."""
    connection.execute(
        _STORE,
        {
            "owner": principal,
            "claimed": key,
            "answer_status": answer.status,
            "answer_content_type": answer.content_type,
            "answer_body": answer.body.decode(),
        },
    )


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


def settle(
    connection: Connection,
    *,
    principal: str,
    key: str,
    digest: str,
    answer: StoredAnswer,
    now: datetime,
    ttl_seconds: int,
    lost: bool,
) -> None:
    """Stores the answer of the request that claimed the key, in the transaction about to
    commit. `lost`: a failed unit of work rolled the claim back with its own writes, so it is
    claimed again; if another request has claimed the key meanwhile, its answer stands."""
    if lost:
        try:
            connection.execute(_CLAIM, _claim_row(principal, key, digest, now, ttl_seconds))
        except IntegrityError:
            return
    store(connection, principal=principal, key=key, answer=answer)


def forget(connection: Connection, *, principal: str, key: str) -> None:
    """Gives the key up: the request's answer is not one to replay."""
    connection.execute(_FORGET, {"owner": principal, "claimed": key})
