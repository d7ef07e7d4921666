from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Self, cast

import strawberry
from strawberry.schema.name_converter import NameConverter
from strawberry.types.base import get_object_definition

from db import models
from schema.types.errors import ValidationError
from schema.types.pagination import PageInfo, encode_cursor
from services.users import UserPage, UserRecord

# GraphQL's Role is the domain's own enum: records need no conversion on the way out or in.
strawberry.enum(models.Role, name="Role")


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


def as_user(record: UserRecord) -> User:
    return cast(User, record)


_ATTRIBUTES = {
    NameConverter().get_graphql_name(field): field.python_name
    for field in get_object_definition(User, strict=True).fields
}


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
