"""graphql-core's execution, with plain subtrees completed by one generated function each.

When a selection reads only plain data (leaves, objects and lists whose fields are attributes
of the source, type-field rules or functions of the source alone, with no arguments, no @defer
and no abstract types), this plans it once per request (a plan of leaves, once per process)
and completes each object by the function `compile_plan` generates for the plan. On anything
irregular that object goes back to graphql-core, which produces the very same result and
errors the general way. A plan that cannot be built or run for any other reason also goes
back, and says so once per plan in the log (see `fallbacks`).
tests/api/test_differential.py holds the two paths to the same bytes.
"""

import logging
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, ClassVar, NamedTuple, Protocol

from graphql import (
    FieldNode,
    GraphQLEnumType,
    GraphQLList,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLSchema,
    get_nullable_type,
    is_non_null_type,
)
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.pyutils import Path
from sqlalchemy.engine import Row
from strawberry.resolvers import is_default_resolver
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.field import StrawberryField

from schema.fast.completion import (
    Admits,
    Irregular,
    Plan,
    PlannedField,
    Reader,
    Value,
    compile_plan,
    constant,
    is_leaf,
    leaf_value,
    source_function,
)
from services.auth import Access
from services.documents import Lru

logger = logging.getLogger("schema.fast")


class RuledField(Protocol):
    """A rule on a field of a non-root type, as the fast path applies it (see
    schema.permissions.FieldRule)."""

    @property
    def type_name(self) -> str: ...
    @property
    def field_name(self) -> str: ...
    @property
    def attribute(self) -> str:
        """The source's attribute the field reads."""

    def read(self, source: Any, context: Any) -> Any:
        """The field's value, once the rule admits the caller; raises if it does not."""

    def admits(self, source: Any, context: Any) -> bool: ...

    def settled_by_role(self, context: Any) -> bool:
        """Whether the caller's role alone admits them, so that every source reads
        `attribute`."""


class FieldFacts(NamedTuple):
    """What the planner may do with a field of an object type; declared once per schema."""

    attribute: str | None = None
    """The source's attribute a plain field (or a ruled one) reads."""
    rule: RuledField | None = None
    computed: Callable[[Any], Any] | None = None


FieldTable = Mapping[tuple[str, str], FieldFacts]


def install_fields(schema: GraphQLSchema, rules: Iterable[RuledField]) -> FieldTable:
    """The planner's table for `schema`. Each ruled field is resolved by one small function
    that applies its rule and reads the attribute, instead of Strawberry's extension chain
    per row (which applies the same rule)."""
    table: dict[tuple[str, str], FieldFacts] = {}
    for rule in rules:
        graphql_type = schema.type_map[rule.type_name]
        assert isinstance(graphql_type, GraphQLObjectType)
        field = graphql_type.fields[rule.field_name]
        strawberry_field = (field.extensions or {}).get("strawberry-definition")
        if isinstance(strawberry_field, StrawberryField) and strawberry_field.base_resolver:
            # A field with a resolver of its own goes the general way, where Strawberry's
            # permission extension applies the same rule before the resolver runs.
            continue
        field.resolve = _rule_resolver(rule)
        table[rule.type_name, rule.field_name] = FieldFacts(rule.attribute, rule)
    roots = (schema.query_type, schema.mutation_type, schema.subscription_type)
    for graphql_type in schema.type_map.values():
        if not isinstance(graphql_type, GraphQLObjectType) or graphql_type in roots:
            continue
        for name, field in graphql_type.fields.items():
            strawberry_field = (field.extensions or {}).get("strawberry-definition")
            if (graphql_type.name, name) in table or not isinstance(
                strawberry_field, StrawberryField
            ):
                continue
            if field.resolve is not None and is_default_resolver(field.resolve):
                table[graphql_type.name, name] = FieldFacts(strawberry_field.python_name)
            elif (computed := source_function(strawberry_field)) is not None:
                table[graphql_type.name, name] = FieldFacts(computed=computed)
    return table


def _rule_resolver(rule: RuledField) -> Callable[..., Any]:
    read = rule.read

    def resolve(source: Any, info: GraphQLResolveInfo[Any], **_: Any) -> Any:
        return read(source, info.context)

    return resolve


class Fallbacks:
    """Plans that failed (not an irregular object: the plan itself), each logged once."""

    KEPT = 1024

    def __init__(self) -> None:
        self.count = 0
        self._logged: set[Hashable] = set()

    def forget(self) -> None:
        """Starts over: no fall-back counted, every plan logged again."""
        self.count = 0
        self._logged.clear()

    def record(
        self, plan: Hashable, parent: GraphQLObjectType, fields: Iterable[str], error: Exception
    ) -> None:
        self.count += 1
        if plan in self._logged:
            return
        if len(self._logged) < self.KEPT:
            self._logged.add(plan)
        logger.warning(
            "the fast path failed on %s { %s }; the general path answers instead",
            parent.name,
            " ".join(fields),
            exc_info=error,
        )


fallbacks = Fallbacks()

_LEAF_PLANS: Lru[Hashable, tuple[list[FieldNode], Plan]] = Lru(1024)


def forget_kept_plans() -> None:
    """Starts over with no plan kept across requests."""
    global _LEAF_PLANS
    _LEAF_PLANS = Lru(1024)


class FastExecutionContext(StrawberryGraphQLCoreExecutionContext):
    fields: ClassVar[FieldTable] = {}
    """Set for each schema (see FastSchema)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        is_awaitable = self.is_awaitable

        # A database row answers the check's `hasattr(row, "__await__")` by raising two
        # exceptions in turn, which costs more than resolving its field did. Its class alone
        # says that it is no awaitable.
        def row_or_awaitable(value: Any) -> bool:
            return value.__class__ is not Row and is_awaitable(value)

        self.is_awaitable = row_or_awaitable  # type: ignore[assignment]
        self._plans: dict[int, tuple[GroupedFieldSet, Plan | None]] = {}

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: GroupedFieldSet,
        position_context: Any,
    ) -> Any:
        middleware = self.middleware_manager
        if path is not None and (middleware is None or not middleware.middlewares):
            plan = self._plan(parent_type, grouped_field_set)
            if plan is not None:
                try:
                    return compile_plan(plan)(source_value, self.context_value)
                except Irregular:
                    pass  # the general path redoes this object and reports
                except Exception as error:  # noqa: BLE001 - the general path answers
                    fallbacks.record(plan, parent_type, grouped_field_set, error)
        return super().execute_fields(
            parent_type, source_value, path, grouped_field_set, position_context
        )

    def _plan(self, parent: GraphQLObjectType, fields: GroupedFieldSet) -> Plan | None:
        # graphql-core reuses one grouped field set for every row of a list: plan it once. The
        # set is kept with its plan, so its id cannot be reused while the plan is cached.
        cached = self._plans.get(id(fields))
        if cached is None:
            try:
                plan = self._kept_plan(parent, fields)
            except Exception as error:  # noqa: BLE001 - the general path answers
                fallbacks.record((parent.name, *fields), parent, fields, error)
                plan = None
            cached = (fields, plan)
            self._plans[id(fields)] = cached
        return cached[1]

    def _kept_plan(self, parent: GraphQLObjectType, fields: GroupedFieldSet) -> Plan | None:
        """The plan of an object all of whose fields are leaves, kept across requests.

        Such a plan follows from the parent type, the document's field nodes behind each
        response key (the parse cache hands every request the same nodes) and the caller's
        role, which settles rules; each entry holds its nodes, so no other node can take one
        of their ids meanwhile. Plans with objects inside depend on what the variables make
        of those objects' selections too: they are built for each request, from kept parts.
        """
        nodes = []
        for group in fields.values():
            for details in group:
                if details.defer_usage or details.fragment_variable_values:
                    return self._build_plan(parent, fields)
                nodes.append(details.node)
        # A node's response key is its own (alias or name), so the nodes in order say which
        # fields the set groups under which keys.
        role: Access = self.context_value.principal.role
        key = (parent, role, *map(id, nodes))
        kept = _LEAF_PLANS.get(key)
        if kept is not None:
            return kept[1]
        plan = self._build_plan(parent, fields)
        if plan is not None and all(is_leaf(field.value) for field in plan):
            _LEAF_PLANS.put(key, (nodes, plan))
        return plan

    def _build_plan(self, parent: GraphQLObjectType, fields: GroupedFieldSet) -> Plan | None:
        plan = []
        for key, details in fields.items():
            if any(
                d.defer_usage or d.fragment_variable_values or d.node.arguments for d in details
            ):
                return None
            name = details[0].node.name.value
            if name == "__typename":
                typename = Value(True, str, None, None, passes_str=True)
                plan.append(PlannedField(key, constant(parent.name), None, typename))
                continue
            facts = self.fields.get((parent.name, name))
            definition = parent.fields.get(name)
            if facts is None or definition is None:
                return None
            read: Reader | None = None
            admits: Admits | None = None
            if facts.rule is not None and not facts.rule.settled_by_role(self.context_value):
                # A plan lives for one request, so one caller: a role that settles the rule
                # leaves nothing to check per row.
                admits = facts.rule.admits
            value = self._value(definition.type, details)
            if value is None:
                return None
            plan.append(PlannedField(key, read, facts.attribute, value, facts.computed, admits))
        return tuple(plan)

    def _value(self, graphql_type: GraphQLOutputType, details: FieldDetailsList) -> Value | None:
        non_null = is_non_null_type(graphql_type)
        inner = get_nullable_type(graphql_type)
        if isinstance(inner, GraphQLScalarType | GraphQLEnumType):
            return leaf_value(inner, non_null)
        if isinstance(inner, GraphQLList):
            item = self._value(inner.of_type, details)
            return None if item is None else Value(non_null, None, None, item)
        if isinstance(inner, GraphQLObjectType) and inner.is_type_of is None:
            sub_fields, new_defer_usages, *_ = self.collect_subfields(inner, details)
            if new_defer_usages:
                return None
            plan = self._plan(inner, sub_fields)
            return None if plan is None else Value(non_null, None, plan, None)
        return None  # interfaces and unions resolve their type: the general path does that
