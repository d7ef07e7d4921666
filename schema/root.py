"""The schema's builder: the only module that knows how the schema executes (schema.fast)."""

import functools
from collections.abc import Sequence

import strawberry
import strawberry.federation
from graphql import (
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    print_schema,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from schema import fast
from schema import federation as federation_module
from schema.errors import EXCEPTION_HANDLERS, ErrorCodes
from schema.limits import QueryLimitsExtension
from schema.mutation import Mutation
from schema.operation_log import OperationLog
from schema.permissions import RULES, apply_rules, field_rules
from schema.query import Query
from schema.types.users import User
from services.auth import Access

BATCH_CEILING = 100

# OperationLog outermost, so that its span covers the whole operation and ends with every
# error coded; then ErrorCodes, which wraps the limits and so sees every error they produce.
EXTENSIONS: tuple[type[SchemaExtension], ...] = (OperationLog, ErrorCodes, QueryLimitsExtension)


class UserqlSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Strawberry logs every error, a typo in a query included, at ERROR. The HTTP view
        # logs exactly the unexpected ones, with their traceback, when it masks them.
        return None

    @property
    def graphql_schema(self) -> GraphQLSchema:
        """graphql-core's schema, which the limits validate and cost documents against."""
        return fast.graphql_schema(self)


class FastUserqlSchema(fast.FastSchema, UserqlSchema):
    pass


class SubgraphSchema(UserqlSchema, strawberry.federation.Schema):
    """The schema as an Apollo Federation 2 subgraph (see schema.federation)."""

    @functools.cached_property
    def subgraph_sdl(self) -> str:
        return federation_module.subgraph_sdl(str(self), self.graphql_schema)


class FastSubgraphSchema(fast.FastSchema, SubgraphSchema):
    pass


apply_rules(Query, Mutation, User)


@strawberry.type(name="Query")
class FederatedQuery(federation_module.FederationFields, Query):
    pass


def build_schema(
    extensions: Sequence[type[SchemaExtension]] = EXTENSIONS,
    *,
    fast_execution: bool = True,
    federation: bool = False,
) -> UserqlSchema:
    """The schema, with these extensions; with `fast_execution`, run by the fast path (see
    schema.fast), else by Strawberry's stock execution. Both answer alike. With `federation`,
    the same schema as a subgraph (schema.federation)."""
    options: dict[str, object] = {
        "query": FederatedQuery if federation else Query,
        "mutation": Mutation,
        "extensions": list(extensions),
        # Allowed here up to this hard ceiling; each app decides (GRAPHQL_BATCH_MAX, off by
        # default).
        "config": StrawberryConfig(batching_config={"max_operations": BATCH_CEILING}),
        "exception_handlers": EXCEPTION_HANDLERS,
    }
    if federation:
        options["federation_version"] = federation_module.FEDERATION_VERSION
    built: UserqlSchema
    if fast_execution:
        fast_class = FastSubgraphSchema if federation else FastUserqlSchema
        built = fast_class(field_rules=field_rules, **options)  # type: ignore[arg-type]
    else:
        built = (SubgraphSchema if federation else UserqlSchema)(**options)  # type: ignore[arg-type]
        field_rules(built.graphql_schema)  # the same checks, applied by RoleRule
    if federation:
        _resolve_entities(built.graphql_schema)
    return built


def _resolve_entities(core: GraphQLSchema) -> None:
    # A User is resolved off its record (schema.types.users), a row that Strawberry's union
    # resolution can neither recognise nor have strawberry.cast mark; it is the one member.
    entity = core.type_map[federation_module.ENTITY_TYPE]
    assert isinstance(entity, GraphQLUnionType)
    [member] = entity.types
    entity.resolve_type = lambda *_: member.name


schema = build_schema()


@functools.cache
def executable_schema(*, fast_execution: bool, federation: bool = False) -> UserqlSchema:
    """The schema an app serves: `schema` with the fast path, else one built once without it;
    with `federation`, the subgraph, built once for each path."""
    if federation or not fast_execution:
        return build_schema(fast_execution=fast_execution, federation=federation)
    return schema


def schema_for(role: Access) -> str:
    """The SDL of what `role` can use: the Query and Mutation fields its rules admit, and the
    types those reach."""
    core = schema.graphql_schema

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
