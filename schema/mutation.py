import strawberry

from resolvers import users as user_resolvers
from schema.types.users import CreateUserResult


@strawberry.type
class Mutation:
    create_user: CreateUserResult = strawberry.mutation(
        resolver=user_resolvers.create_user,
        description="Create a user; provisioning runs in the same transaction.",
    )
