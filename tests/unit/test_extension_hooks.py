"""KeptHooksRunner runs extension hooks exactly as Strawberry's own runner does."""

import re
from collections.abc import Iterator
from typing import Any

import pytest
import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext

from schema.fast import KeptHooksRunner

EVENTS: list[str] = []


class Wrapping(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        EVENTS.append("operation: enter")
        try:
            yield
        except Exception as error:
            EVENTS.append(f"operation: saw {error}")
            raise
        EVENTS.append("operation: leave")

    def on_parse(self) -> Iterator[None]:
        EVENTS.append("parse")
        yield

    def on_validate(self) -> Iterator[None]:
        EVENTS.append("validate: enter")
        yield
        EVENTS.append("validate: leave")

    def on_execute(self) -> Iterator[None]:
        EVENTS.append(f"execute: {self.execution_context.operation_name}")
        yield


class Plain(SchemaExtension):
    def on_execute(self) -> None:  # type: ignore[override]
        EVENTS.append("plain execute")


class Failing(SchemaExtension):
    def on_execute(self) -> Iterator[None]:
        if self.execution_context.operation_name == "Fail":
            raise RuntimeError("refused")
        yield


class Asynchronous(SchemaExtension):
    async def on_execute(self) -> Any:
        yield


@strawberry.type
class Query:
    @strawberry.field
    def greeting(self) -> str:
        return "hello"


class KeptSchema(strawberry.Schema):
    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        return KeptHooksRunner(execution_context=execution_context, extensions=extensions)


def _run(schema_class: type[strawberry.Schema], extensions: list[Any], query: str) -> Any:
    EVENTS.clear()
    schema = schema_class(query=Query, extensions=extensions)
    try:
        result = schema.execute_sync(query)
    except Exception as error:  # noqa: BLE001 - what each runner lets through is compared
        outcome: Any = ("raised", type(error).__name__, _without_addresses(str(error)))
    else:
        errors = [_without_addresses(error.message) for error in result.errors or []]
        outcome = (result.data, errors)
    # Strawberry names a failing hook by its extension's repr, which holds an address.
    return outcome, [_without_addresses(event) for event in EVENTS]


def _without_addresses(text: str) -> str:
    return re.sub(" at 0x[0-9a-f]+", "", text)


@pytest.mark.parametrize(
    "query",
    ["query Hello { greeting }", "query Fail { greeting }", "{ nope }", "{ greeting"],
    ids=["ok", "hook raises", "invalid", "syntax error"],
)
def test_hooks_run_in_the_same_order_with_the_same_outcome(query: str) -> None:
    extensions = [Wrapping, Plain, Failing]

    kept = _run(KeptSchema, extensions, query)

    assert kept == _run(strawberry.Schema, extensions, query)
    assert kept[1][0] == "operation: enter"


def test_an_asynchronous_hook_is_refused_in_a_synchronous_operation_as_before() -> None:
    kept = _run(KeptSchema, [Asynchronous], "{ greeting }")

    assert kept == _run(strawberry.Schema, [Asynchronous], "{ greeting }")
    assert "failed to complete synchronously" in str(kept)


class Swallowing(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        try:
            yield
        except RuntimeError as error:
            EVENTS.append(f"swallowed {error}")


class RaisingOnTheWayOut(SchemaExtension):
    def on_validate(self) -> Iterator[None]:
        yield
        EVENTS.append("validate: raising")
        raise ValueError("refused after validation")


class NeverYielding(SchemaExtension):
    def on_parse(self) -> Iterator[None]:
        EVENTS.append("parse: no yield")
        return
        yield  # a generator function that ends before its first yield


@pytest.mark.parametrize(
    "extensions",
    [
        [Swallowing, Failing],
        [Wrapping, RaisingOnTheWayOut],
        [RaisingOnTheWayOut, Swallowing, Wrapping],
        [NeverYielding, Wrapping],
        [Wrapping, Plain, Asynchronous],
    ],
    ids=["swallowed", "raises on exit", "raise then swallow", "never yields", "async last"],
)
@pytest.mark.parametrize("query", ["query Fail { greeting }", "query Hello { greeting }"])
def test_unusual_hooks_end_as_in_strawberry(extensions: list[Any], query: str) -> None:
    assert _run(KeptSchema, extensions, query) == _run(strawberry.Schema, extensions, query)
