from collections.abc import Callable
from typing import Annotated, Any, cast

import strawberry
from marshmallow import Schema, ValidationError, fields, pre_load, validate
from strawberry.federation.schema import FederationAny

from db import models
from resolvers.selection import selected_names
from schema import errors
from schema.context import Context
from schema.permissions import USER_TYPE
from schema.types.pagination import MAX_ID, USER_CURSOR_PREFIX, decode_cursor
from schema.types.users import (
    CreateUserInput,
    CreateUserResult,
    CreateUserSuccess,
    DeactivateUserResult,
    DeactivateUserSuccess,
    DeleteUserResult,
    DeleteUserSuccess,
    ReactivateUserResult,
    ReactivateUserSuccess,
    UpdateUserInput,
    UpdateUserResult,
    UpdateUserSuccess,
    User,
    UserConnection,
    as_user,
    user_attributes,
)
from services import users as user_service
from services.auth import Access
from services.errors import UserNotFound
from services.text import is_storable

Info = strawberry.Info[Context, None]
_REQUIRED_MESSAGES: dict[str, str | list[Any] | dict[Any, Any]] = {
    "required": errors.REQUIRED.message,
    "null": errors.REQUIRED.message,
}


class CursorField(fields.Field[int]):
    """A cursor of one connection: `prefix` names its kind of row (schema.types.pagination)."""

    def __init__(self, prefix: str = USER_CURSOR_PREFIX, **options: Any) -> None:
        super().__init__(**options)
        self._prefix = prefix

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        try:
            return decode_cursor(value, self._prefix)
        except ValueError as error:
            raise ValidationError(errors.INVALID_CURSOR.message) from error


def page_size(maximum: int) -> fields.Integer:
    """`first`, as every connection takes it."""
    return fields.Integer(
        load_default=20,
        validate=validate.Range(1, maximum, error=errors.PAGE_SIZE_OUT_OF_RANGE.message),
    )


def user_id(**options: Any) -> fields.Integer:
    """A user's id as an argument takes it: an ID, so a string of digits too."""
    return fields.Integer(
        strict=False,
        error_messages={"invalid": errors.INVALID_ID.message},
        validate=validate.Range(1, MAX_ID, error=errors.INVALID_ID.message),
        **options,
    )


class UsersArgs(Schema):
    first = page_size(user_service.MAX_PAGE_SIZE)
    after = CursorField(load_default=None)


class UserArgs(Schema):
    id = user_id(required=True)


class RepresentationArgs(Schema):
    """A User as a federation gateway names it: its typename and its key. A key that is no
    user id names nobody, as an unknown id does."""

    typename = fields.String(
        data_key="__typename", required=True, validate=validate.Equal(USER_TYPE)
    )
    id = fields.Raw(required=True)


def _storable(value: str) -> None:
    if not is_storable(value):
        raise ValidationError(errors.UNSUPPORTED_CHARACTER.message)


_NAME_RULES: list[Callable[[Any], Any]] = [
    _storable,
    validate.Length(min=1, error=errors.BLANK.message),
    validate.Length(max=models.NAME_MAX_LENGTH, error=errors.NAME_TOO_LONG.message),
]
_EMAIL_RULES: list[Callable[[Any], Any]] = [
    _storable,
    validate.Length(max=models.EMAIL_MAX_LENGTH, error=errors.EMAIL_TOO_LONG.message),
    validate.Email(error=errors.INVALID_EMAIL.message),
]
_NOT_NULL_MESSAGES: dict[str, str | list[Any] | dict[Any, Any]] = {"null": errors.NOT_NULL.message}


class _Trimmed(Schema):
    @pre_load
    def _trim(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {
            key: value.strip() if isinstance(value, str) else value for key, value in data.items()
        }


class CreateUserArgs(_Trimmed):
    name = fields.String(required=True, error_messages=_REQUIRED_MESSAGES, validate=_NAME_RULES)
    email = fields.String(required=True, error_messages=_REQUIRED_MESSAGES, validate=_EMAIL_RULES)


class UpdateUserArgs(_Trimmed):
    """Partial: a field left out is no change; one sent as null is an error."""

    name = fields.String(error_messages=_NOT_NULL_MESSAGES, validate=_NAME_RULES)
    email = fields.String(error_messages=_NOT_NULL_MESSAGES, validate=_EMAIL_RULES)
    role = fields.Enum(models.Role, by_value=True, error_messages=_NOT_NULL_MESSAGES)


# Built once: a marshmallow schema is reusable for load(), and building one costs more than
# the validation it does.
USERS_ARGS, USER_ARGS = UsersArgs(), UserArgs()
REPRESENTATIONS_ARGS = RepresentationArgs(many=True)
CREATE_USER_ARGS, UPDATE_USER_ARGS = CreateUserArgs(), UpdateUserArgs()


def _sees_deactivated(info: Info) -> bool:
    return info.context.principal.role >= Access.ADMIN


def users(
    info: Info,
    first: int | None = 20,
    after: str | None = None,
    active: Annotated[
        bool | None,
        strawberry.argument(
            description="Only active users (true) or deactivated ones (false); ADMIN only. "
            "Without it, an ADMIN sees every user and anyone else the active ones."
        ),
    ] = None,
) -> UserConnection:
    given = {
        key: value for key, value in {"first": first, "after": after}.items() if value is not None
    }
    args = USERS_ARGS.load(given)
    page = user_service.list_users(
        info.context.reading(),
        first=args["first"],
        after_id=args["after"],
        with_total="totalCount" in selected_names(info),
        fields=user_attributes(selected_names(info, "edges", "node")),
        active=active if _sees_deactivated(info) else True,
    )
    return UserConnection.from_page(page)


def user(info: Info, id: strawberry.ID) -> User | None:
    args = USER_ARGS.load({"id": id})
    found = user_service.get_user(
        info.context.reading(),
        user_id=args["id"],
        fields=user_attributes(selected_names(info)),
        active_only=not _sees_deactivated(info),
    )
    return None if found is None else as_user(found)


def entities(info: Info, representations: list[FederationAny]) -> list[User | None]:
    """Federation's `_entities`: the users the representations name, in their order, read
    as `user` reads one but all in one statement."""
    loaded = REPRESENTATIONS_ARGS.load(cast(list[dict[str, Any]], representations))
    named = [_named_id(r["id"]) for r in loaded]
    records = iter(
        user_service.get_users(
            info.context.reading(),
            user_ids=[user_id for user_id in named if user_id is not None],
            fields=user_attributes(selected_names(info)),
            active_only=not _sees_deactivated(info),
        )
    )
    found = [None if user_id is None else next(records) for user_id in named]
    return [None if record is None else as_user(record) for record in found]


def _named_id(key: object) -> int | None:
    text = str(key)
    return int(text) if text.isascii() and text.isdigit() and 0 < int(text) <= MAX_ID else None


def target_id(id: strawberry.ID) -> int:
    """The user a mutation names; a malformed id names nobody (the rule has already checked
    that the caller may name other users)."""
    try:
        return int(USER_ARGS.load({"id": id})["id"])
    except ValidationError as error:
        raise UserNotFound(str(id)) from error


def create_user(info: Info, input: CreateUserInput) -> CreateUserResult:
    args = CREATE_USER_ARGS.load({"name": input.name, "email": input.email})
    created = user_service.create_user(
        info.context.uow(),
        info.context.provisioner,
        name=args["name"],
        email=args["email"],
        role=input.role,
    )
    return CreateUserSuccess(user=as_user(created))


def update_user(info: Info, id: strawberry.ID, input: UpdateUserInput) -> UpdateUserResult:
    given = {
        name: value
        for name in ("name", "email", "role")
        if (value := getattr(input, name)) is not strawberry.UNSET
    }
    args = UPDATE_USER_ARGS.load(given)
    updated = user_service.update_user(
        info.context.uow(),
        user_id=target_id(id),
        changes=user_service.UserChanges(**args),
    )
    return UpdateUserSuccess(user=as_user(updated))


def deactivate_user(info: Info, id: strawberry.ID) -> DeactivateUserResult:
    changed = user_service.set_active(
        info.context.uow(), actor_id=info.context.caller_id(), user_id=target_id(id), active=False
    )
    return DeactivateUserSuccess(user=as_user(changed))


def reactivate_user(info: Info, id: strawberry.ID) -> ReactivateUserResult:
    changed = user_service.set_active(
        info.context.uow(), actor_id=info.context.caller_id(), user_id=target_id(id), active=True
    )
    return ReactivateUserSuccess(user=as_user(changed))


def delete_user(info: Info, id: strawberry.ID) -> DeleteUserResult:
    removed = user_service.delete_user(
        info.context.uow(),
        info.context.provisioner,
        actor_id=info.context.caller_id(),
        user_id=target_id(id),
    )
    return DeleteUserSuccess(id=strawberry.ID(str(removed.id)))
