"""Plans, and the functions generated from them that complete a whole object in one pass.

graphql-core completes every field of every row on its own: a path, a resolve info, the
resolver, then the value's completion. A plan says how to complete the fields of an object
that reads only plain data; `compile_plan` turns it into one function with no call per field
beyond reading and serializing it (graphql-jit's approach). The generated code does what the
general path does with nulls, serializers' refusals and odd lists by raising `Irregular`, and
turns any exception of what it calls (a resolver, a rule, a serializer, an attribute read)
into `Irregular` too: the general path then redoes that object and reports. Anything else
that escapes is the plan's own failure (see schema.fast.executor).
"""

import enum
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, cast

from graphql import GraphQLEnumType, GraphQLID, GraphQLScalarType, GraphQLString
from graphql.pyutils import Undefined
from sqlalchemy.engine import Row
from strawberry.types.field import StrawberryField

Reader = Callable[[Any, Any], Any]
"""Reads a field off (source, context)."""
Admits = Callable[[Any, Any], bool]
"""Whether a type-field rule lets the caller (in the context) read the field of this source."""


class Irregular(Exception):
    """This object needs graphql-core's general path."""


class Value(NamedTuple):
    """How to complete one value: a leaf's serializer, or an object's plan; and its nullness."""

    non_null: bool
    serialize: Callable[[Any], Any] | None
    plan: "Plan | None"
    item: "Value | None"  # set for lists
    passes_str: bool = False
    """The serializer returns a str as it is (String and ID): no call needed for one."""
    int_to_str: bool = False
    """The serializer returns an int as its decimal string (ID)."""
    members: "tuple[type, tuple[tuple[Any, str], ...]] | None" = None
    """An enum's Python class and the name the serializer gives each of its members."""


class PlannedField(NamedTuple):
    key: str
    read: Reader | None
    """Reads the field off (source, context); None to read `attribute` of the source."""
    attribute: str | None
    value: Value
    computed: Callable[[Any], Any] | None = None
    """A resolver of the source alone (see source_function), called with it."""
    admits: Admits | None = None
    """A type-field rule the caller's role does not settle, checked on each source before
    `attribute` is read: a refusal is the general path's to report."""


Completion = Callable[[Any, Any], dict[str, Any]]

# Hashable all the way down (readers and serializers compare by identity), so that a plan
# is its own cache key: each distinct plan is compiled once per process.
Plan = tuple[PlannedField, ...]


@functools.cache
def constant(value: str) -> Reader:
    return lambda _source, _context: value


def is_leaf(value: Value) -> bool:
    return value.plan is None and (value.item is None or is_leaf(value.item))


@functools.lru_cache(maxsize=1024)
def compile_plan(plan: Plan, row_positions: tuple[int, ...] | None = None) -> Completion:
    """The completion of an object by `plan`; with `row_positions`, of a database Row that
    holds the plan's attributes at those positions."""
    namespace: dict[str, Any] = {"Irregular": Irregular, "Undefined": Undefined, "Row": Row}
    lines = ["def complete(source, context):"]
    attributes = tuple(
        cast(str, f.attribute) for f in plan if f.read is None and f.computed is None
    )
    if row_positions is None and attributes:
        namespace["layouts"] = RowLayouts(plan, attributes)
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
        if field.admits is not None:
            namespace[f"admits{index}"] = field.admits
            lines += [f"    if not admits{index}(source, context):", "        raise Irregular"]
        if field.computed is not None:
            namespace[f"computed{index}"] = field.computed
            read = f"computed{index}(source)"
        elif field.read is None and row_positions is not None:
            read = f"source[{next(positions)}]"
        elif field.read is None:
            read = f"source.{field.attribute}"
        else:
            namespace[f"read{index}"] = field.read
            read = f"read{index}(source, context)"
        # What is read is the data's, and so is an exception reading it: the general path's to
        # report. A try costs nothing until something raises.
        lines += [
            "    try:",
            f"        {raw} = {read}",
            "    except Exception:",
            "        raise Irregular from None",
        ]
        lines.extend("    " + line for line in _value_lines(field.value, raw, out, namespace))
        outputs.append(f"{field.key!r}: {out}")
    lines.append("    return {" + ", ".join(outputs) + "}")
    exec("\n".join(lines), namespace)  # noqa: S102 - names and keys are GraphQL names
    complete: Completion = namespace["complete"]
    return complete


# A Row read by name goes through SQLAlchemy's __getattr__; by position it does not.
class RowLayouts:
    """A plan's completions for database rows, one per row layout. SQLAlchemy gives every row
    of a cached statement's results the same map of names to positions, request after request."""

    KEPT = 8

    def __init__(self, plan: Plan, attributes: tuple[str, ...]) -> None:
        self._plan, self._attributes = plan, attributes
        # Each entry holds its map, so that no other map can take its id meanwhile.
        self._by_layout: dict[int, tuple[Any, Completion | None]] = {}

    def complete_for(self, row: Row[Any]) -> Completion | None:
        """The completion of rows laid out as this one, reading by position; None when the row
        does not hold each of the plan's attributes exactly once."""
        layout = row._key_to_index
        kept = self._by_layout.get(id(layout))
        if kept is None:
            kept = (layout, self._compile_for(layout))
            if len(self._by_layout) < self.KEPT:
                self._by_layout[id(layout)] = kept
        return kept[1]

    def _compile_for(self, layout: Mapping[Any, Any]) -> Completion | None:
        positions = tuple(layout.get(attribute) for attribute in self._attributes)
        if not all(position.__class__ is int for position in positions):
            return None  # a name the row lacks, or holds twice: read by name, as before
        return compile_plan(self._plan, cast(tuple[int, ...], positions))


def _value_lines(value: Value, raw: str, out: str, namespace: dict[str, Any]) -> list[str]:
    name = f"{out}_{len(namespace)}"
    lines = [f"if {raw} is None:"]
    lines.append("    raise Irregular" if value.non_null else f"    {out} = None")
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
            "    try:",
            f"        {out} = serialize_{name}({raw})",
            "    except Exception:",
            "        raise Irregular from None",
            f"    if {out} is None or {out} is Undefined:",
            "        raise Irregular",
        ]
    elif value.item is not None:
        namespace[f"item_{name}"] = _item_completer(value.item)
        lines += [
            f"elif {raw}.__class__ is not list and (",
            f"    isinstance({raw}, str | bytes | dict) or not isinstance({raw}, Iterable)",
            "):",
            "    raise Irregular",
            "else:",
            f"    {out} = [item_{name}(item, context) for item in {raw}]",
        ]
        namespace["Iterable"] = Iterable
    else:
        assert value.plan is not None
        namespace[f"object_{name}"] = compile_plan(value.plan)
        lines += ["else:", f"    {out} = object_{name}({raw}, context)"]
    return lines


def _item_completer(value: Value) -> Callable[[Any, Any], Any]:
    namespace: dict[str, Any] = {"Irregular": Irregular, "Undefined": Undefined}
    lines = ["def complete(raw, context):"]
    lines.extend("    " + line for line in _value_lines(value, "raw", "out", namespace))
    lines.append("    return out")
    exec("\n".join(lines), namespace)  # noqa: S102 - no names from the document
    complete: Callable[[Any, Any], Any] = namespace["complete"]
    return complete


def source_function(field: StrawberryField | None) -> Callable[[Any], Any] | None:
    """The function to call on the source for a field computed from its source alone (a
    resolver that takes nothing but the source: no arguments, no info, not async, no field
    extensions), so that it is completed in the one pass; None for any other field."""
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
def leaf_value(leaf: GraphQLScalarType | GraphQLEnumType, non_null: bool) -> Value:
    """How to complete a scalar or enum: it depends on its type alone."""
    return Value(
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
