"""The fast path: every use of graphql-core's, Strawberry's and SQLAlchemy's internals in one
place, behind `FastSchema`, which only the schema's builder (schema.root) uses.

What it relies on, verified on strawberry-graphql 0.341.2, graphql-core 3.3.2 and
SQLAlchemy 2.1.9 (pyproject pins the first two to what was verified; tests/unit/
test_dependency_pins.py says when the installed versions leave that range):

- graphql-core's undocumented `ExecutionContext.execute_fields(parent_type, source_value,
  path, grouped_field_set, position_context)`, overridden, and `collect_subfields`, with
  `graphql.execution.collect_fields`' `GroupedFieldSet` and `FieldDetails` (`node`,
  `defer_usage`, `fragment_variable_values`); `MiddlewareManager.middlewares`.
- Strawberry's `strawberry.schema.schema.StrawberryGraphQLCoreExecutionContext` (the base
  executor), `Schema._schema` (the graphql-core schema, which Strawberry names only
  privately), `Schema.create_extensions_runner`, `strawberry.extensions.context`'s hook
  managers and `WrappedHook`, `strawberry.extensions.runner.SchemaExtensionsRunner`, the
  `strawberry-definition` key of graphql-core fields' extensions, `is_default_resolver`,
  `StrawberryResolver`'s parameters, enums' `wrapped_cls`, and `Info._raw_info`.
- SQLAlchemy's `Row._key_to_index`, a row's map of names to positions.

A plan that fails (not an object the general path must redo: the plan itself) is answered
by the general path, counted in `fallbacks` and logged once per plan at WARNING on the
`schema.fast` logger.
"""

from schema.fast.completion import (
    Irregular,
    Plan,
    PlannedField,
    RowLayouts,
    Value,
    compile_plan,
    leaf_value,
    source_function,
)
from schema.fast.executor import (
    FastExecutionContext,
    FieldFacts,
    RuledField,
    fallbacks,
    forget_kept_plans,
)
from schema.fast.hooks import KeptHooksRunner
from schema.fast.schema import FastSchema, FieldNodesInfo, graphql_schema

__all__ = [
    "FastExecutionContext",
    "FastSchema",
    "FieldFacts",
    "FieldNodesInfo",
    "Irregular",
    "KeptHooksRunner",
    "Plan",
    "PlannedField",
    "RowLayouts",
    "RuledField",
    "Value",
    "compile_plan",
    "fallbacks",
    "forget_kept_plans",
    "graphql_schema",
    "leaf_value",
    "source_function",
]
