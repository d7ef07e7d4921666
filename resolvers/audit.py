import strawberry
from marshmallow import Schema, fields, validate

from resolvers.users import CursorField, page_size, user_id
from schema.context import Context
from schema.types.audit import AuditEventConnection
from schema.types.pagination import AUDIT_CURSOR_PREFIX
from services import audit

Info = strawberry.Info[Context, None]


class AuditEventsArgs(Schema):
    first = page_size(audit.MAX_PAGE_SIZE)
    after = CursorField(AUDIT_CURSOR_PREFIX, load_default=None)
    target_user_id = user_id(load_default=None)
    actor_user_id = user_id(load_default=None)
    action = fields.String(load_default=None, validate=validate.Length(max=64))


AUDIT_EVENTS_ARGS = AuditEventsArgs()


def audit_events(
    info: Info,
    first: int | None = 20,
    after: str | None = None,
    target_user_id: strawberry.ID | None = None,
    actor_user_id: strawberry.ID | None = None,
    action: str | None = None,
) -> AuditEventConnection:
    given = {
        key: value
        for key, value in {
            "first": first,
            "after": after,
            "target_user_id": target_user_id,
            "actor_user_id": actor_user_id,
            "action": action,
        }.items()
        if value is not None
    }
    args = AUDIT_EVENTS_ARGS.load(given)
    page = audit.list_events(
        info.context.reading(),
        first=args["first"],
        before_id=args["after"],
        target_user_id=args["target_user_id"],
        actor_id=args["actor_user_id"],
        action=args["action"],
    )
    return AuditEventConnection.from_page(page)
