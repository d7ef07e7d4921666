import strawberry

from resolvers import audit as audit_resolvers
from resolvers import auth as auth_resolvers
from resolvers import users as user_resolvers
from schema.types.audit import AuditEventConnection
from schema.types.users import User, UserConnection


@strawberry.type
class Query:
    users: UserConnection = strawberry.field(
        resolver=user_resolvers.users, description="Users ordered by id, a page at a time."
    )
    user: User | None = strawberry.field(
        resolver=user_resolvers.user,
        description="One user, or null when there is none with this id.",
    )
    me: User | None = strawberry.field(
        resolver=auth_resolvers.me, description="The caller; null when signed out."
    )
    audit_events: AuditEventConnection = strawberry.field(
        resolver=audit_resolvers.audit_events,
        description="Committed changes, newest first, a page at a time; filters combine.",
    )
