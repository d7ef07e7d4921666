"""A faster way to complete plain subtrees of a result.

graphql-core completes every field of every row on its own: a path, a resolve info, the
resolver, then the value's completion, about 120 calls per row of five scalars. When a selection
reads only plain data (leaves, objects and lists whose fields are attributes of the source or
type-field rule readers, with no arguments, no @defer and no abstract types), this plans it once
per request and completes each object in one pass. On anything irregular (an exception, a null
in a non-null place, a value that does not serialise) that object goes back to graphql-core,
which produces the very same result and errors the general way.
tests/api/test_differential.py holds the two paths to the same bytes.
"""

from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any, NamedTuple

from graphql import (
    GraphQLEnumType,
    GraphQLList,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    get_nullable_type,
    is_non_null_type,
)
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.pyutils import Path, Undefined
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

Reader = Callable[[Any, Any], Any]


class _Irregular(Exception):
    """This subtree needs graphql-core's general path."""


class _Value(NamedTuple):
    """How to complete one value: a leaf's serializer, or an object's plan; and its nullness."""

    non_null: bool
    serialize: Callable[[Any], Any] | None
    plan: "list[_Field] | None"
    item: "_Value | None"  # set for lists


class _Field(NamedTuple):
    key: str
    read: Reader
    value: _Value


def _constant(value: str) -> Reader:
    return lambda _source, _context: value


def _from_source(attribute: Callable[[Any], Any]) -> Reader:
    return lambda source, _context: attribute(source)


def _complete_value(value: _Value, raw: Any, context: Any) -> Any:
    if raw is None:
        if value.non_null:
            raise _Irregular
        return None
    if value.serialize is not None:
        serialized = value.serialize(raw)
        if serialized is None or serialized is Undefined:
            raise _Irregular
        return serialized
    if value.item is not None:
        if isinstance(raw, str | bytes | dict) or not isinstance(raw, Iterable):
            raise _Irregular
        return [_complete_value(value.item, item, context) for item in raw]
    assert value.plan is not None
    return _complete_object(value.plan, raw, context)


def _complete_object(plan: list["_Field"], source: Any, context: Any) -> dict[str, Any]:
    return {
        key: _complete_value(value, read(source, context), context) for key, read, value in plan
    }


class LeafExecutor(StrawberryGraphQLCoreExecutionContext):
    # The differential test turns this off to compare with the general path.
    enabled = True

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
                    return _complete_object(plan, source_value, self.context_value)
                except Exception:  # noqa: BLE001, S110 - the general path redoes it and reports
                    pass
        return super().execute_fields(
            parent_type, source_value, path, grouped_field_set, position_context
        )

    def _plan(self, parent: GraphQLObjectType, fields: GroupedFieldSet) -> list[_Field] | None:
        # graphql-core reuses one grouped field set for every row of a list: plan it once. The
        # set is kept with its plan, so its id cannot be reused while the plan is cached.
        plans: dict[int, tuple[GroupedFieldSet, list[_Field] | None]]
        plans = self.__dict__.setdefault("_plans", {})
        cached = plans.get(id(fields))
        if cached is None:
            cached = (fields, self._build_plan(parent, fields))
            plans[id(fields)] = cached
        return cached[1]

    def _build_plan(
        self, parent: GraphQLObjectType, fields: GroupedFieldSet
    ) -> list[_Field] | None:
        plan = []
        for key, details in fields.items():
            if any(
                d.defer_usage or d.fragment_variable_values or d.node.arguments for d in details
            ):
                return None
            name = details[0].node.name.value
            if name == "__typename":
                plan.append(_Field(key, _constant(parent.name), _Value(True, str, None, None)))
                continue
            definition = parent.fields.get(name)
            if definition is None:
                return None
            read = getattr(definition.resolve, "read", None)
            if read is None:
                if not getattr(definition.resolve, "_is_default", False):
                    return None
                python_name = definition.extensions["strawberry-definition"].python_name
                read = _from_source(attrgetter(python_name))
            value = self._value(definition.type, details)
            if value is None:
                return None
            plan.append(_Field(key, read, value))
        return plan

    def _value(self, graphql_type: GraphQLOutputType, details: FieldDetailsList) -> _Value | None:
        non_null = is_non_null_type(graphql_type)
        inner = get_nullable_type(graphql_type)
        if isinstance(inner, GraphQLScalarType | GraphQLEnumType):
            return _Value(non_null, inner.serialize, None, None)
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
