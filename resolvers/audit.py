import strawberry
from marshmallow import Schema, ValidationError, fields, validate

from schema import errors
from schema.context import Context
from schema.types.audit import AuditEventConnection
from schema.types.pagination import AUDIT_CURSOR_PREFIX, MAX_ID, decode_cursor
from services import audit

Info = strawberry.Info[Context, None]


class AuditCursorField(fields.Field[int]):
    def _deserialize(self, value: object, attr: str | None, data: object, **kwargs: object) -> int:
        try:
            return decode_cursor(str(value), AUDIT_CURSOR_PREFIX)
        except ValueError as error:
            raise ValidationError(errors.INVALID_CURSOR.message) from error


def _user_id() -> fields.Integer:
    return fields.Integer(
        load_default=None,
        strict=False,
        error_messages={"invalid": errors.INVALID_ID.message},
        validate=validate.Range(1, MAX_ID, error=errors.INVALID_ID.message),
    )


class AuditEventsArgs(Schema):
    first = fields.Integer(
        load_default=20,
        validate=validate.Range(
            1, audit.MAX_PAGE_SIZE, error=errors.PAGE_SIZE_OUT_OF_RANGE.message
        ),
    )
    after = AuditCursorField(load_default=None)
    target_user_id = _user_id()
    actor_user_id = _user_id()
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
