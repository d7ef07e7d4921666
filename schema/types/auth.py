from datetime import datetime
from typing import Annotated

import strawberry

from schema.types.users import ProvisioningFailed, User


@strawberry.type
class SignInSuccess:
    access_token: str = strawberry.field(
        description="Send it as `Authorization: Bearer <accessToken>`."
    )
    expires_at: datetime
    user: User


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
    SignInSuccess | InvalidGoogleToken | EmailNotVerified | NotRegistered | ProvisioningFailed,
    strawberry.union("SignInResult"),
]
