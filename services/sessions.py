"""Sessions: a refresh token that rotates at each use, reuse detection, and sign-out.

A refresh token is 256 random bits, given to the client once and kept here as its SHA-256
only: a token that long needs no slow hash, since nobody can guess one to test against it.
Each use exchanges it for a new one (RFC 6749 §6); an exchanged token presented again means
two parties hold the session, so the whole session is revoked (RFC 9700 §4.14).
"""

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Table, select, update

from db import models
from services.auth import Access, IssuedToken, TokenService
from services.errors import (
    AccountDeactivated,
    InvalidRefreshToken,
    RefreshTokenReused,
    UserNotFound,
)
from services.text import storable
from services.unit_of_work import UnitOfWork
from services.users import SESSIONS, end_sessions, normalize_email

REFRESH_TOKEN_BYTES = 32
# Far above the length of a token we issue (43 characters); longer is not ours.
MAX_REFRESH_TOKEN_LENGTH = 128
REFRESH_TOKENS = cast(Table, models.RefreshToken.__table__)


@dataclass(frozen=True, slots=True)
class SessionTokens:
    """What a client gets when a session starts or refreshes; the refresh token only here."""

    access: IssuedToken
    refresh_token: str
    refresh_expires_at: datetime
    session_id: int
    user: models.User


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_refresh_token(uow: UnitOfWork, session_id: int, now: datetime) -> str:
    token = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
    uow.session.add(
        models.RefreshToken(session_id=session_id, token_hash=_digest(token), created_at=now)
    )
    return token


def _issued(
    tokens: TokenService, user: models.User, session: models.Session, refresh_token: str
) -> SessionTokens:
    return SessionTokens(
        access=tokens.issue(user_id=user.id, role=Access.of(user.role), session_id=session.id),
        refresh_token=refresh_token,
        refresh_expires_at=session.expires_at,
        session_id=session.id,
        user=user,
    )


def user_agent(header: str | None) -> str | None:
    """What a session keeps of a User-Agent header: storable text, cut to the column."""
    text = storable(header or "").strip()[: models.USER_AGENT_MAX_LENGTH]
    return text or None


def start_session(
    uow: UnitOfWork,
    tokens: TokenService,
    *,
    user: models.User,
    user_agent: str | None,
    ttl_seconds: int,
) -> SessionTokens:
    """A new session for a user who just proved who they are."""
    now = tokens.now()
    with uow:
        session = models.Session(
            user_id=user.id,
            created_at=now,
            last_used_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
            user_agent=user_agent,
        )
        uow.session.add(session)
        uow.session.flush()
        refresh_token = _new_refresh_token(uow, session.id, now)
        uow.commit()
    return _issued(tokens, user, session, refresh_token)


def start_session_for(
    uow: UnitOfWork,
    tokens: TokenService,
    *,
    email: str,
    user_agent: str | None,
    ttl_seconds: int,
) -> SessionTokens | None:
    """A new session for the user with this email (an operator's `userql issue-session`);
    None if there is none. Raises AccountDeactivated."""
    with uow:
        user = uow.session.scalar(
            select(models.User).where(models.User.email == normalize_email(email))
        )
    if user is None:
        return None
    if user.deactivated_at is not None:
        raise AccountDeactivated(user.email)
    return start_session(uow, tokens, user=user, user_agent=user_agent, ttl_seconds=ttl_seconds)


def refresh_session(uow: UnitOfWork, tokens: TokenService, *, refresh_token: str) -> SessionTokens:
    """Exchanges a refresh token for a new pair. Raises InvalidRefreshToken, and
    RefreshTokenReused (after revoking the session) for a token already exchanged."""
    if not refresh_token or len(refresh_token) > MAX_REFRESH_TOKEN_LENGTH:
        raise InvalidRefreshToken("The refresh token is not valid; sign in again.")
    now = tokens.now()
    query = (
        select(models.RefreshToken, models.Session, models.User)
        .join(models.Session, models.Session.id == models.RefreshToken.session_id)
        .join(models.User, models.User.id == models.Session.user_id)
        .where(models.RefreshToken.token_hash == _digest(refresh_token))
        .with_for_update()
    )
    with uow:
        found = uow.session.execute(query).first()
        if found is None:
            raise InvalidRefreshToken("The refresh token is not valid; sign in again.")
        stored, session, user = found
        if session.revoked_at is not None or user.deactivated_at is not None:
            raise InvalidRefreshToken("The session has ended; sign in again.")
        if session.expires_at <= now:
            raise InvalidRefreshToken("The session has expired; sign in again.")
        if stored.rotated_at is not None:
            session.revoked_at = now
            uow.commit()
            raise RefreshTokenReused()
        stored.rotated_at = session.last_used_at = now
        new_token = _new_refresh_token(uow, session.id, now)
        uow.commit()
    return _issued(tokens, user, session, new_token)


def sign_out(uow: UnitOfWork, *, user_id: int, session_id: int | None, now: datetime) -> int:
    """Ends the caller's session (their access tokens from it too); how many ended: 0 or 1."""
    if session_id is None:
        return 0
    with uow:
        ended: CursorResult[Any] = uow.session.execute(  # type: ignore[assignment]
            update(SESSIONS)
            .where(
                SESSIONS.c.id == session_id,
                SESSIONS.c.user_id == user_id,
                SESSIONS.c.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
        count = int(ended.rowcount)
        if count:
            revoked = {"session": (str(session_id), None)}
            uow.record("session.revoked", target_user_id=user_id, changed=revoked)
        uow.commit()
        return count


def sign_out_everywhere(uow: UnitOfWork, *, user_id: int, now: datetime) -> int:
    """Ends every session of the user and refuses every access token issued before `now`;
    how many sessions were open. Raises UserNotFound."""
    with uow:
        if uow.session.get(models.User, user_id) is None:
            raise UserNotFound(user_id)
        ended = end_sessions(uow, user_id, now)
        changed = {"tokens_valid_after": (None, now), "open_sessions": (ended, 0)}
        uow.record("sessions.revoked", target_user_id=user_id, changed=changed)
        uow.commit()
        return ended


def open_sessions(uow: UnitOfWork, *, user_id: int, now: datetime) -> Sequence[Any]:
    """The user's sessions that can still refresh, newest first."""
    query = (
        select(
            SESSIONS.c.id,
            SESSIONS.c.created_at,
            SESSIONS.c.last_used_at,
            SESSIONS.c.user_agent,
            SESSIONS.c.expires_at,
        )
        .where(
            SESSIONS.c.user_id == user_id,
            SESSIONS.c.revoked_at.is_(None),
            SESSIONS.c.expires_at > now,
        )
        .order_by(SESSIONS.c.id.desc())
    )
    with uow:
        return uow.connection().execute(query).all()
