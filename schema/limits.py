"""What a document may ask for, decided before anything runs.

Tokens are bounded by the parser. Depth, aliases and directives are counted on the parsed
document, through every fragment spread, before validation, so an oversized document never
reaches the validator's costlier rules. Cost needs the variables (`first: $n`), so it is
computed right before execution. None of this touches the database.
"""

import enum
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from graphql import (
    BREAK,
    ASTValidationRule,
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
    VariableNode,
    get_named_type,
    specified_rules,
    validate,
)
from strawberry.extensions import SchemaExtension

from services.auth import Access
from services.documents import Lru

QUERY_TOO_DEEP = "QUERY_TOO_DEEP"
TOO_MANY_ALIASES = "TOO_MANY_ALIASES"
TOO_MANY_DIRECTIVES = "TOO_MANY_DIRECTIVES"
TOO_MANY_TOKENS = "TOO_MANY_TOKENS"
QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})
SLICING_ARGUMENT = "first"
"""The argument whose value multiplies the cost of its field's subtree."""
ENTITIES_FIELD = "_entities"
"""Federation's entry point (schema.federation), whose subtree counts once per
representation."""
GRAPHQL_MAX_INT = 2**31 - 1
# The standard introspection query (graphql-js, GraphiQL) nests `ofType` nine levels deep; it is
# bounded by this instead of by the depth limit, which is about the data graph.
INTROSPECTION_MAX_DEPTH = 15


@dataclass(frozen=True, slots=True)
class QueryLimits:
    max_depth: int = 10
    max_aliases: int = 15
    max_directives: int = 8
    max_tokens: int = 2000
    max_cost: int = 2000
    """A page of 100 users with every field costs 1,301."""


class IntrospectionPolicy(enum.StrEnum):
    EVERYONE = "everyone"
    ADMIN = "admin"
    NOBODY = "nobody"

    def allows(self, role: Access) -> bool:
        return self is IntrospectionPolicy.EVERYONE or (
            self is IntrospectionPolicy.ADMIN and role >= Access.ADMIN
        )


@dataclass(frozen=True, slots=True)
class ExposurePolicy:
    introspection: IntrospectionPolicy = IntrospectionPolicy.EVERYONE
    field_suggestions: bool = True


@dataclass(slots=True)
class _Shape:
    """What a selection set adds up to: its deepest path and what it contains."""

    depth: int = 0
    introspection_depth: int = 0
    aliases: int = 0
    directives: int = 0

    def add(self, other: "_Shape", *, offset: int, introspection: bool) -> None:
        if introspection:
            self.introspection_depth = max(self.introspection_depth, other.depth + offset)
        else:
            self.depth = max(self.depth, other.depth + offset)
        self.introspection_depth = max(self.introspection_depth, other.introspection_depth + offset)
        self.aliases += other.aliases
        self.directives += other.directives


class _Shapes:
    def __init__(self, document: DocumentNode) -> None:
        self._fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self._known: dict[str, _Shape] = {}
        self._visiting: set[str] = set()

    def of(self, selection_set: SelectionSetNode | None) -> _Shape:
        shape = _Shape()
        for selection in selection_set.selections if selection_set else ():
            shape.directives += len(selection.directives or ())
            if isinstance(selection, FieldNode):
                shape.aliases += selection.alias is not None
                inner = self.of(selection.selection_set)
                own = _Shape(depth=1)
                own.add(inner, offset=1, introspection=False)
                shape.add(own, offset=0, introspection=selection.name.value in INTROSPECTION_FIELDS)
            elif isinstance(selection, InlineFragmentNode):
                shape.add(self.of(selection.selection_set), offset=0, introspection=False)
            elif isinstance(selection, FragmentSpreadNode):
                shape.add(self._fragment(selection.name.value), offset=0, introspection=False)
        return shape

    def _fragment(self, name: str) -> _Shape:
        # Counted once per spread, as executed; a cycle counts nothing (validation refuses it).
        if name in self._known:
            return self._known[name]
        fragment = self._fragments.get(name)
        if fragment is None or name in self._visiting:
            return _Shape()
        self._visiting.add(name)
        shape = self.of(fragment.selection_set)
        shape.directives += len(fragment.directives or ())
        self._visiting.discard(name)
        self._known[name] = shape
        return shape


class NoIntrospection(ValidationRule):
    """One error for the whole document, where graphql-core's rule reports every field."""

    def enter_field(self, node: FieldNode, *_: object) -> object:
        if node.name.value not in INTROSPECTION_FIELDS:
            return None
        self.report_error(GraphQLError("Introspection is not allowed for this caller.", node))
        return BREAK


def static_limit_error(document: DocumentNode, limits: QueryLimits) -> GraphQLError | None:
    """The first limit any operation of the document exceeds, as an error; None if none."""
    shapes = _Shapes(document)
    for operation in document.definitions:
        if not isinstance(operation, OperationDefinitionNode):
            continue
        shape = shapes.of(operation.selection_set)
        shape.directives += len(operation.directives or ())
        if shape.depth > limits.max_depth:
            return _error(
                f"The query is {shape.depth} levels deep; the limit is {limits.max_depth}.",
                QUERY_TOO_DEEP,
            )
        if shape.introspection_depth > INTROSPECTION_MAX_DEPTH:
            return _error(
                f"The introspection query is {shape.introspection_depth} levels deep; "
                f"the limit is {INTROSPECTION_MAX_DEPTH}.",
                QUERY_TOO_DEEP,
            )
        if shape.aliases > limits.max_aliases:
            return _error(
                f"The query has {shape.aliases} aliases; the limit is {limits.max_aliases}.",
                TOO_MANY_ALIASES,
            )
        if shape.directives > limits.max_directives:
            return _error(
                f"The query has {shape.directives} directives; "
                f"the limit is {limits.max_directives}.",
                TOO_MANY_DIRECTIVES,
            )
    return None


def query_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
) -> int:
    """Fields are worth 1 each; a field with a `first` argument multiplies its subtree, and
    `_entities` multiplies it by the number of representations."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    operations = [
        d
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode)
        and (operation_name is None or (d.name is not None and d.name.value == operation_name))
    ]
    cost = 0
    for operation in operations:
        root = schema.get_root_type(operation.operation)
        cost = max(
            cost,
            _cost(
                schema,
                root,
                operation.selection_set,
                fragments,
                {} if variables is None else variables,
                set(),
            ),
        )
    return cost


def _cost(
    schema: GraphQLSchema,
    parent: GraphQLNamedType | None,
    selection_set: SelectionSetNode | None,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: Mapping[str, Any],
    visiting: set[str],
) -> int:
    total = 0
    for selection in selection_set.selections if selection_set else ():
        if isinstance(selection, FieldNode):
            definition = (
                parent.fields.get(selection.name.value)
                if isinstance(parent, GraphQLObjectType)
                else None
            )
            child_type = get_named_type(definition.type) if definition else None
            multiplier = 1
            if definition is not None and SLICING_ARGUMENT in definition.args:
                default = definition.args[SLICING_ARGUMENT].default_value
                multiplier = _first(selection, default, variables)
            elif definition is not None and selection.name.value == ENTITIES_FIELD:
                multiplier = _representations(selection, variables)
            inner = _cost(
                schema, child_type, selection.selection_set, fragments, variables, visiting
            )
            total += 1 + multiplier * inner
        elif isinstance(selection, InlineFragmentNode):
            condition = selection.type_condition
            narrowed = schema.get_type(condition.name.value) if condition else parent
            total += _cost(
                schema, narrowed, selection.selection_set, fragments, variables, visiting
            )
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in visiting:
                narrowed = schema.get_type(fragment.type_condition.name.value)
                total += _cost(
                    schema,
                    narrowed,
                    fragment.selection_set,
                    fragments,
                    variables,
                    visiting | {name},
                )
    return total


def _first(field: FieldNode, default: object, variables: Mapping[str, Any]) -> int:
    value: object = default
    for argument in field.arguments or ():
        if argument.name.value != SLICING_ARGUMENT:
            continue
        if isinstance(argument.value, IntValueNode):
            value = int(argument.value.value)
        elif isinstance(argument.value, VariableNode):
            value = variables.get(argument.value.name.value, default)
    # A value that is no GraphQL Int, or not a count, is refused later with BAD_USER_INPUT;
    # here it costs 1 so that the client hears the more precise reason.
    valid = isinstance(value, int) and not isinstance(value, bool) and 0 < value <= GRAPHQL_MAX_INT
    return value if valid else 1  # type: ignore[return-value]


def _representations(field: FieldNode, variables: Mapping[str, Any]) -> int:
    value: object = None
    for argument in field.arguments or ():
        if isinstance(argument.value, ListValueNode):
            value = argument.value.values
        elif isinstance(argument.value, VariableNode):
            value = variables.get(argument.value.name.value)
    # A single representation without brackets is a list of one, as GraphQL coerces it; an
    # empty list still costs the field itself.
    return max(len(value), 1) if isinstance(value, list | tuple) else 1


# The same text parses to the same cached document object, so the caches after it hit too:
# a document sent again is neither parsed nor validated nor costed again (unless its cost
# depends on its variables).
# The rules are part of the validation key: a role's verdict never serves another role.
DOCUMENT_CACHE_SIZE = 512


# Documents that parsed, by their text and the token limit they were parsed under.
_PARSED: Lru[tuple[str, int], DocumentNode] = Lru(DOCUMENT_CACHE_SIZE)


class _Parsed:
    """A document as a cache key, by identity: the same text parses to the same object (see
    _PARSED), and a document's own hash walks its whole tree on every lookup."""

    __slots__ = ("document",)

    def __init__(self, document: DocumentNode) -> None:
        self.document = document

    def __hash__(self) -> int:
        return id(self.document)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Parsed) and other.document is self.document


# Each cached key holds its document, so no other document can take its id meanwhile.
@functools.lru_cache(maxsize=DOCUMENT_CACHE_SIZE)
def _cached_static_limit_error(parsed: _Parsed, limits: QueryLimits) -> GraphQLError | None:
    return static_limit_error(parsed.document, limits)


@functools.lru_cache(maxsize=DOCUMENT_CACHE_SIZE)
def _cached_validation(
    schema: GraphQLSchema, parsed: _Parsed, rules: tuple[type[ASTValidationRule], ...]
) -> list[GraphQLError]:
    return validate(schema, parsed.document, rules)


class _NoVariables(Mapping[str, Any]):
    """No variables, noting whether anyone looked one up."""

    def __init__(self) -> None:
        self.looked_up = False

    def __getitem__(self, name: str) -> Any:
        self.looked_up = True
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@functools.lru_cache(maxsize=DOCUMENT_CACHE_SIZE)
def _fixed_cost(schema: GraphQLSchema, parsed: _Parsed, operation_name: str | None) -> int | None:
    """The operation's cost when no variable sets a `first`, the same for every request; else
    None, and each request's variables decide it."""
    variables = _NoVariables()
    cost = query_cost(schema, parsed.document, operation_name, variables)
    return None if variables.looked_up else cost


def _operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
) -> int:
    fixed = _fixed_cost(schema, _Parsed(document), operation_name)
    return query_cost(schema, document, operation_name, variables) if fixed is None else fixed


_SPECIFIED_RULES = tuple(specified_rules)


def _validation_rules(introspection_allowed: bool) -> tuple[type[ASTValidationRule], ...]:
    """graphql-core's specified rules (Strawberry's default), without introspection unless
    the caller may use it."""
    return _SPECIFIED_RULES if introspection_allowed else (*_SPECIFIED_RULES, NoIntrospection)


class ServesGraphQL(Protocol):
    """A schema that names its graphql-core schema (schema.root's does)."""

    @property
    def graphql_schema(self) -> GraphQLSchema: ...


def _graphql_schema(execution: Any) -> GraphQLSchema:
    return cast(ServesGraphQL, execution.schema).graphql_schema


def _error(message: str, code: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code})


class QueryLimitsExtension(SchemaExtension):
    """Applies the request's QueryLimits and ExposurePolicy (from the context)."""

    def on_operation(self) -> Iterator[None]:
        execution = self.execution_context
        context = execution.context
        execution.parse_options["max_tokens"] = context.limits.max_tokens
        allowed = context.exposure.introspection.allows(context.principal.role)
        execution.validation_rules = _validation_rules(allowed)
        yield

    def on_parse(self) -> Iterator[None]:
        # A document parsed before is reused; otherwise Strawberry parses it (and reports any
        # syntax error its usual way), and on_validate remembers the result.
        execution = self.execution_context
        if execution.query is not None:
            key = (execution.query, execution.context.limits.max_tokens)
            execution.graphql_document = document = _PARSED.get(key)
            log = execution.context.log
            if document is None:
                log.document_cache_misses += 1
            else:
                log.document_cache_hits += 1
        yield

    def on_validate(self) -> Iterator[None]:
        execution = self.execution_context
        document = execution.graphql_document
        if document is not None and execution.query is not None:
            _PARSED.put((execution.query, execution.context.limits.max_tokens), document)
        if document is not None:
            parsed = _Parsed(document)
            error = _cached_static_limit_error(parsed, execution.context.limits)
            # Either way validation is decided here, so Strawberry's own step is skipped: a
            # document over a limit never reaches the validator.
            execution.pre_execution_errors = (
                [error]
                if error is not None
                else _cached_validation(
                    _graphql_schema(execution), parsed, tuple(execution.validation_rules)
                )
            )
        yield

    def on_execute(self) -> Iterator[None]:
        execution = self.execution_context
        limits: QueryLimits = execution.context.limits
        document = execution.graphql_document
        cost = 0
        if document is not None:
            schema = _graphql_schema(execution)
            cost = _operation_cost(schema, document, execution.operation_name, execution.variables)
        if cost > limits.max_cost:
            # A result set here means graphql-core never executes the operation.
            execution.result = ExecutionResult(
                data=None,
                errors=[
                    _error(
                        f"The query costs {cost}; the limit is {limits.max_cost}.",
                        QUERY_TOO_COMPLEX,
                    )
                ],
            )
        yield
