import re

import strawberry

from resolvers.selection import selected_names
from resolvers.users import target_id
from schema.context import Context
from schema.types.auth import (
    RefreshSessionResult,
    RefreshSessionSuccess,
    RevokeSessionsResult,
    SessionsRevoked,
    SignInResult,
    SignInSuccess,
)
from schema.types.users import User, as_user, user_attributes
from services import google
from services import sessions as session_service
from services import users as user_service

Info = strawberry.Info[Context, None]

# A field is selected by its name, and a GraphQL name cannot be escaped or split: a document
# that can select `me` holds `me` as a whole word (so do some that cannot, in a string).
_NAME_ME = re.compile(r"(?<![_0-9A-Za-z])me(?![_0-9A-Za-z])")


def needs_caller_row(document: str) -> bool:
    """Whether this document may select `me`, which answers from the caller's row: read whole
    while authenticating, it costs no statement of its own."""
    return _NAME_ME.search(document) is not None


def me(info: Info) -> User | None:
    principal = info.context.principal
    if principal.user is not None:
        return as_user(principal.user)
    if principal.user_id is None:
        return None
    # Authentication was not asked for the whole row (see needs_caller_row).
    caller = user_service.get_user(
        info.context.reading(),
        user_id=principal.user_id,
        fields=user_attributes(selected_names(info)),
    )
    return None if caller is None else as_user(caller)


def sign_in_with_google(info: Info, id_token: str) -> SignInResult:
    context = info.context
    signed_in = google.sign_in_with_google(
        context.uow(),
        context.provisioner,
        context.google,
        context.tokens,
        id_token=id_token,
        signup_enabled=context.google_signup_enabled,
        user_agent=context.user_agent,
        session_ttl_seconds=context.session_ttl_seconds,
    )
    # The caller holds this user's new token: the user's own fields are theirs to read.
    context.signed_in.add(signed_in.user.id)
    return SignInSuccess(
        access_token=signed_in.access.token,
        expires_at=signed_in.access.expires_at,
        user=as_user(signed_in.user),
        refresh_token=signed_in.refresh_token,
        refresh_token_expires_at=signed_in.refresh_expires_at,
    )


def refresh_session(info: Info, refresh_token: str) -> RefreshSessionResult:
    context = info.context
    refreshed = session_service.refresh_session(
        context.uow(), context.tokens, refresh_token=refresh_token
    )
    context.signed_in.add(refreshed.user.id)
    return RefreshSessionSuccess(
        access_token=refreshed.access.token,
        expires_at=refreshed.access.expires_at,
        refresh_token=refreshed.refresh_token,
        refresh_token_expires_at=refreshed.refresh_expires_at,
        user=as_user(refreshed.user),
    )


def sign_out(info: Info) -> SessionsRevoked:
    context = info.context
    ended = session_service.sign_out(
        context.uow(),
        user_id=context.caller_id(),
        session_id=context.principal.session_id,
        now=context.tokens.now(),
    )
    return SessionsRevoked(count=ended)


def sign_out_everywhere(info: Info) -> SessionsRevoked:
    context = info.context
    ended = session_service.sign_out_everywhere(
        context.uow(), user_id=context.caller_id(), now=context.tokens.now()
    )
    return SessionsRevoked(count=ended)


def revoke_sessions(info: Info, user_id: strawberry.ID) -> RevokeSessionsResult:
    context = info.context
    ended = session_service.sign_out_everywhere(
        context.uow(), user_id=target_id(user_id), now=context.tokens.now()
    )
    return SessionsRevoked(count=ended)
