import re

import strawberry

from resolvers.selection import selected_names
from schema.context import Context
from schema.types.auth import SignInResult, SignInSuccess
from schema.types.users import User, as_user, user_attributes
from services import google
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
    )
    # The caller holds this user's new token: the user's own fields are theirs to read.
    context.signed_in.add(signed_in.user.id)
    return SignInSuccess(
        access_token=signed_in.token.token,
        expires_at=signed_in.token.expires_at,
        user=as_user(signed_in.user),
    )
