import strawberry

from resolvers import auth as auth_resolvers
from resolvers import users as user_resolvers
from schema.types.auth import (
    RefreshSessionResult,
    RevokeSessionsResult,
    SessionsRevoked,
    SignInResult,
)
from schema.types.users import (
    CreateUserResult,
    DeactivateUserResult,
    DeleteUserResult,
    ReactivateUserResult,
    UpdateUserResult,
)


@strawberry.type
class Mutation:
    create_user: CreateUserResult = strawberry.mutation(
        resolver=user_resolvers.create_user,
        description="Create a user; provisioning runs in the same transaction.",
    )
    sign_in_with_google: SignInResult = strawberry.mutation(
        resolver=auth_resolvers.sign_in_with_google,
        description="Exchange a Google ID token for a new session, registering newcomers.",
    )
    update_user: UpdateUserResult = strawberry.mutation(
        resolver=user_resolvers.update_user,
        description="Change a user's name (your own), or anyone's name, email and role (ADMIN). "
        "A demotion ends the user's sessions.",
    )
    deactivate_user: DeactivateUserResult = strawberry.mutation(
        resolver=user_resolvers.deactivate_user,
        description="Shut a user out: their tokens and sessions stop working at once.",
    )
    reactivate_user: ReactivateUserResult = strawberry.mutation(
        resolver=user_resolvers.reactivate_user,
        description="Let a deactivated user sign in again.",
    )
    delete_user: DeleteUserResult = strawberry.mutation(
        resolver=user_resolvers.delete_user,
        description="Delete a user and their sessions; deprovisioning runs in the same "
        "transaction.",
    )
    refresh_session: RefreshSessionResult = strawberry.mutation(
        resolver=auth_resolvers.refresh_session,
        description="Exchange a refresh token for a new access token and refresh token.",
    )
    sign_out: SessionsRevoked = strawberry.mutation(
        resolver=auth_resolvers.sign_out,
        description="End the session of the caller's access token.",
    )
    sign_out_everywhere: SessionsRevoked = strawberry.mutation(
        resolver=auth_resolvers.sign_out_everywhere,
        description="End every session of the caller; every access token issued before now "
        "stops working.",
    )
    revoke_sessions: RevokeSessionsResult = strawberry.mutation(
        resolver=auth_resolvers.revoke_sessions,
        description="End every session of a user, and their access tokens issued before now.",
    )
