import strawberry

from resolvers import auth as auth_resolvers
from resolvers import users as user_resolvers
from schema.types.auth import SignInResult
from schema.types.users import CreateUserResult


@strawberry.type
class Mutation:
    create_user: CreateUserResult = strawberry.mutation(
        resolver=user_resolvers.create_user,
        description="Create a user; provisioning runs in the same transaction.",
    )
    sign_in_with_google: SignInResult = strawberry.mutation(
        resolver=auth_resolvers.sign_in_with_google,
        description="Exchange a Google ID token for an access token, registering newcomers.",
    )
