import strawberry

from schema.context import Context
from schema.types.auth import SignInResult, SignInSuccess
from schema.types.users import User, as_user
from services import google

Info = strawberry.Info[Context, None]


def me(info: Info) -> User | None:
    # Loaded while authenticating this request: no second query.
    caller = info.context.principal.user
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
