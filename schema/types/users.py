import enum
from datetime import datetime
from typing import Annotated, Self

import strawberry

from schema.types.errors import ValidationError
from schema.types.pagination import PageInfo, encode_cursor
from services.users import UserPage, UserRecord


@strawberry.enum
class Role(enum.Enum):
    USER = "USER"
    ADMIN = "ADMIN"


@strawberry.type
class User:
    id: strawberry.ID
    name: str
    email: str | None
    role: Role
    created_at: datetime
    updated_at: datetime
    is_viewer: strawberry.Private[bool]
    """Whether this user is the caller, for the fields only the user themself may read."""

    @classmethod
    def from_model(cls, user: UserRecord, *, viewer_id: int | None) -> Self:
        return cls(
            id=strawberry.ID(str(user.id)),
            name=user.name,
            email=user.email,
            role=Role(user.role.value),
            created_at=user.created_at,
            updated_at=user.updated_at,
            is_viewer=user.id == viewer_id,
        )


@strawberry.type
class UserEdge:
    cursor: str
    node: User


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
    def from_page(cls, page: UserPage, *, viewer_id: int | None) -> Self:
        edges = [
            UserEdge(cursor=encode_cursor(u.id), node=User.from_model(u, viewer_id=viewer_id))
            for u in page.users
        ]
        end_cursor = edges[-1].cursor if edges else None
        return cls(
            edges=edges,
            page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=end_cursor),
            total=page.total_count,
        )


@strawberry.input
class CreateUserInput:
    name: str
    email: str
    role: Role = Role.USER


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
