import json
from datetime import datetime
from typing import Any, Self

import strawberry

from schema.types.pagination import AUDIT_CURSOR_PREFIX, PageInfo, encode_cursor
from services.audit import AuditPage


@strawberry.type(description="One field a change set: its value before and after, as text.")
class FieldChange:
    field: str
    before: str | None
    after: str | None


@strawberry.type(description="One committed change, written in the change's own transaction.")
class AuditEvent:
    id: strawberry.ID
    occurred_at: datetime
    actor_user_id: strawberry.ID | None = strawberry.field(
        description="Who made the change; null for a sign-up and the command line."
    )
    actor_role: str | None = strawberry.field(description="The role they acted with.")
    request_id: str | None = strawberry.field(description="The request log's request_id.")
    operation_name: str | None
    action: str = strawberry.field(
        description="user.created, user.updated, user.role_changed, user.deactivated, "
        "user.reactivated, user.deleted, session.revoked or sessions.revoked."
    )
    target_user_id: strawberry.ID | None = strawberry.field(
        description="The user changed; kept after that user is deleted."
    )
    changes: list[FieldChange]

    @classmethod
    def from_row(cls, row: Any) -> Self:
        decoded: dict[str, dict[str, Any]] = json.loads(row.changes)
        return cls(
            id=strawberry.ID(str(row.id)),
            occurred_at=row.occurred_at,
            actor_user_id=None if row.actor_id is None else strawberry.ID(str(row.actor_id)),
            actor_role=row.actor_role,
            request_id=row.request_id,
            operation_name=row.operation_name,
            action=row.action,
            target_user_id=None
            if row.target_user_id is None
            else strawberry.ID(str(row.target_user_id)),
            changes=[
                FieldChange(field=name, before=values["before"], after=values["after"])
                for name, values in decoded.items()
            ],
        )


@strawberry.type
class AuditEventEdge:
    cursor: str
    node: AuditEvent


@strawberry.type
class AuditEventConnection:
    edges: list[AuditEventEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: AuditPage) -> Self:
        edges = [
            AuditEventEdge(
                cursor=encode_cursor(row.id, AUDIT_CURSOR_PREFIX), node=AuditEvent.from_row(row)
            )
            for row in page.events
        ]
        end_cursor = edges[-1].cursor if edges else None
        return cls(
            edges=edges, page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=end_cursor)
        )
