from datetime import datetime
from typing import Annotated

import strawberry

from schema.types.users import ProvisioningFailed, User, UserNotFound


@strawberry.type
class SignInSuccess:
    access_token: str = strawberry.field(
        description="Send it as `Authorization: Bearer <accessToken>`."
    )
    expires_at: datetime
    user: User
    refresh_token: str = strawberry.field(
        description="Exchange it for a new pair with refreshSession; shown only this once."
    )
    refresh_token_expires_at: datetime


@strawberry.type(description="The account is deactivated; an admin can reactivate it.")
class AccountDeactivated:
    email: str
    message: str


@strawberry.type
class RefreshSessionSuccess:
    access_token: str
    expires_at: datetime
    refresh_token: str = strawberry.field(
        description="The next refresh token: the one just sent no longer works."
    )
    refresh_token_expires_at: datetime
    user: User


@strawberry.type(description="Unknown, expired or ended: sign in again.")
class InvalidRefreshToken:
    message: str


@strawberry.type(
    description="The refresh token had already been exchanged, so someone else may hold it: "
    "the whole session is revoked."
)
class RefreshTokenReused:
    message: str


RefreshSessionResult = Annotated[
    RefreshSessionSuccess | InvalidRefreshToken | RefreshTokenReused,
    strawberry.union("RefreshSessionResult"),
]


@strawberry.type
class SessionsRevoked:
    count: int = strawberry.field(description="How many sessions were still open.")


@strawberry.type(description="The ID token is not a valid Google ID token for this server.")
class InvalidGoogleToken:
    message: str


@strawberry.type(description="Google has not verified this email address.")
class EmailNotVerified:
    email: str
    message: str


@strawberry.type(description="No account has this email, and sign-up is closed.")
class NotRegistered:
    email: str
    message: str


SignInResult = Annotated[
    SignInSuccess
    | InvalidGoogleToken
    | EmailNotVerified
    | NotRegistered
    | ProvisioningFailed
    | AccountDeactivated,
    strawberry.union("SignInResult"),
]


RevokeSessionsResult = Annotated[
    SessionsRevoked | UserNotFound, strawberry.union("RevokeSessionsResult")
]
