"""Database rows are completed by position when their layout allows, by name otherwise, with the
same result either way."""

from typing import Any

import pytest
from graphql import GraphQLInt, GraphQLString
from sqlalchemy import Engine, create_engine, text

from schema.fast import Irregular, Plan, PlannedField, RowLayouts, compile_plan, leaf_value

PLAN: Plan = (
    PlannedField("name", None, "name", leaf_value(GraphQLString, True)),
    PlannedField("n", None, "n", leaf_value(GraphQLInt, True)),
)


@pytest.fixture
def engine() -> Engine:
    return create_engine("sqlite://")


def _row(engine: Engine, select: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(text(select)).one()


def test_a_row_with_the_plan_s_names_is_read_by_position(engine: Engine) -> None:
    row = _row(engine, "SELECT 7 AS n, 'ada' AS name")
    layouts = RowLayouts(PLAN, ("name", "n"))

    by_position = layouts.complete_for(row)

    assert by_position is not None
    assert by_position is layouts.complete_for(_row(engine, "SELECT 8 AS n, 'bob' AS name"))
    assert by_position(row, None) == {"name": "ada", "n": 7} == compile_plan(PLAN)(row, None)


def test_a_row_without_one_of_the_names_is_read_by_name(engine: Engine) -> None:
    row = _row(engine, "SELECT 7 AS n, 'ada' AS nickname")

    assert RowLayouts(PLAN, ("name", "n")).complete_for(row) is None
    with pytest.raises(Irregular):
        compile_plan(PLAN)(row, None)  # the general path then reports it


def test_layouts_beyond_those_kept_are_still_read_by_position(engine: Engine) -> None:
    layouts = RowLayouts(PLAN, ("name", "n"))
    rows = [
        _row(engine, f"SELECT {index} AS n, 'x' AS name, {index} AS extra{index}")
        for index in range(RowLayouts.KEPT + 2)
    ]

    completions = [layouts.complete_for(row) for row in rows]

    assert all(completion is not None for completion in completions)
    assert [c(row, None)["n"] for c, row in zip(completions, rows, strict=True) if c] == list(
        range(RowLayouts.KEPT + 2)
    )
