from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Self, cast

import strawberry
from strawberry.schema.name_converter import NameConverter
from strawberry.types.base import get_object_definition

from db import models
from schema.types.errors import ValidationError
from schema.types.pagination import PageInfo, encode_cursor
from services import sessions as session_service
from services.users import UserPage, UserRecord

# GraphQL's Role is the domain's own enum: records need no conversion on the way out or in.
strawberry.enum(models.Role, name="Role")


@strawberry.type(description="A signed-in device: it refreshes until it expires or ends.")
class Session:
    id: strawberry.ID
    created_at: datetime
    last_used_at: datetime = strawberry.field(description="When it last refreshed.")
    expires_at: datetime = strawberry.field(description="When it can no longer refresh.")
    user_agent: str | None
    current: bool = strawberry.field(description="The session of the caller's access token.")


# Typed loosely: schema.types sits beside schema.context, and may not import it.
def _sessions(root: "User", info: strawberry.Info[Any, Any]) -> list[Session]:
    context = info.context
    rows = session_service.open_sessions(
        context.reading(), user_id=int(root.id), now=context.tokens.now()
    )
    current = context.principal.session_id
    return [
        Session(
            id=strawberry.ID(str(row.id)),
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            expires_at=row.expires_at,
            user_agent=row.user_agent,
            current=row.id == current,
        )
        for row in rows
    ]


def _active(root: "User") -> bool:
    return root.deactivated_at is None


@strawberry.type
class User:
    """Resolved straight off a UserRecord (an ORM object or a row), never copied into one of
    these: `as_user` passes a record through, and the ID scalar serialises the integer id."""

    id: strawberry.ID
    name: str
    email: str | None
    role: models.Role
    created_at: datetime
    updated_at: datetime
    deactivated_at: datetime | None = strawberry.field(
        description="When an admin deactivated the account; null while it is active."
    )

    active: bool = strawberry.field(
        resolver=_active,
        description="False once an admin has deactivated the account.",
    )
    sessions: list[Session] = strawberry.field(
        resolver=_sessions, description="Sessions that can still refresh, newest first."
    )


def as_user(record: UserRecord) -> User:
    return cast(User, record)


_ATTRIBUTES = {
    NameConverter().get_graphql_name(field): field.python_name
    for field in get_object_definition(User, strict=True).fields
}
_ATTRIBUTES["active"] = "deactivated_at"


def user_attributes(graphql_names: Iterable[str]) -> set[str]:
    """The record attributes that these User fields read."""
    return {_ATTRIBUTES[name] for name in graphql_names if name in _ATTRIBUTES}


# An edge is its user's record itself, as a User is (see as_user): a page of a hundred users
# builds no object per row, and a cursor is encoded only when asked for.


def _cursor(root: "UserEdge") -> str:
    return encode_cursor(cast(UserRecord, root).id)


def _node(root: "UserEdge") -> User:
    return root  # type: ignore[return-value]


@strawberry.type
class UserEdge:
    cursor: str = strawberry.field(resolver=_cursor)
    node: User = strawberry.field(resolver=_node)


def _total_count(root: "UserConnection") -> int:
    if root.total is None:
        raise RuntimeError("the resolver did not load totalCount although it was selected")
    return root.total


@strawberry.type
class UserConnection:
    edges: list[UserEdge]
    page_info: PageInfo
    total: strawberry.Private[int | None]
    total_count: int = strawberry.field(
        resolver=_total_count,
        description="All users, not just this page. One more query, only when asked.",
    )

    @classmethod
    def from_page(cls, page: UserPage) -> Self:
        end_cursor = encode_cursor(page.users[-1].id) if page.users else None
        return cls(
            edges=cast(list[UserEdge], page.users),
            page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=end_cursor),
            total=page.total_count,
        )


@strawberry.input
class CreateUserInput:
    name: str
    email: str
    role: models.Role = models.Role.USER


@strawberry.type
class CreateUserSuccess:
    user: User


@strawberry.type(description="Another user already has this email address, in any letter case.")
class EmailAlreadyRegistered:
    email: str
    message: str


@strawberry.type(description="The provisioning service refused the user; nothing was written.")
class ProvisioningFailed:
    message: str


CreateUserResult = Annotated[
    CreateUserSuccess | ValidationError | EmailAlreadyRegistered | ProvisioningFailed,
    strawberry.union("CreateUserResult"),
]


@strawberry.input(description="Fields left out stay as they are.")
class UpdateUserInput:
    name: str | None = strawberry.UNSET
    email: str | None = strawberry.UNSET
    role: models.Role | None = strawberry.UNSET


@strawberry.type
class UpdateUserSuccess:
    user: User


@strawberry.type(description="No user has this id.")
class UserNotFound:
    id: strawberry.ID
    message: str


@strawberry.type(description="The change would leave no active admin; nothing was changed.")
class LastActiveAdmin:
    message: str


@strawberry.type(description="An admin cannot deactivate or delete their own account.")
class CannotTargetSelf:
    message: str


UpdateUserResult = Annotated[
    UpdateUserSuccess | ValidationError | EmailAlreadyRegistered | UserNotFound | LastActiveAdmin,
    strawberry.union("UpdateUserResult"),
]


@strawberry.type
class DeactivateUserSuccess:
    user: User


DeactivateUserResult = Annotated[
    DeactivateUserSuccess | UserNotFound | LastActiveAdmin | CannotTargetSelf,
    strawberry.union("DeactivateUserResult"),
]


@strawberry.type
class ReactivateUserSuccess:
    user: User


ReactivateUserResult = Annotated[
    ReactivateUserSuccess | UserNotFound | CannotTargetSelf,
    strawberry.union("ReactivateUserResult"),
]


@strawberry.type
class DeleteUserSuccess:
    id: strawberry.ID = strawberry.field(description="The id the deleted user had.")


DeleteUserResult = Annotated[
    DeleteUserSuccess | UserNotFound | LastActiveAdmin | CannotTargetSelf | ProvisioningFailed,
    strawberry.union("DeleteUserResult"),
]
