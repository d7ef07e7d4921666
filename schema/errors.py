"""How failures reach clients.

Every error in a response carries `extensions.code`. Errors a client can act on keep their
message; anything else is replaced at the HTTP boundary by "Internal server error" with code
INTERNAL, and only the log keeps the traceback (see `mask_unexpected`).
"""

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Set
from typing import Any, NamedTuple, TypeVar

import marshmallow
import strawberry
from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.extensions import SchemaExtension
from strawberry.types.field import StrawberryField

from schema.context import Context
from schema.limits import TOO_MANY_TOKENS
from schema.types import auth, users
from schema.types.errors import FieldError, ValidationError
from services import errors as service_errors
from services.errors import ServiceError

logger = logging.getLogger(__name__)

PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
BAD_USER_INPUT = "BAD_USER_INPUT"
INTERNAL = "INTERNAL"
INTERNAL_MESSAGE = "Internal server error"


class InputRule(NamedTuple):
    code: str
    message: str


# Every message the input validators may produce, with the stable code clients branch on.
REQUIRED = InputRule("REQUIRED", "This field is required.")
NOT_NULL = InputRule("NOT_NULL", "Must not be null; leave the field out to keep it.")
BLANK = InputRule("BLANK", "Must not be blank.")
NAME_TOO_LONG = InputRule("TOO_LONG", "Must be at most 80 characters.")
EMAIL_TOO_LONG = InputRule("TOO_LONG", "Must be at most 254 characters.")
INVALID_EMAIL = InputRule("INVALID_EMAIL", "Not a valid email address.")
PAGE_SIZE_OUT_OF_RANGE = InputRule("OUT_OF_RANGE", "Must be between 1 and 100.")
INVALID_CURSOR = InputRule("INVALID_CURSOR", "Not a valid cursor.")
INVALID_ID = InputRule("INVALID_ID", "Not a valid user id.")
UNSUPPORTED_CHARACTER = InputRule(
    "UNSUPPORTED_CHARACTER",
    "Must not contain control, bidirectional-override or unpaired surrogate characters.",
)
_CODE_BY_MESSAGE = {
    rule.message: rule.code
    for rule in (
        REQUIRED,
        NOT_NULL,
        BLANK,
        NAME_TOO_LONG,
        EMAIL_TOO_LONG,
        INVALID_EMAIL,
        PAGE_SIZE_OUT_OF_RANGE,
        INVALID_CURSOR,
        INVALID_ID,
        UNSUPPORTED_CHARACTER,
    )
}


def field_errors(error: marshmallow.ValidationError, *, root: list[str]) -> list[FieldError]:
    """One FieldError per message, with the path in the schema's camelCase names."""
    return list(_flatten(error.messages, root))


def _flatten(messages: object, path: list[str]) -> Iterator[FieldError]:
    if isinstance(messages, Mapping):
        for key, nested in messages.items():
            yield from _flatten(nested, [*path, _camel_case(str(key))])
    elif isinstance(messages, list):
        for message in messages:
            yield from _flatten(message, path)
    else:
        message = str(messages)
        yield FieldError(path=path, message=message, code=_CODE_BY_MESSAGE.get(message, "INVALID"))


def _camel_case(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


E = TypeVar("E", bound=Exception)
T = TypeVar("T")


class MapToType(strawberry.ExceptionHandler[E, T]):
    """Turns one exception into a member of the result union of every field that has it."""

    def __init__(self, exception_type: type[E], error_type: type[T], build: Callable[[E], T]):
        self.exception_type = exception_type
        self.error_type = error_type
        self._build = build

    def handle(self, exception: E, *, field: StrawberryField, info: Any) -> T:
        return self._build(exception)


EXCEPTION_HANDLERS = (
    # Mutations take a single `input` argument, so paths start there.
    MapToType(
        marshmallow.ValidationError,
        ValidationError,
        lambda e: ValidationError(fields=field_errors(e, root=["input"])),
    ),
    MapToType(
        service_errors.EmailTaken,
        users.EmailAlreadyRegistered,
        lambda e: users.EmailAlreadyRegistered(email=e.email, message=str(e)),
    ),
    MapToType(
        service_errors.ProvisioningError,
        users.ProvisioningFailed,
        lambda e: users.ProvisioningFailed(message=str(e)),
    ),
    MapToType(
        service_errors.UserNotFound,
        users.UserNotFound,
        lambda e: users.UserNotFound(id=strawberry.ID(str(e.user_id)), message=str(e)),
    ),
    MapToType(
        service_errors.LastActiveAdmin,
        users.LastActiveAdmin,
        lambda e: users.LastActiveAdmin(message=str(e)),
    ),
    MapToType(
        service_errors.CannotTargetSelf,
        users.CannotTargetSelf,
        lambda e: users.CannotTargetSelf(message=str(e)),
    ),
    MapToType(
        service_errors.AccountDeactivated,
        auth.AccountDeactivated,
        lambda e: auth.AccountDeactivated(email=e.email, message=str(e)),
    ),
    MapToType(
        service_errors.InvalidRefreshToken,
        auth.InvalidRefreshToken,
        lambda e: auth.InvalidRefreshToken(message=str(e)),
    ),
    MapToType(
        service_errors.RefreshTokenReused,
        auth.RefreshTokenReused,
        lambda e: auth.RefreshTokenReused(message=str(e)),
    ),
    MapToType(
        service_errors.InvalidGoogleToken,
        auth.InvalidGoogleToken,
        lambda e: auth.InvalidGoogleToken(message=str(e)),
    ),
    MapToType(
        service_errors.EmailNotVerified,
        auth.EmailNotVerified,
        lambda e: auth.EmailNotVerified(email=e.email, message=str(e)),
    ),
    MapToType(
        service_errors.NotRegistered,
        auth.NotRegistered,
        lambda e: auth.NotRegistered(email=e.email, message=str(e)),
    ),
)


def _copy(error: GraphQLError, *, message: str | None = None, **extensions: object) -> GraphQLError:
    """A new error; never a changed one: validation errors are cached and shared by requests."""
    return GraphQLError(
        error.message if message is None else message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=error.original_error,
        extensions={**(error.extensions or {}), **extensions},
    )


class ErrorCodes(SchemaExtension):
    """Gives every error a client can act on its `extensions.code`.

    Errors left without a code are unexpected; `mask_unexpected` hides them.
    """

    def on_operation(self) -> Iterator[None]:
        self._validation_errors: set[int] = set()
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = coded_errors(
                result.errors, self.execution_context.context, self._validation_errors
            )

    def on_validate(self) -> Iterator[None]:
        yield
        # Only this phase tells graphql-core's validation errors from its variable errors.
        self._validation_errors = {id(e) for e in self.execution_context.pre_execution_errors or ()}


def coded_errors(
    errors: list[GraphQLError], context: Context, validation_errors: Set[int] = frozenset()
) -> list[GraphQLError]:
    """The errors of an operation as the client gets them: each with its code. Validation
    errors are known by their ids in `validation_errors`."""
    strip = not context.exposure.field_suggestions
    return [
        _coded(error, validation=id(error) in validation_errors, strip=strip) for error in errors
    ]


# "Did you mean 'name'?" and its kin rebuild a hidden schema one guess at a time.
_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")


def _coded(error: GraphQLError, *, validation: bool, strip: bool) -> GraphQLError:
    code = _code(error, validation=validation)
    message = _SUGGESTION.sub("", error.message) if strip else error.message
    if isinstance(error.original_error, marshmallow.ValidationError):
        fields = field_errors(error.original_error, root=[])
        summary = "; ".join(f"{'.'.join(f.path)}: {f.message}" for f in fields)
        details = [{"path": f.path, "message": f.message, "code": f.code} for f in fields]
        located = GraphQLError(f"Invalid argument. {summary}", nodes=error.nodes, path=error.path)
        return _copy(located, fields=details, code=BAD_USER_INPUT)
    if code is None:
        return error  # unexpected: mask_unexpected decides, at the HTTP boundary
    if message == error.message and (error.extensions or {}).get("code") == code:
        return error
    extra = getattr(error.original_error, "extensions", {})
    return _copy(error, message=message, **extra, code=code)


def _code(error: GraphQLError, *, validation: bool) -> str | None:
    original = error.original_error
    if error.extensions and "code" in error.extensions:
        return str(error.extensions["code"])
    if isinstance(original, ServiceError):
        return original.code
    if isinstance(error, GraphQLSyntaxError):
        too_long = "tokens. Parsing aborted." in error.message  # graphql-core's max_tokens
        return TOO_MANY_TOKENS if too_long else PARSE_FAILED
    if validation:
        return VALIDATION_FAILED
    if error.path is None and (original is None or isinstance(original, GraphQLError)):
        # Outside any field and past validation: graphql-core refused a variable's value.
        return BAD_USER_INPUT
    return None


def mask_unexpected(error: GraphQLError) -> GraphQLError:
    """The error as a client may see it: unchanged if it has a code, else masked and logged."""
    if error.extensions and "code" in error.extensions:
        return error
    logger.error(
        "unexpected error at %s: %s",
        ".".join(map(str, error.path or ())) or "<operation>",
        error.message,
        exc_info=error.original_error,
    )
    return GraphQLError(
        INTERNAL_MESSAGE,
        nodes=error.nodes,
        path=error.path,
        extensions={"code": INTERNAL},
    )
