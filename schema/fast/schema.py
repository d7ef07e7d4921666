"""A Strawberry schema that runs its operations by the fast path."""

from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import strawberry
from graphql import FieldNode, GraphQLSchema
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from resolvers.selection import NodesInfo
from schema.fast.executor import FastExecutionContext, RuledField, install_fields
from schema.fast.hooks import KeptHooksRunner


def graphql_schema(schema: strawberry.Schema) -> GraphQLSchema:
    """The graphql-core schema Strawberry built for `schema` (it has no public name for it)."""
    return schema._schema


class FieldNodesInfo(NodesInfo):
    @property
    def field_nodes(self) -> Sequence[FieldNode]:
        # Strawberry's Info names graphql-core's only privately; its selected_fields are built
        # from these same nodes.
        nodes: list[FieldNode] = self._raw_info.field_nodes
        return nodes


class FastSchema(strawberry.Schema):
    """Executes by FastExecutionContext, enters extensions' hooks through KeptHooksRunner and
    resolves the rules on fields of non-root types that `field_rules` finds in the
    graphql-core schema by one small function each. Every operation still goes through
    Strawberry's execute_sync, so every extension runs on every operation."""

    def __init__(
        self,
        *,
        field_rules: Callable[[GraphQLSchema], Iterable[RuledField]] = lambda _schema: (),
        config: StrawberryConfig | None = None,
        **kwargs: Any,
    ) -> None:
        # One class per schema, holding that schema's table of fields.
        executor = cast(
            type[FastExecutionContext],
            type("FastExecutionContext", (FastExecutionContext,), {}),
        )
        config = config or StrawberryConfig()
        config.info_class = FieldNodesInfo
        super().__init__(config=config, execution_context_class=executor, **kwargs)
        core = graphql_schema(self)
        executor.fields = install_fields(core, field_rules(core))

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> KeptHooksRunner:
        return KeptHooksRunner(execution_context=execution_context, extensions=extensions)
