"""A faster way to complete plain subtrees of a result.

graphql-core completes every field of every row on its own: a path, a resolve info, the
resolver, then the value's completion, about 120 calls per row of five scalars. When a selection
reads only plain data (leaves, objects and lists whose fields are attributes of the source or
type-field rule readers, with no arguments, no @defer and no abstract types), this plans it once
per request and completes each object in one pass, by a function generated once per plan. On
anything irregular (an exception, a null in a non-null place, a value that does not serialise)
that object goes back to graphql-core, which produces the very same result and errors the
general way.
tests/api/test_differential.py holds the two paths to the same bytes.
"""

import enum
import functools
import inspect
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, NamedTuple, cast

from graphql import (
    FieldNode,
    GraphQLEnumType,
    GraphQLID,
    GraphQLList,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLString,
    get_nullable_type,
    is_non_null_type,
)
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.pyutils import Path, Undefined
from sqlalchemy.engine import Row
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.field import StrawberryField

from services.auth import Role
from services.documents import Lru

Reader = Callable[[Any, Any], Any]


class _Irregular(Exception):
    """This subtree needs graphql-core's general path."""


class _Value(NamedTuple):
    """How to complete one value: a leaf's serializer, or an object's plan; and its nullness."""

    non_null: bool
    serialize: Callable[[Any], Any] | None
    plan: "_Plan | None"
    item: "_Value | None"  # set for lists
    passes_str: bool = False
    """The serializer returns a str as it is (String and ID): no call needed for one."""
    int_to_str: bool = False
    """The serializer returns an int as its decimal string (ID)."""
    members: "tuple[type, tuple[tuple[Any, str], ...]] | None" = None
    """An enum's Python class and the name the serializer gives each of its members."""


class _Field(NamedTuple):
    key: str
    read: Reader | None
    """A type-field rule's reader, or None to read `attribute` of the source."""
    attribute: str | None
    value: _Value
    computed: Callable[[Any], Any] | None = None
    """A resolver of the source alone (see install_source_functions), called with it."""


_Completion = Callable[[Any, Any], dict[str, Any]]

# Hashable all the way down (readers and serializers compare by identity), so that a plan
# is its own cache key: each distinct plan is compiled once per process.
_Plan = tuple[_Field, ...]


@functools.cache
def _constant(value: str) -> Reader:
    return lambda _source, _context: value


# Each plan becomes one generated function that completes a whole object with no call per
# field beyond reading and serializing it: graphql-jit's approach, which takes a row from a
# few dozen Python calls to a handful. The generated code does what _complete_value did
# (and the general path does): nulls, serializers' refusals and odd lists raise _Irregular.


@functools.lru_cache(maxsize=1024)
def _compile(plan: _Plan, row_positions: tuple[int, ...] | None = None) -> _Completion:
    """The completion of an object by `plan`; with `row_positions`, of a database Row that
    holds the plan's attributes at those positions."""
    namespace: dict[str, Any] = {"_Irregular": _Irregular, "Undefined": Undefined, "Row": Row}
    lines = ["def complete(source, context):"]
    attributes = tuple(
        cast(str, f.attribute) for f in plan if f.read is None and f.computed is None
    )
    if row_positions is None and attributes:
        namespace["layouts"] = _RowLayouts(plan, attributes)
        lines += [
            "    if source.__class__ is Row:",
            "        by_position = layouts.complete_for(source)",
            "        if by_position is not None:",
            "            return by_position(source, context)",
        ]
    positions = iter(row_positions or ())
    outputs = []
    for index, field in enumerate(plan):
        raw, out = f"raw{index}", f"out{index}"
        if field.computed is not None:
            namespace[f"computed{index}"] = field.computed
            lines.append(f"    {raw} = computed{index}(source)")
        elif field.read is None and row_positions is not None:
            lines.append(f"    {raw} = source[{next(positions)}]")
        elif field.read is None:
            lines.append(f"    {raw} = source.{field.attribute}")
        else:
            namespace[f"read{index}"] = field.read
            lines.append(f"    {raw} = read{index}(source, context)")
        lines.extend("    " + line for line in _value_lines(field.value, raw, out, namespace))
        outputs.append(f"{field.key!r}: {out}")
    lines.append("    return {" + ", ".join(outputs) + "}")
    exec("\n".join(lines), namespace)  # noqa: S102 - names and keys are GraphQL names
    complete: _Completion = namespace["complete"]
    return complete


# A Row read by name goes through SQLAlchemy's __getattr__, ten times the cost of reading it by
# position: for a page of a hundred users, a twentieth of the request.
class _RowLayouts:
    """A plan's completions for database rows, one per row layout. SQLAlchemy gives every row
    of a cached statement's results the same map of names to positions, request after request."""

    KEPT = 8

    def __init__(self, plan: _Plan, attributes: tuple[str, ...]) -> None:
        self._plan, self._attributes = plan, attributes
        # Each entry holds its map, so that no other map can take its id meanwhile.
        self._by_layout: dict[int, tuple[Any, _Completion | None]] = {}

    def complete_for(self, row: Row[Any]) -> _Completion | None:
        layout = row._key_to_index
        kept = self._by_layout.get(id(layout))
        if kept is None:
            kept = (layout, self._compile_for(layout))
            if len(self._by_layout) < self.KEPT:
                self._by_layout[id(layout)] = kept
        return kept[1]

    def _compile_for(self, layout: Mapping[Any, Any]) -> _Completion | None:
        positions = tuple(layout.get(attribute) for attribute in self._attributes)
        if not all(position.__class__ is int for position in positions):
            return None  # a name the row lacks, or holds twice: read by name, as before
        return _compile(self._plan, cast(tuple[int, ...], positions))


def _value_lines(value: _Value, raw: str, out: str, namespace: dict[str, Any]) -> list[str]:
    name = f"{out}_{len(namespace)}"
    lines = [f"if {raw} is None:"]
    lines.append("    raise _Irregular" if value.non_null else f"    {out} = None")
    if value.serialize is not None:
        namespace[f"serialize_{name}"] = value.serialize
        if value.passes_str:
            lines += [f"elif {raw}.__class__ is str:", f"    {out} = {raw}"]
        if value.int_to_str:
            lines += [f"elif {raw}.__class__ is int:", f"    {out} = str({raw})"]
        if value.members is not None:
            member_class, names = value.members
            namespace[f"class_{name}"], namespace[f"names_{name}"] = member_class, dict(names)
            lines += [f"elif {raw}.__class__ is class_{name}:", f"    {out} = names_{name}[{raw}]"]
        lines += [
            "else:",
            f"    {out} = serialize_{name}({raw})",
            f"    if {out} is None or {out} is Undefined:",
            "        raise _Irregular",
        ]
    elif value.item is not None:
        namespace[f"item_{name}"] = _item_completer(value.item)
        lines += [
            f"elif {raw}.__class__ is not list and (",
            f"    isinstance({raw}, str | bytes | dict) or not isinstance({raw}, Iterable)",
            "):",
            "    raise _Irregular",
            "else:",
            f"    {out} = [item_{name}(item, context) for item in {raw}]",
        ]
        namespace["Iterable"] = Iterable
    else:
        assert value.plan is not None
        namespace[f"object_{name}"] = _compile(value.plan)
        lines += ["else:", f"    {out} = object_{name}({raw}, context)"]
    return lines


def _item_completer(value: _Value) -> Callable[[Any, Any], Any]:
    namespace: dict[str, Any] = {"_Irregular": _Irregular, "Undefined": Undefined}
    lines = ["def complete(raw, context):"]
    lines.extend("    " + line for line in _value_lines(value, "raw", "out", namespace))
    lines.append("    return out")
    exec("\n".join(lines), namespace)  # noqa: S102 - no names from the document
    complete: Callable[[Any, Any], Any] = namespace["complete"]
    return complete


def install_source_functions(schema: GraphQLSchema) -> None:
    """Marks each field computed from its source alone (a resolver that takes nothing but the
    source: no arguments, no info, not async, no field extensions) with the function to call
    on the source, so that it is completed in the one pass instead of sending its whole
    object down the general path."""
    roots = (schema.query_type, schema.mutation_type, schema.subscription_type)
    for graphql_type in schema.type_map.values():
        if not isinstance(graphql_type, GraphQLObjectType) or graphql_type in roots:
            continue
        for field in graphql_type.fields.values():
            strawberry_field = (field.extensions or {}).get("strawberry-definition")
            computed, resolve = _source_function(strawberry_field), field.resolve
            if computed is not None and resolve is not None and not hasattr(resolve, "read"):
                resolve.computed = computed


def _source_function(field: StrawberryField | None) -> Callable[[Any], Any] | None:
    resolver = None if field is None else field.base_resolver
    if field is None or resolver is None or field.arguments or field.extensions:
        return None
    if resolver.info_parameter is not None or resolver.is_async:
        return None
    function = cast(Callable[..., Any], resolver.wrapped_func)
    parameters = list(resolver.signature.parameters.values())
    sources = [resolver.self_parameter, resolver.root_parameter, resolver.parent_parameter]
    if len(parameters) != 1 or parameters[0] not in sources:
        return None
    # Strawberry passes self by position, root and parent by name: the same call, for a
    # resolver's only parameter, unless it is keyword-only.
    if parameters[0].kind is not inspect.Parameter.KEYWORD_ONLY:
        return function
    name = parameters[0].name
    return lambda source: function(**{name: source})


@functools.cache
def _leaf_value(leaf: GraphQLScalarType | GraphQLEnumType, non_null: bool) -> _Value:
    # Planned for every request: a leaf's completion depends on its type alone.
    return _Value(
        non_null,
        leaf.serialize,
        None,
        None,
        passes_str=leaf in (GraphQLString, GraphQLID),
        int_to_str=leaf is GraphQLID,
        members=_members(leaf),
    )


def _members(
    leaf: GraphQLScalarType | GraphQLEnumType,
) -> tuple[type, tuple[tuple[Any, str], ...]] | None:
    """For a Strawberry enum, its Python enum and each member's name as its serializer gives it."""
    member_class = getattr(leaf, "wrapped_cls", None)
    if not isinstance(leaf, GraphQLEnumType) or not isinstance(member_class, enum.EnumMeta):
        return None
    members: list[enum.Enum] = list(member_class)
    return member_class, tuple((member, leaf.serialize(member)) for member in members)


_LEAF_PLANS: Lru[Hashable, tuple[list[FieldNode], _Plan]] = Lru(1024)


def _is_leaf(value: _Value) -> bool:
    return value.plan is None and (value.item is None or _is_leaf(value.item))


class LeafExecutor(StrawberryGraphQLCoreExecutionContext):
    # The differential test turns this off to compare with the general path.
    enabled = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        is_awaitable = self.is_awaitable

        # A database row answers the check's `hasattr(row, "__await__")` by raising two
        # exceptions in turn, which costs a request more than resolving its field did. Its
        # class alone says that it is no awaitable.
        def row_or_awaitable(value: Any) -> bool:
            return value.__class__ is not Row and is_awaitable(value)

        self.is_awaitable = row_or_awaitable  # type: ignore[assignment]

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: GroupedFieldSet,
        position_context: Any,
    ) -> Any:
        middleware = getattr(self.middleware_manager, "middlewares", None)
        if self.enabled and path is not None and not middleware:
            plan = self._plan(parent_type, grouped_field_set)
            if plan is not None:
                try:
                    return _compile(plan)(source_value, self.context_value)
                except Exception:  # noqa: BLE001, S110 - the general path redoes it and reports
                    pass
        return super().execute_fields(
            parent_type, source_value, path, grouped_field_set, position_context
        )

    def _plan(self, parent: GraphQLObjectType, fields: GroupedFieldSet) -> _Plan | None:
        # graphql-core reuses one grouped field set for every row of a list: plan it once. The
        # set is kept with its plan, so its id cannot be reused while the plan is cached.
        plans: dict[int, tuple[GroupedFieldSet, _Plan | None]]
        plans = self.__dict__.setdefault("_plans", {})
        cached = plans.get(id(fields))
        if cached is None:
            cached = (fields, self._kept_plan(parent, fields))
            plans[id(fields)] = cached
        return cached[1]

    def _kept_plan(self, parent: GraphQLObjectType, fields: GroupedFieldSet) -> _Plan | None:
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
        role: Role = self.context_value.principal.role
        key = (parent, role, *map(id, nodes))
        kept = _LEAF_PLANS.get(key)
        if kept is not None:
            return kept[1]
        plan = self._build_plan(parent, fields)
        if plan is not None and all(_is_leaf(field.value) for field in plan):
            _LEAF_PLANS.put(key, (nodes, plan))
        return plan

    def _build_plan(self, parent: GraphQLObjectType, fields: GroupedFieldSet) -> _Plan | None:
        plan = []
        for key, details in fields.items():
            if any(
                d.defer_usage or d.fragment_variable_values or d.node.arguments for d in details
            ):
                return None
            name = details[0].node.name.value
            if name == "__typename":
                typename = _Value(True, str, None, None, passes_str=True)
                plan.append(_Field(key, _constant(parent.name), None, typename))
                continue
            definition = parent.fields.get(name)
            if definition is None:
                return None
            read = getattr(definition.resolve, "read", None)
            computed = getattr(definition.resolve, "computed", None)
            attribute = None
            settled_by_role = getattr(definition.resolve, "settled_by_role", None)
            if settled_by_role is not None and settled_by_role(self.context_value):
                # A plan lives for one request, so one caller: no rule to apply per row.
                read, attribute = None, definition.resolve.attribute
            elif read is None and computed is None:
                if not getattr(definition.resolve, "_is_default", False):
                    return None
                attribute = definition.extensions["strawberry-definition"].python_name
            value = self._value(definition.type, details)
            if value is None:
                return None
            plan.append(_Field(key, read, attribute, value, computed))
        return tuple(plan)

    def _value(self, graphql_type: GraphQLOutputType, details: FieldDetailsList) -> _Value | None:
        non_null = is_non_null_type(graphql_type)
        inner = get_nullable_type(graphql_type)
        if isinstance(inner, GraphQLScalarType | GraphQLEnumType):
            return _leaf_value(inner, non_null)
        if isinstance(inner, GraphQLList):
            item = self._value(inner.of_type, details)
            return None if item is None else _Value(non_null, None, None, item)
        if isinstance(inner, GraphQLObjectType) and inner.is_type_of is None:
            sub_fields, new_defer_usages, *_ = self.collect_subfields(inner, details)
            if new_defer_usages:
                return None
            plan = self._plan(inner, sub_fields)
            return None if plan is None else _Value(non_null, None, plan, None)
        return None  # interfaces and unions resolve their type: the general path does that
