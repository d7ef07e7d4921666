from typing import Any

import strawberry
from marshmallow import Schema, ValidationError, fields, pre_load, validate

from db import models
from resolvers.selection import selected_names
from schema import errors
from schema.context import Context
from schema.types.pagination import MAX_ID, decode_cursor
from schema.types.users import (
    CreateUserInput,
    CreateUserResult,
    CreateUserSuccess,
    User,
    UserConnection,
    as_user,
    user_attributes,
)
from services import users as user_service
from services.text import is_storable

Info = strawberry.Info[Context, None]
_REQUIRED_MESSAGES: dict[str, str | list[Any] | dict[Any, Any]] = {
    "required": errors.REQUIRED.message,
    "null": errors.REQUIRED.message,
}


class CursorField(fields.Field[int]):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        try:
            return decode_cursor(value)
        except ValueError as error:
            raise ValidationError(errors.INVALID_CURSOR.message) from error


class UsersArgs(Schema):
    first = fields.Integer(
        load_default=20,
        validate=validate.Range(
            1, user_service.MAX_PAGE_SIZE, error=errors.PAGE_SIZE_OUT_OF_RANGE.message
        ),
    )
    after = CursorField(load_default=None)


class UserArgs(Schema):
    id = fields.Integer(
        required=True,
        strict=False,
        error_messages={"invalid": errors.INVALID_ID.message},
        validate=validate.Range(1, MAX_ID, error=errors.INVALID_ID.message),
    )


def _storable(value: str) -> None:
    if not is_storable(value):
        raise ValidationError(errors.UNSUPPORTED_CHARACTER.message)


class CreateUserArgs(Schema):
    name = fields.String(
        required=True,
        error_messages=_REQUIRED_MESSAGES,
        validate=[
            _storable,
            validate.Length(min=1, error=errors.BLANK.message),
            validate.Length(max=models.NAME_MAX_LENGTH, error=errors.NAME_TOO_LONG.message),
        ],
    )
    email = fields.String(
        required=True,
        error_messages=_REQUIRED_MESSAGES,
        validate=[
            _storable,
            validate.Length(max=models.EMAIL_MAX_LENGTH, error=errors.EMAIL_TOO_LONG.message),
            validate.Email(error=errors.INVALID_EMAIL.message),
        ],
    )

    @pre_load
    def _trim(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {
            key: value.strip() if isinstance(value, str) else value for key, value in data.items()
        }


# Built once: a marshmallow schema is reusable for load(), and building one costs more than
# the validation it does.
USERS_ARGS, USER_ARGS, CREATE_USER_ARGS = UsersArgs(), UserArgs(), CreateUserArgs()


def users(info: Info, first: int | None = 20, after: str | None = None) -> UserConnection:
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
    )
    return UserConnection.from_page(page)


def user(info: Info, id: strawberry.ID) -> User | None:
    args = USER_ARGS.load({"id": id})
    found = user_service.get_user(
        info.context.reading(),
        user_id=args["id"],
        fields=user_attributes(selected_names(info)),
    )
    return None if found is None else as_user(found)


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
