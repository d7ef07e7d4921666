from collections.abc import Iterable
from typing import Any

import strawberry
from graphql import GraphQLError, GraphQLObjectType, GraphQLSchema, print_schema
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import DEFAULT_ALLOWED_OPERATION_TYPES
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from schema.errors import EXCEPTION_HANDLERS, ErrorCodes
from schema.execution import LeafExecutor, install_source_functions
from schema.extension_hooks import KeptHooksRunner
from schema.known_operations import execute_admitted
from schema.limits import QueryLimitsExtension
from schema.mutation import Mutation
from schema.operation_log import OperationLog
from schema.permissions import RULES, apply_rules, install_field_rules
from schema.query import Query
from schema.types.users import User
from services.auth import Role

BATCH_CEILING = 100


class UserqlSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Strawberry logs every error, a typo in a query included, at ERROR. The HTTP view
        # logs exactly the unexpected ones, with their traceback, when it masks them.
        return None

    def execute_sync(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        admitted = execute_admitted(
            self,
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            DEFAULT_ALLOWED_OPERATION_TYPES
            if allowed_operation_types is None
            else allowed_operation_types,
            operation_extensions,
        )
        if admitted is not None:
            return admitted
        return super().execute_sync(
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            allowed_operation_types,
            operation_extensions,
        )

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> KeptHooksRunner:
        return KeptHooksRunner(execution_context=execution_context, extensions=extensions)


apply_rules(Query, Mutation, User)
schema = UserqlSchema(
    query=Query,
    mutation=Mutation,
    # ErrorCodes first: it wraps the others, so it sees every error they produce.
    extensions=[
        ErrorCodes,
        QueryLimitsExtension,
        OperationLog,
    ],
    # Allowed here up to this hard ceiling; each app decides (GRAPHQL_BATCH_MAX, off by default).
    config=StrawberryConfig(batching_config={"max_operations": BATCH_CEILING}),
    exception_handlers=EXCEPTION_HANDLERS,
    execution_context_class=LeafExecutor,
)
install_field_rules(schema._schema)
install_source_functions(schema._schema)


def schema_for(role: Role) -> str:
    """The SDL of what `role` can use: the Query and Mutation fields its rules admit, and the
    types those reach."""
    core = schema._schema

    def admitted(root: GraphQLObjectType | None) -> GraphQLObjectType | None:
        if root is None:
            return None
        fields = {
            name: field
            for name, field in root.fields.items()
            if RULES[f"{root.name}.{name}"].allows(role)
        }
        return (
            GraphQLObjectType(root.name, fields, description=root.description) if fields else None
        )

    visible = GraphQLSchema(query=admitted(core.query_type), mutation=admitted(core.mutation_type))
    return print_schema(visible)
