import enum
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.dialects import mysql
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import Mapped, mapped_column

from db.base import MYSQL_TABLE_OPTIONS, Base, UTCDateTime, utc_now

NAME_MAX_LENGTH = 80
USER_AGENT_MAX_LENGTH = 255
AUDIT_OPERATION_MAX_LENGTH = 255
IDEMPOTENCY_KEY_MAX_LENGTH = 255
# RFC 5321's limit on a forward path, the longest address that can receive mail.
EMAIL_MAX_LENGTH = 254


class Role(enum.StrEnum):
    USER = "USER"
    ADMIN = "ADMIN"


def _same_as_created_at(context: DefaultExecutionContext) -> datetime:
    # One clock reading per new row: a fresh row was not updated after it was created.
    created_at: datetime = (context.current_parameters or {})["created_at"]
    return created_at


class User(Base):
    __tablename__ = "users"
    __table_args__ = MYSQL_TABLE_OPTIONS

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    # Stored lower-cased by the service, so a plain unique index is case-insensitive on any
    # collation.
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH), unique=True)
    role: Mapped[Role] = mapped_column(
        Enum(Role, name="role", native_enum=False, create_constraint=True, length=16),
        default=Role.USER,
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=_same_as_created_at, onupdate=utc_now
    )
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """When an admin shut the account out; None while it is active."""
    tokens_valid_after: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """Access tokens issued before this instant are refused (sign out everywhere)."""


class Session(Base):
    """One sign-in on one device: its refresh tokens rotate, the session stays."""

    __tablename__ = "sessions"
    __table_args__ = MYSQL_TABLE_OPTIONS

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_same_as_created_at)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_MAX_LENGTH))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RefreshToken(Base):
    """A refresh token of a session, kept as its SHA-256 only. A rotated one stays, so that
    presenting it again is known for what it is: a stolen copy (RFC 9700 §4.14)."""

    __tablename__ = "refresh_tokens"
    __table_args__ = MYSQL_TABLE_OPTIONS

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditEvent(Base):
    """One change, written in the transaction that made it: it exists exactly when the change
    was committed. Append-only, and without foreign keys: a deleted user's events stay."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_target_user_id_id", "target_user_id", "id"),
        Index("ix_audit_events_actor_id_id", "actor_id", "id"),
        Index("ix_audit_events_action_id", "action", "id"),
        MYSQL_TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_id: Mapped[int | None] = mapped_column()
    actor_role: Mapped[str | None] = mapped_column(String(16))
    request_id: Mapped[str | None] = mapped_column(String(64))
    operation_name: Mapped[str | None] = mapped_column(String(AUDIT_OPERATION_MAX_LENGTH))
    action: Mapped[str] = mapped_column(String(64))
    target_user_id: Mapped[int | None] = mapped_column()
    changes: Mapped[str] = mapped_column(Text())
    """JSON: each changed field's {"before": ..., "after": ...}."""


class IdempotencyKey(Base):
    """A mutation's answer, kept under the key its caller sent, for the caller's retries. The
    row is written in the mutation's own transaction: it exists exactly when the change does."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("principal", "key"),
        Index("ix_idempotency_keys_expires_at", "expires_at"),
        MYSQL_TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    principal: Mapped[str] = mapped_column(String(64))
    """Whose key: `user:<id>`, or `address:<client address>` for a caller without a token."""
    # Visible ASCII, compared byte for byte: a key is opaque, and "a" is not "A".
    key: Mapped[str] = mapped_column(
        String(IDEMPOTENCY_KEY_MAX_LENGTH).with_variant(
            mysql.VARCHAR(IDEMPOTENCY_KEY_MAX_LENGTH, charset="ascii", collation="ascii_bin"),
            "mysql",
            "mariadb",
        )
    )
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column()
    content_type: Mapped[str | None] = mapped_column(String(100))
    body: Mapped[str | None] = mapped_column(
        Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
