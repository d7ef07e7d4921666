"""Operations the limits admitted before run without Strawberry's per-operation machinery.

For every operation Strawberry builds an execution context, instantiates each extension and
drives its hooks through context managers. For an operation whose document was parsed,
validated and found within every limit before, for this caller (see
limits.admitted_operation), the hooks of this schema's extensions only confirm answers they
keep, yet they cost a `user(id)` a tenth of its CPU. `execute_admitted` runs such an
operation with what those extensions do to it (OperationLog's record, ErrorCodes' codes) and
calls graphql-core as Strawberry does; anything else is left to the general path.
tests/api/test_differential.py compares both, byte for byte, on every document of the suite.
"""

from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from inspect import isawaitable
from typing import Any, TypeGuard, cast

import strawberry
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError, execute
from graphql.execution.middleware import MiddlewareManager
from strawberry.execution.is_awaitable import optimized_is_awaitable
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.utils.operation import get_operation_type

from schema.context import Context
from schema.errors import coded_errors
from schema.limits import admitted_operation

# Strawberry's own checks, which graphql-core's signature types as type guards.
_IS_AWAITABLE = cast("Callable[[Any], TypeGuard[Awaitable[Any]]]", optimized_is_awaitable)
_NEVER_ASYNC_ITERABLE = cast("Callable[[Any], TypeGuard[AsyncIterable[Any]]]", lambda _value: False)


def execute_admitted(
    schema: strawberry.Schema,
    query: str | None,
    variables: dict[str, Any] | None,
    context: object,
    root_value: object,
    operation_name: str | None,
    allowed_operation_types: Iterable[OperationType],
    operation_extensions: dict[str, Any] | None,
) -> ExecutionResult | None:
    """The result Strawberry's `execute_sync` would give, for an admitted operation; None
    for any other, whose answer, error or refusal only the general path gives."""
    if query is None or not isinstance(context, Context):
        return None
    admitted = admitted_operation(
        schema._schema,
        query,
        context.limits,
        context.exposure.introspection.allows(context.principal.role),
        operation_name,
        variables,
    )
    if admitted is None:
        return None
    try:
        operation_type = get_operation_type(admitted.document, admitted.operation_name)
    except RuntimeError:
        return None  # no such operation: the general path says so
    if operation_type not in allowed_operation_types:
        return None
    context.log.operation_name = admitted.operation_name
    context.log.operation_type = operation_type.value
    try:
        result = execute(
            schema._schema,
            admitted.document,
            root_value=root_value,
            middleware=MiddlewareManager(),
            variable_values=variables,
            operation_name=admitted.operation_name,
            context_value=context,
            is_awaitable=_IS_AWAITABLE,
            executor_class=schema.execution_context_class,
            operation_extensions=operation_extensions,
            is_async_iterable=_NEVER_ASYNC_ITERABLE,
        )
        if isawaitable(result) or not isinstance(result, GraphQLExecutionResult):
            raise RuntimeError("GraphQL execution failed to complete synchronously.")
    except Exception as error:  # noqa: BLE001 - what Strawberry's execute_sync does
        coerced = (
            error
            if isinstance(error, GraphQLError)
            else GraphQLError(str(error), original_error=error)
        )
        schema._process_errors([coerced])
        return ExecutionResult(data=None, errors=[coerced], extensions={})
    errors = result.errors
    if errors:
        schema._process_errors(errors)
        errors = coded_errors(errors, context)
    return ExecutionResult(data=result.data, errors=errors, extensions={})
