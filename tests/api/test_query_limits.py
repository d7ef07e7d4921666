"""Hostile documents are refused, with their own code, before validation or execution and
without a single SQL statement."""

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from graphql import get_introspection_query
from sqlalchemy import Engine

from tests.api.test_sql_budget import statements
from tests.graphql import gql


def nested(levels: int) -> str:
    return "{ " + "a { " * (levels - 1) + "b" + " }" * levels


def aliases(count: int) -> str:
    return "{ " + " ".join(f"a{i}: __typename" for i in range(count)) + " }"


@pytest.fixture
def no_sql(engine: Engine) -> Iterator[list[str]]:
    with statements(engine) as seen:
        yield seen
    assert seen == []


def refused(client: FlaskClient, query: str, **variables: Any) -> dict[str, Any]:
    body = gql(client, query, expect_errors=True, **variables)
    [error] = body["errors"]
    assert body["data"] is None
    result: dict[str, Any] = error
    return result


@pytest.mark.parametrize("levels", [11, 50])
def test_deep_documents(client: FlaskClient, no_sql: list[str], levels: int) -> None:
    error = refused(client, nested(levels))
    assert error["extensions"]["code"] == "QUERY_TOO_DEEP"
    assert error["message"] == f"The query is {levels} levels deep; the limit is 10."


def test_ten_levels_pass_the_depth_limit(client: FlaskClient) -> None:
    # It still fails validation (the fields do not exist), which is the next step.
    error = refused(client, nested(10))
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def test_aliases(client: FlaskClient, no_sql: list[str]) -> None:
    assert gql(client, aliases(15))["data"]["a14"] == "Query"
    error = refused(client, aliases(16))
    assert error["extensions"]["code"] == "TOO_MANY_ALIASES"
    assert error["message"] == "The query has 16 aliases; the limit is 15."


def test_aliases_hidden_in_fragments_are_counted(client: FlaskClient, no_sql: list[str]) -> None:
    # CVE-2026-47707: Strawberry's limiter once skipped fragments. Each spread counts.
    fragment = "fragment F on Query { " + " ".join(f"f{i}: __typename" for i in range(6)) + " }"
    nested_fragment = "fragment G on Query { ...F g: __typename }"
    within = "{ ...F ... on Query { ...G } }\n" + fragment + "\n" + nested_fragment
    assert gql(client, within)["data"]["g"] == "Query"  # 6 + 7 = 13 aliases
    three_times = (
        "{ ...F ...G x: __typename ... on Query { ...F } }\n" + fragment + "\n" + nested_fragment
    )
    assert refused(client, three_times)["message"] == "The query has 20 aliases; the limit is 15."


def test_fragment_cycles_do_not_hang(client: FlaskClient) -> None:
    cyclic = "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }"
    error = refused(client, cyclic)
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "Cannot spread fragment" in error["message"]


@pytest.mark.parametrize("count", [9, 20])
def test_directives(client: FlaskClient, no_sql: list[str], count: int) -> None:
    query = "{ __typename " + "@include(if: true) " * count + "}"
    error = refused(client, query)
    assert error["extensions"]["code"] == "TOO_MANY_DIRECTIVES"


def test_tokens(client: FlaskClient, no_sql: list[str]) -> None:
    query = "{ " + "__typename " * 2100 + "}"
    error = refused(client, query)
    assert error["extensions"]["code"] == "TOO_MANY_TOKENS"
    assert "2000 tokens" in error["message"]


ALL_FIELDS = (
    "totalCount pageInfo { hasNextPage endCursor } "
    "edges { cursor node { id name email role createdAt updatedAt } }"
)


def page(alias: str, arguments: str = "") -> str:
    return f"{alias}: users{arguments} {{ {ALL_FIELDS} }}"


def test_a_full_page_of_users_is_within_the_cost_limit(admin_client: FlaskClient) -> None:
    body = gql(admin_client, "{ " + page("all", "(first: 100)") + " }")
    assert body["data"]["all"]["totalCount"] == 1


def test_two_full_pages_are_too_costly(client: FlaskClient, no_sql: list[str]) -> None:
    query = "{ " + page("a", "(first: 100)") + " " + page("b", "(first: 100)") + " }"
    assert refused(client, query) == {
        "message": "The query costs 2602; the limit is 2000.",
        "extensions": {"code": "QUERY_TOO_COMPLEX"},
    }


def test_cost_reads_first_from_variables_and_defaults(
    client: FlaskClient, no_sql: list[str]
) -> None:
    both = "query($n: Int) { " + page("a", "(first: $n)") + " " + page("b", "(first: $n)") + " }"
    assert refused(client, both, n=100)["message"] == "The query costs 2602; the limit is 2000."
    # Without a value `first` costs its default, 20: 1 + 100 * 13 + 1 + 20 * 13 = 1562, so this
    # one passes the limits and reaches the permission check instead.
    defaulted = "query($n: Int) { " + page("a", "(first: $n)") + " " + page("b") + " }"
    body = gql(client, defaulted, expect_errors=True, n=100)
    assert {e["extensions"]["code"] for e in body["errors"]} == {"UNAUTHENTICATED"}


def test_each_request_s_variables_decide_the_cost_of_the_same_document(
    admin_client: FlaskClient,
) -> None:
    both = "query($n: Int) { " + page("a", "(first: $n)") + " " + page("b", "(first: $n)") + " }"
    assert gql(admin_client, both, n=1)["data"]["a"]["totalCount"] == 1
    assert refused(admin_client, both, n=100)["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert gql(admin_client, both, n=2)["data"]["b"]["totalCount"] == 1


def test_the_standard_introspection_query_passes_every_limit(admin_client: FlaskClient) -> None:
    body = gql(admin_client, get_introspection_query(descriptions=True))
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"


def test_runaway_introspection_is_refused(admin_client: FlaskClient) -> None:
    loop = "{ __schema { types { " + "fields { type { " * 8 + "name" + " } }" * 8 + " } } }"
    error = refused(admin_client, loop)
    assert error["extensions"]["code"] == "QUERY_TOO_DEEP"
    assert error["message"].startswith("The introspection query is 19 levels deep")
